"""Vision-language models that answer a yes/no question about an image, for VQAScore (eval/vqa_scorer.py).

A model is a hub id (weights from the Hugging Face cache, or downloaded), a local folder in transformers'
layout (what `save_pretrained` writes), or `tiny`: a random-weight Qwen2.5-VL built in code, so the scoring
code runs offline in seconds (its answers measure nothing). Any model that transformers'
AutoModelForImageTextToText and AutoProcessor load, with a chat template, will do. Weights, processor and
answer token are found by `check()`, before any expensive work; the weights load on first use.

P(yes), as VQAScore computes it (Lin et al. 2024, and the t2v_metrics package for these models): the image
and the question go in as one user turn of the model's chat template, with the assistant's turn opened; the
next-token logits there go through a softmax over the whole vocabulary, and P(yes) is the probability of the
answer's token ("Yes"), as it follows the prompt when the template renders the assistant's answer (" Yes" after
Idefics3's `Assistant:`). Nothing is renormalised over yes and no, so a model that would answer something
else entirely gives a low P(yes).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from actionbench.errors import UserError, check_choice
from actionbench.hub import cache_only_note, offline_reason
from actionbench.models import DTYPES, looks_local

TINY = "tiny"
PROBE_QUESTION = "Is this so?"  # a question whose prompt finds the answer's token (any question's ends alike)
DTYPE_CHOICES = ("auto", *DTYPES)  # auto: bf16 on CUDA (what the models were trained in), fp32 elsewhere


class VisionLanguageModel:
    """A lazily loaded image-text-to-text model and its processor; `key` names its config entry in messages."""

    def __init__(self, model: str, revision: str | None = None, dtype: str = "auto", key: str = "scorer.model",
                 seed: int = 0):
        check_choice(f"{key.rsplit('.', 1)[0]}.dtype", dtype, DTYPE_CHOICES)
        self.model, self.revision, self.dtype, self.key, self.seed = str(model), revision, dtype, key, seed
        self._folder: Path | None = None
        self._processor = None
        self._models: dict[str, torch.nn.Module] = {}

    @property
    def random_weights(self) -> bool:
        return self.model == TINY

    def describe(self) -> dict:
        """What judged: the model as configured and, once found, its folder (a hub snapshot's names its commit)."""
        return {"model": self.model, "revision": self.revision, "dtype": self.dtype,
                "weights": None if self._folder is None else str(self._folder)}

    def check(self) -> None:
        """Find the model's files and load its processor now, or fail with one message naming the model."""
        if self._processor is not None:
            return
        if self.random_weights:
            self._processor = tiny_processor()
            return
        self._folder = self._find()
        from transformers import AutoConfig, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        def unreadable(err: Exception) -> UserError:
            return UserError(f"{self.key}={self.model!r} could not be read as a transformers model: "
                             f"{str(err).splitlines()[0]}")

        try:
            config = AutoConfig.from_pretrained(self._folder)
        except (OSError, ValueError, KeyError) as err:
            raise unreadable(err) from err
        if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise UserError(f"{self.key}={self.model!r} is a {config.model_type!r} model, not one that "
                            "AutoModelForImageTextToText loads (a vision-language model such as Qwen2.5-VL, "
                            "LLaVA, Idefics3, Gemma 3)")
        try:
            processor = AutoProcessor.from_pretrained(self._folder)
        except (OSError, ValueError, KeyError) as err:
            raise unreadable(err) from err
        if not getattr(processor, "chat_template", None) or not hasattr(processor, "tokenizer"):
            raise UserError(f"{self.key}={self.model!r}: its processor has no chat template (or no tokenizer); "
                            "VQAScore asks the question as a user turn of the model's chat template, so use "
                            "an instruction-tuned (chat) model")
        self._processor = processor

    def _find(self) -> Path:
        """The model's folder: a local one as given, a hub id's snapshot from the cache or the hub."""
        if looks_local(self.model):
            folder = Path(self.model).expanduser()
            if not folder.is_dir():
                raise UserError(f"{self.key}={self.model!r}: no such folder")
            if not (folder / "config.json").is_file():
                raise UserError(f"{self.key}={self.model!r}: not a transformers model folder (no config.json); "
                                "a model's save_pretrained writes one")
            return folder
        from huggingface_hub import snapshot_download

        offline = offline_reason()
        try:
            return Path(snapshot_download(self.model, revision=self.revision, local_files_only=offline is not None))
        except Exception as err:  # hub and network errors come in many types; all mean "weights not here"
            raise UserError(f"{self.key}={self.model!r}: the model could not be found{cache_only_note(offline)}: "
                            f"{str(err).splitlines()[0]}\n"
                            "Put it in the Hugging Face cache (HF_HOME), or give a local folder (its "
                            "save_pretrained), or scorer.model=tiny for a random-weight smoke test.") from err

    @property
    def processor(self):
        self.check()
        return self._processor

    def answer_token(self, answer: str) -> int:
        """The answer's token id, the one whose probability is P(yes): the first token after the prompt's in the
        encoding of the prompt followed by the answer as the chat template renders the assistant's turn. Encoded
        in context, since a token depends on what precedes it: a template whose prompt ends in `Assistant:`
        (Idefics3, SmolVLM) renders the turn `Assistant: Yes`, answered with the token " Yes", not "Yes" alone.
        The answer must be one token there."""
        tokenizer = self.processor.tokenizer
        prompt = self.prompts([PROBE_QUESTION])[0]
        before = tokenizer.encode(prompt, add_special_tokens=False)
        ids = tokenizer.encode(prompt + self.spoken(answer, prompt), add_special_tokens=False)
        if len(ids) != len(before) + 1 or ids[:len(before)] != before:
            pieces = tokenizer.convert_ids_to_tokens(ids[len(before):])
            raise UserError(f"{self.key.rsplit('.', 1)[0]}.answer={answer!r} is {len(ids) - len(before)} tokens after "
                            f"{self.model}'s prompt ({pieces}); P(yes) is read from one next token, so give an answer "
                            "that is one token (e.g. Yes)")
        return ids[-1]

    def spoken(self, answer: str, prompt: str) -> str:
        """The answer as the chat template renders the assistant's turn after `prompt`: with the whitespace it puts
        before the answer (`Assistant:` + " Yes"); the answer alone where the turn is not rendered so."""
        turn = self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROBE_QUESTION}]},
             {"role": "assistant", "content": [{"type": "text", "text": answer}]}], tokenize=False)
        after = turn[len(prompt):] if turn.startswith(prompt) else ""
        space = after[:len(after) - len(after.lstrip())]
        return space + answer if after.lstrip().startswith(answer) else answer

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]

    def load(self, device: torch.device):
        """The model, frozen in eval mode on `device`, loaded once per device."""
        key = str(device)
        if key not in self._models:
            self.check()
            dtype = self.torch_dtype(device)
            if self.random_weights:
                model = tiny_model(self._processor.tokenizer, self.seed).to(dtype)
            else:
                from transformers import AutoModelForImageTextToText

                try:
                    model = AutoModelForImageTextToText.from_pretrained(self._folder, dtype=dtype)
                except (OSError, ValueError) as err:
                    raise UserError(f"{self.key}={self.model!r}: its weights could not be loaded: "
                                    f"{str(err).splitlines()[0]}") from err
            self._models[key] = model.to(device).eval().requires_grad_(False)
        return self._models[key]

    def prompts(self, questions: list[str]) -> list[str]:
        """Each question as one user turn (the image, then the text) with the assistant's turn opened."""
        return [self.processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
                    add_generation_prompt=True, tokenize=False)
                for question in questions]

    def inputs(self, images: list, questions: list[str]):
        """The processor's batch of (image, question) prompts, padded on the left so every one ends at the last
        position. The tokenizer adds no BOS of its own where the template renders one (Gemma 3's): never two."""
        processor, prompts = self.processor, self.prompts(questions)
        bos = processor.tokenizer.bos_token
        rendered = bool(bos) and all(prompt.startswith(bos) for prompt in prompts)
        processor.tokenizer.padding_side = "left"
        return processor(images=list(images), text=prompts, padding=True, return_tensors="pt",
                         add_special_tokens=not rendered)

    @torch.no_grad()
    def next_token_logits(self, images: list, questions: list[str], device: torch.device) -> torch.Tensor:
        """(n, vocabulary) logits of the token that would come next after each (image, question), in one batch."""
        model = self.load(device)
        inputs = self.inputs(images, questions).to(device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        return model(**inputs, **keep).logits[:, -1].float()

    def p_yes(self, images: list, questions: list[str], answer: str, device: torch.device,
              batch_size: int = 8) -> list[float]:
        """P(answer) for each (image, question): the softmax over the whole vocabulary of the next-token logits,
        at the answer's token; `batch_size` pairs per forward pass."""
        if len(images) != len(questions):
            raise ValueError("one question per image")
        token = self.answer_token(answer)
        probabilities = []
        for start in range(0, len(images), batch_size):
            logits = self.next_token_logits(images[start:start + batch_size], questions[start:start + batch_size], device)
            probabilities += logits.softmax(dim=-1)[:, token].tolist()
        return probabilities


# The tiny model: Qwen2.5-VL's architecture (the default scorer's family) at toy size, over a byte-level BPE
# tokenizer built here, whose few merges make "Yes" and "No" one token each, as they are for real models.
TINY_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
TINY_MERGES = (("Y", "e"), ("Ye", "s"), ("N", "o"), ("Ġ", "Yes"), ("Ġ", "No"))
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_processor():
    """A Qwen2.5-VL processor: its image processor with images resized to 56-112 px (4-16 merged patches), a
    byte-level BPE tokenizer of 268 tokens with Qwen's special tokens, and a chat template of Qwen's form."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for first, second in TINY_MERGES:
        vocab[first + second] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(TINY_MERGES)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(TINY_SPECIAL))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    sizes = {"min_pixels": 56 * 56, "max_pixels": 112 * 112, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tokenizer,
                               video_processor=Qwen2VLVideoProcessor(**sizes), chat_template=TINY_CHAT_TEMPLATE)


def tiny_model(tokenizer, seed: int = 0):
    """A random-weight Qwen2.5-VL (2 vision blocks of width 16, 2 text layers of width 32; 66k parameters),
    the same for the same seed. Weights drawn wider than Qwen's init, so its answers vary from image to image."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in TINY_SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "initializer_range": 0.5,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 28, "out_hidden_size": 32,
                       "fullatt_block_indexes": [1], "initializer_range": 0.5},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen2_5_VLForConditionalGeneration(config)
