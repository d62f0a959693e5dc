"""TwinAct (Lin et al., NeurIPS 2024): the action's tokens can only be points of a *common action space*,
imitated from the exemplars, then a LoRA generation stage with an action-similarity loss (docs/methods.md).

1. Common action space (cached per model): the shipped phrase list (`methods/data/action_phrases.txt`, plus
   `extra_phrases`), filtered to the phrases the base model can draw; each phrase's token embeddings from
   the model's own embedding table, pooled into `num_tokens` groups; PCA per token position gives a mean
   and `num_bases` orthonormal bases.
2. Imitation (stage 1): a frozen action encoder gives one feature per exemplar. By default (`action_encoder.kind=
   pose`, the reference's) each exemplar's pose map (the manifest's `pose:`, else OpenPose's reading of the image)
   squashed to the model's square, in [-1, 1], through an openpose ControlNet's conditioning embedding, averaged
   over space (`PoseEncoder`: 320 features for SD's ControlNets); with `kind=clip` an open_clip model's image
   embedding (OpenAI CLIP ViT-L/14 by default, never the run's scorer). One MLP per token
   (Linear -> GELU -> L2-normalise -> Linear, Xavier init, as the reference) maps them to coefficients over
   that token's bases; the token is mean + coefficients @ bases, so it lies in the action space by
   construction. How exemplars combine: the released code reads one precomputed feature per *action*
   (`action_features.pt`, (1, 320) per action name; the code that makes it from the exemplars is not released,
   its per-image function pools one map). Here `imitation=per_action` (default) feeds the MLP the mean of the
   exemplars' features, so training uses the very tokens generation uses; `per_exemplar` reads each sample's
   own exemplar (its mirror image's feature when mirrored) and generates with the mean coefficients.
   Only the MLPs train.
3. Generation (stage 2): LoRA on the UNet (rank 8) and the MLPs train. In both stages the loss is the noise
   prediction loss plus `similarity_weight` x (1 - cosine) between the image encoder's features of the decoded
   predicted clean image x̂0 and of the sample's exemplar (the very pixels it trains on: cropped and mirrored
   alike), switched on after `similarity_start` of each stage's steps, as the reference's single loop does
   (`similarity_stages=second`: stage 2 only), for samples with timestep above `similarity_min_timestep` x T.
   The features (`similarity_features=pooled`, the reference's) are the vision tower's pooled output before its
   projection, of [-1, 1] pixels resized to its input size (224 for ViT-L/14) without CLIP's normalisation;
   `projected` takes open_clip's image embedding instead. Gradients are clipped to norm `max_grad_norm`. The token
   path (MLP, text encoder) stays fp32 under `dtype=fp16|bf16`. With `kind=pose` the similarity loss keeps the
   image encoder, as the reference computes it with CLIP ViT-L/14 beside its pose encoder.
Exemplar images are prepared as the reference's (`preprocess=random_crop`: short side resized, a random square of
the long side at every draw); the pose maps as its pose path (squashed whole, `action_encoder.preprocess`).

Remaining deviations from the reference, with the reason:
- The pose encoder reads the manifest's `pose:` maps where they exist (the detector only for the rest) [ours].
- Mirrored exemplars (`flip_p` > 0) only with `kind=clip`: OpenPose's colours tell left limbs from right ones,
  so a flipped map is not the mirrored image's (the world's maps, which keep a limb's colour under its mirror,
  would need no swap: no one rule serves both) [ours].
- The reference decodes the raw noise prediction as if it were a latent; we decode x̂0 (its quirk is a bug).
- How a phrase becomes `num_tokens` vectors (contiguous slices of its tokens, averaged) and the drawability
  filter are ours: the paper is silent. Tokens are mean + c @ bases, starting at the initial word's
  projection onto the space (the reference adds c @ bases to the initial word's own embedding, which keeps
  that word's off-space part).
- Steps, not epochs: 250 + 750 steps of batch 4 x 2 for the reference's 200 + 600 epochs of ~10 images.
- Base model: SD 2.1 / the world model, not SDXL (num_bases capped by the text width and the phrases kept).
Defaults that are ours: the phrase filter (`phrase_filter`, `filter_*`), the step counts above, `flip_p` 0, bicubic
resampling; the rest (the pose encoder, rank 8, lr 2e-4, batch 4 x 2, 512 bases, MLP 640 hidden, similarity
0.15 from 40% for t > 0.8T on pooled features, clipping at 1, per-action imitation) is the reference's.

Artifact: `learned_embeds.safetensors` (the tokens; `pipe.load_textual_inversion`), the LoRA in diffusers'
format (`pipe.load_lora_weights`), and `imitation.safetensors` (MLPs, the coefficients the MLP gave for its
inputs; in its metadata the action space's digest and sizes, and both encoders). While the run lasts,
`imitated.pt` keeps the stage-1 result, so a run killed in stage 2 does not redo stage 1.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from PIL import Image
from safetensors.torch import load_file, save

from actionbench.clip import OpenClip
from actionbench.errors import (
    UserError,
    check_choice,
    check_positive,
    check_probability,
)
from actionbench.files import write_atomic, write_json
from methods.base import ActionMethod
from methods.mechanics.latents import PREPROCESS, ExemplarLatents, image_tensor
from methods.mechanics.loop import Resume, optimise
from methods.mechanics.lora import add_unet_lora, save_unet_lora
from methods.mechanics.loss import denoising_prediction, predicted_clean_latents
from methods.mechanics.optim import adamw, mixed_precision
from methods.mechanics.pose import check_controlnet, check_pose_maps, pose_maps, read_controlnet
from methods.mechanics.prior import generate_to_files, model_cache
from methods.mechanics.tokens import (
    EmbeddingOverride,
    add_tokens,
    single_token_id,
    token_ids,
    vector_tokens,
)
from methods.textual_inversion import EMBEDS_FILE

PHRASES_FILE = Path(__file__).parent / "data" / "action_phrases.txt"
IMITATION_FILE = "imitation.safetensors"
IMITATED_FILE = "imitated.pt"  # the stage-1 result (MLP, random generators), kept until the run ends
IMITATION_CHOICES = ("per_action", "per_exemplar")
SIMILARITY_STAGES = ("both", "second")
# the reference's: OpenPose maps through control_v11p_sd15_openpose's conditioning embedding; OpenAI CLIP ViT-L/14
DEFAULT_ENCODER = {"kind": "pose", "model_name": "ViT-L-14", "pretrained": "openai",
                   "controlnet": "lllyasviel/control_v11p_sd15_openpose", "detector": "lllyasviel/Annotators"}
ENCODER_KEY = "method.action_encoder"
ENCODER_KINDS = ("pose", "clip")  # what the imitation MLP reads: the exemplars' pose maps, or the images' CLIP features
POSE_RANGES = {"signed": (-1.0, 1.0), "unit": (0.0, 1.0)}  # pose map pixels: the reference's [-1, 1], or [0, 1]
POSE_PREPROCESS = ("squash", "centre_crop")  # a pose map to the model's square: the reference's squash, or a crop
# the similarity loss's image features: the vision tower's pooled output before its projection on [-1, 1] pixels
# (the reference's), or open_clip's projected image embedding on CLIP-normalised pixels
SIMILARITY_FEATURES = ("pooled", "projected")
# drawable: the base model draws it (see `drawability`); vocabulary: every token of it occurs in `vocabulary`,
# the texts the model was trained on (a model too small to have met most words); none: keep every phrase.
PHRASE_FILTERS = ("drawable", "vocabulary", "none")


def read_phrases(path: str | Path) -> list[str]:
    """One phrase per line; blank lines and lines starting with '#' are skipped; duplicates dropped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"method.phrases={str(path)!r}: no such file (one action phrase per line)")
    lines = (line.strip() for line in path.read_text().splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def action_embedding_groups(tokenizer, table: torch.Tensor, phrases: list[str], num_tokens: int) -> torch.Tensor:
    """(phrases, num_tokens, width): each phrase's token embeddings cut into `num_tokens` contiguous slices,
    each slice averaged, so every word counts and every phrase gives the same shape (a phrase of fewer
    tokens repeats them)."""
    groups = []
    for phrase in phrases:
        ids = torch.tensor(tokenizer.encode(phrase, add_special_tokens=False), device=table.device)
        n = len(ids)
        slices = [(j * n // num_tokens, max(j * n // num_tokens + 1, (j + 1) * n // num_tokens)) for j in range(num_tokens)]
        groups.append(torch.stack([table[ids[a:b]].mean(0) for a, b in slices]))
    return torch.stack(groups).float()


def principal_bases(groups: torch.Tensor, num_bases: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA per token position: mean (tokens, width) and orthonormal bases (tokens, r, width), r = num_bases
    capped by the data's rank (phrases - 1) and the width."""
    phrases, tokens, width = groups.shape
    rank = min(num_bases, phrases - 1, width)
    if rank < 1:
        raise UserError(f"the action space needs at least 2 phrases; {phrases} passed the filter")
    mean = groups.mean(0)
    bases = torch.stack([torch.linalg.svd(groups[:, j] - mean[j], full_matrices=False)[2][:rank] for j in range(tokens)])
    return mean, bases


class L2Normalise(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)


class ImitationMLP(torch.nn.Module):
    """Exemplar features -> coefficients over each token's bases: one MLP per token, as the reference's
    (Linear -> GELU -> L2-normalise -> Linear; Xavier-uniform weights, zero biases)."""

    def __init__(self, features: int, hidden: int, tokens: int, bases: int):
        super().__init__()
        self.heads = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.GELU(), L2Normalise(),
                                torch.nn.Linear(hidden, bases))
            for _ in range(tokens))
        for layer in self.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(layer.weight)
                torch.nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features) for head in self.heads], dim=1)  # (batch, tokens, bases)


class PoseEncoder:
    """The reference's action encoder: each exemplar's pose map through an openpose ControlNet's conditioning
    embedding, averaged over space (320 features for SD's ControlNets), one feature per exemplar. It reads the map,
    never the image, so the exemplars' appearance cannot reach the tokens. Only the embedding is used, and it serves
    any base model (the reference reads SD 1.5's ControlNet beside SDXL). As the reference, the map is squashed to
    the model's square (`preprocess`) and enters in [-1, 1] (`pose_range`)."""

    def __init__(self, controlnet: str | None, detector: str | None, include_hand: bool = False,
                 pose_range: str = "signed", preprocess: str = "squash"):
        check_choice(f"{ENCODER_KEY}.pose_range", pose_range, list(POSE_RANGES))
        check_choice(f"{ENCODER_KEY}.preprocess", preprocess, POSE_PREPROCESS)
        self.controlnet, self.detector, self.include_hand = controlnet, detector, include_hand
        self.pose_range, self.preprocess = pose_range, preprocess

    def describe(self) -> dict:
        return {"kind": "pose", "controlnet": self.controlnet, "detector": self.detector,
                "include_hand": self.include_hand, "pose_range": self.pose_range, "preprocess": self.preprocess}

    def check(self, task) -> None:
        check_controlnet(self.controlnet, f"{ENCODER_KEY}.controlnet")
        check_pose_maps(task, self.detector, f"{ENCODER_KEY}.detector")

    @torch.no_grad()
    def encode(self, model, exemplars) -> torch.Tensor:
        """(exemplars, channels) fp32. The maps are the manifest's, or the detector's reading of the whole exemplar
        image. Never mirrored (TwinAct refuses flip_p > 0 with them): a flipped map is not the mirrored image's."""
        dtype = model.pipe.unet.dtype
        embedding = read_controlnet(self.controlnet, f"{ENCODER_KEY}.controlnet", dtype).controlnet_cond_embedding
        maps = pose_maps(exemplars, self.detector, f"{ENCODER_KEY}.detector", include_hand=self.include_hand)
        low, high = POSE_RANGES[self.pose_range]
        pixels = torch.stack([image_tensor(m, model.resolution, self.preprocess) for m in maps])  # in [-1, 1]
        pixels = low + (pixels + 1) / 2 * (high - low)
        return embedding.to(model.device)(pixels.to(model.device, dtype)).float().mean((2, 3))


class TwinAct(ActionMethod):
    def __init__(
        self,
        placeholder_token: str | None = None,
        num_tokens: int = 3,
        initializer_token: str = "action",
        phrases: str | None = None,
        extra_phrases: list[str] = (),
        phrase_filter: str = "drawable",
        vocabulary: list[str] = (),
        filter_prompt: str = "a photo of a person {phrase}",
        filter_margin: float = 0.0,
        filter_samples: int = 1,
        num_bases: int = 512,
        action_encoder: dict | None = None,
        mlp_hidden: int = 640,
        imitation_steps: int = 250,
        max_train_steps: int = 750,
        learning_rate: float = 2e-4,
        train_batch_size: int = 4,
        gradient_accumulation_steps: int = 2,
        rank: int = 8,
        similarity_weight: float = 0.15,
        similarity_start: float = 0.4,
        similarity_min_timestep: float = 0.8,
        similarity_stages: str = "both",
        imitation: str = "per_action",
        similarity_features: str = "pooled",
        preprocess: str = "random_crop",
        max_grad_norm: float = 1.0,
        flip_p: float = 0.0,
        use_8bit_adam: bool = False,
        cache_dir: str = "results/cache",
        log_every: int = 10,
    ):
        check_positive("method", num_tokens=num_tokens, filter_samples=filter_samples, num_bases=num_bases,
                       mlp_hidden=mlp_hidden, imitation_steps=imitation_steps, max_train_steps=max_train_steps,
                       learning_rate=learning_rate, train_batch_size=train_batch_size, rank=rank,
                       gradient_accumulation_steps=gradient_accumulation_steps, log_every=log_every)
        check_probability("method", similarity_start=similarity_start, similarity_min_timestep=similarity_min_timestep,
                          flip_p=flip_p)
        if similarity_weight < 0:
            raise UserError(f"method.similarity_weight={similarity_weight!r} must be >= 0 (0 switches the loss off)")
        check_choice("method.phrase_filter", phrase_filter, PHRASE_FILTERS)
        check_choice("method.similarity_stages", similarity_stages, SIMILARITY_STAGES)
        check_choice("method.imitation", imitation, IMITATION_CHOICES)
        check_choice("method.similarity_features", similarity_features, SIMILARITY_FEATURES)
        check_choice("method.preprocess", preprocess, PREPROCESS)
        if phrase_filter == "vocabulary" and not vocabulary:
            raise UserError("method.phrase_filter=vocabulary needs method.vocabulary: the texts the model was trained on")
        if "{phrase}" not in filter_prompt:
            raise UserError(f"method.filter_prompt={filter_prompt!r} must contain {{phrase}}")
        encoder = {**DEFAULT_ENCODER, **(action_encoder or {})}
        check_choice(f"{ENCODER_KEY}.kind", encoder["kind"], ENCODER_KINDS)
        # the image encoder: the similarity loss's and the phrase filter's with either kind, the imitation's with clip
        self.encoder = OpenClip(encoder["model_name"], encoder.get("pretrained"), key=ENCODER_KEY,
                                seed=encoder.get("seed", 0))
        self.pose = None
        if encoder["kind"] == "pose":
            if flip_p > 0:
                raise UserError(
                    f"method.flip_p={flip_p} with {ENCODER_KEY}.kind=pose: a mirrored pose map is not the mirrored "
                    "exemplar's map (OpenPose's colours tell left limbs from right ones, which a mirror swaps; the "
                    "world's maps keep them), so the mirrored rows would read another pose; give method.flip_p=0, or "
                    f"{ENCODER_KEY}.kind=clip")
            self.pose = PoseEncoder(encoder["controlnet"], encoder["detector"], encoder.get("include_hand", False),
                                    encoder.get("pose_range", "signed"), encoder.get("preprocess", "squash"))
        self.similarity_features, self.preprocess = similarity_features, preprocess
        self.placeholder_token, self.num_tokens, self.initializer_token = placeholder_token, num_tokens, initializer_token
        self.phrases = list(dict.fromkeys(read_phrases(phrases or PHRASES_FILE) + [p for p in extra_phrases if p]))
        self.filter = dict(kind=phrase_filter, prompt=filter_prompt, margin=filter_margin, samples=filter_samples)
        self.vocabulary = list(vocabulary)
        self.num_bases, self.mlp_hidden = num_bases, mlp_hidden
        self.imitation_steps, self.max_train_steps = imitation_steps, max_train_steps
        self.learning_rate, self.batch_size, self.accumulation = learning_rate, train_batch_size, gradient_accumulation_steps
        self.rank, self.flip_p, self.cache_dir, self.log_every = rank, flip_p, cache_dir, log_every
        self.use_8bit_adam, self.max_grad_norm, self.imitation = use_8bit_adam, max_grad_norm, imitation
        self.similarity = dict(weight=similarity_weight, start=similarity_start, min_timestep=similarity_min_timestep,
                               stages=similarity_stages)

    def check(self, task, scorer) -> None:
        """The pose encoder needs its ControlNet and every exemplar's pose map; the image encoder that trains
        TwinAct must not be the one that scores it."""
        if self.pose is not None:
            self.pose.check(task)
        for clip in scorer.clips() if scorer is not None else []:
            if self.encoder.same_weights(clip):
                raise UserError(
                    f"method.action_encoder ({self.encoder.model_name}, pretrained={self.encoder.pretrained}) is the "
                    "scorer's own CLIP: TwinAct would be trained by the model that scores it. Give the method another "
                    "encoder (method.action_encoder.model_name / .pretrained) or choose another scorer.")

    def token(self, task) -> str:
        return self.placeholder_token or f"<{task.action.name}>"

    def action_text(self, task) -> str:
        return self.token(task)  # the pipeline expands it into its num_tokens vectors (<a1><a2><a3>)

    # --- 1. the common action space -------------------------------------------------------------------

    def _filter_key(self) -> str:
        described = json.dumps({"phrases": self.phrases, "prompt": self.filter["prompt"], "samples": self.filter["samples"],
                                "encoder": self.encoder.describe()}, sort_keys=True)
        return hashlib.sha256(described.encode()).hexdigest()[:16]

    @torch.no_grad()
    def drawability(self, model) -> dict[str, float]:
        """Per phrase: how much better the base model's images of `filter_prompt` match their phrase than the
        bare prompt (phrase left out), by the action encoder's CLIP cosine, averaged over `filter_samples`
        images. A phrase is kept when this exceeds `filter_margin`. Images and scores are cached per model."""
        folder = model_cache(self.cache_dir, model, "twinact_phrases") / self._filter_key()
        scores_file = folder / "drawability.json"
        if scores_file.is_file():
            return json.loads(scores_file.read_text())
        prompts = [self.filter["prompt"].format(phrase=p) for p in self.phrases]
        jobs = [(folder / f"{i:04d}_{k}.png", prompt, 1000 * k + i)
                for i, prompt in enumerate(prompts) for k in range(self.filter["samples"])]
        generate_to_files(model, [job for job in jobs if not job[0].is_file()], "TwinAct phrase filter", batch_size=32)
        device = model.device
        images = self.encoder.encode_images([Image.open(path).convert("RGB") for path, _, _ in jobs], device)
        images = images.view(len(prompts), self.filter["samples"], -1)
        texts = self.encoder.encode_texts(prompts, device)
        bare = self.encoder.encode_texts([" ".join(self.filter["prompt"].format(phrase="").split())], device)
        scores = ((images @ texts[:, :, None]).squeeze(-1) - (images @ bare[0])).mean(1)
        result = dict(zip(self.phrases, scores.tolist()))
        write_json(scores_file, result)
        return result

    def action_space(self, model) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(mean, bases, info) of the model's common action space, computed once per model and settings."""
        pipe = model.pipe
        if self.filter["kind"] == "none":
            kept = self.phrases
        elif self.filter["kind"] == "vocabulary":
            known = {i for text in self.vocabulary for i in pipe.tokenizer.encode(text, add_special_tokens=False)}
            kept = [p for p in self.phrases if set(pipe.tokenizer.encode(p, add_special_tokens=False)) <= known]
        else:
            scores = self.drawability(model)
            kept = [p for p in self.phrases if scores[p] > self.filter["margin"]]
        key = hashlib.sha256(json.dumps([kept, self.num_tokens, self.num_bases]).encode()).hexdigest()[:16]
        path = model_cache(self.cache_dir, model, "twinact_space") / f"{key}.safetensors"
        if not path.is_file():
            table = pipe.text_encoder.get_input_embeddings().weight.detach()
            mean, bases = principal_bases(action_embedding_groups(pipe.tokenizer, table, kept, self.num_tokens), self.num_bases)
            write_json(path.with_suffix(".json"), {"phrases": kept, "num_tokens": self.num_tokens})
            write_atomic(path, save({"mean": mean.contiguous(), "bases": bases.contiguous()}))
        space = load_file(str(path))
        info = {"space": key, "phrases": len(self.phrases), "kept": len(kept), "bases": space["bases"].shape[1]}
        return space["mean"].to(model.device), space["bases"].to(model.device), info

    # --- 2 and 3. imitation, then generation with LoRA ------------------------------------------------

    def train(self, model, task, seed: int, artifact_dir: Path) -> None:
        self.encoder.check()
        pipe, unet, device = model.pipe, model.pipe.unet, model.device
        initializer = single_token_id(pipe.tokenizer, self.initializer_token, "method.initializer_token")
        mean, bases, info = self.action_space(model)  # before any new token exists
        exemplars, n = task.action.exemplars, len(task.action.exemplars)
        images = [e.load() for e in exemplars]
        features = self.exemplar_features(model, exemplars, images)
        action_feature = features[:n].mean(0, keepdim=True)  # one feature per action (imitation=per_action)
        model_dtype = unet.dtype
        text_encoder = pipe.text_encoder.to(torch.float32)
        tokens = vector_tokens(self.token(task), self.num_tokens)
        texts = [s.prompt for s in task.subjects] + [e.text for e in exemplars]
        initial = text_encoder.get_input_embeddings().weight[initializer]
        new_ids = add_tokens(pipe.tokenizer, text_encoder, tokens, self.initializer_token, texts)
        # the initial word's point of each token's space: its projection onto that token's bases
        start = torch.stack([bases[j] @ (initial.detach().float() - mean[j]) for j in range(self.num_tokens)])
        mlp = ImitationMLP(features.shape[1], self.mlp_hidden, self.num_tokens, bases.shape[1]).to(device)

        def coefficients(inputs: torch.Tensor) -> torch.Tensor:
            return start + mlp(inputs)  # (batch, tokens, bases)

        def token_vectors(inputs: torch.Tensor) -> torch.Tensor:
            return mean + torch.einsum("btr,trw->btw", coefficients(inputs), bases)

        override = EmbeddingOverride(text_encoder, new_ids)
        latents = ExemplarLatents(pipe.vae, images, model.resolution, mirrored=self.flip_p > 0, preprocess=self.preprocess)
        input_ids = token_ids(pipe.tokenizer, [e.caption(" ".join(tokens)) for e in exemplars], device)
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        generator = torch.Generator(device).manual_seed(seed)
        sampler = torch.Generator().manual_seed(seed)
        schedule = {"similarity": 0.0}

        def loss() -> torch.Tensor:
            index = torch.randint(n, (self.batch_size,), generator=sampler)
            flipped = torch.rand(self.batch_size, generator=sampler) < self.flip_p
            rows = (index + n * flipped.long()).to(device)  # the feature of the image each sample trains on
            inputs = action_feature.expand(len(rows), -1) if self.imitation == "per_action" else features[rows]
            with override(token_vectors(inputs)):  # the trained token path in fp32, outside autocast
                hidden = text_encoder(input_ids[index.to(device)])[0]
            with mixed_precision(device, model_dtype):  # the frozen UNet, VAE and encoder in their dtype
                drawn, pixels = latents.batch(index, flipped, generator)
                return self.generation_loss(model, scheduler, drawn, hidden, pixels.to(device), generator,
                                            schedule["similarity"])

        def stage(params: list, steps: int, name: str, resume: Resume, similarity: bool) -> None:
            """One stage's optimisation; `similarity`: whether its similarity loss switches on part-way."""
            def switch(step: int) -> None:
                on = similarity and step >= self.similarity["start"] * steps
                schedule["similarity"] = self.similarity["weight"] if on else 0.0

            optimise(adamw(params, self.learning_rate, self.use_8bit_adam), loss, steps, name, self.accumulation,
                     log_every=self.log_every, clip_params=params, max_grad_norm=self.max_grad_norm,
                     before_step=switch, resume=resume)

        generation = Resume(artifact_dir, (generator, sampler), name="generation.pt")
        imitated = Path(artifact_dir) / IMITATED_FILE
        try:
            if generation.path.is_file():
                pass  # a run killed in stage 2 after its first checkpoint: that checkpoint holds the MLP
            elif imitated.is_file():  # killed in stage 2 before it: stage 1's result
                self.load_imitated(imitated, mlp, (generator, sampler))
            else:
                stage(list(mlp.parameters()), self.imitation_steps, "TwinAct imitation",
                      Resume(artifact_dir, (generator, sampler), name="imitation.pt"), self.similarity["stages"] == "both")
                self.save_imitated(imitated, mlp, (generator, sampler))
            unet_lora = add_unet_lora(unet, self.rank)
            unet.train()
            stage(list(mlp.parameters()) + unet_lora, self.max_train_steps, "TwinAct generation", generation, True)
        finally:
            override.remove()
        unet.eval().requires_grad_(False)
        with torch.no_grad():
            if self.imitation == "per_action":
                trained = coefficients(action_feature)  # (1, tokens, bases): the tokens training used
                generated = trained[0]
            else:
                trained = coefficients(features[:n])  # one per exemplar; generation uses their mean
                generated = trained.mean(0)
            learned = mean + torch.einsum("tr,trw->tw", generated, bases)
            text_encoder.get_input_embeddings().weight[new_ids] = learned
        text_encoder.to(model_dtype)
        self.save(model, task, artifact_dir, learned, mlp, trained, info)
        imitated.unlink(missing_ok=True)  # the run is over: stage 1 is in the artifact

    @torch.no_grad()
    def exemplar_features(self, model, exemplars, images) -> torch.Tensor:
        """What the imitation MLP reads: a row per exemplar; the pose encoder's features of the exemplars' pose maps,
        or (kind=clip) the image encoder's embedding of the images (their centre square where training crops at
        random), then a row per mirror image when flip_p > 0 (kind=clip only)."""
        if self.pose is not None:
            return self.pose.encode(model, exemplars)
        pixels = torch.stack([image_tensor(image, model.resolution, self.preprocess) for image in images])
        if self.flip_p > 0:
            pixels = torch.cat([pixels, pixels.flip(-1)])  # row i + n: exemplar i mirrored
        return self.encoder.encode_pixels(pixels.to(model.device), model.device)

    def image_features(self, pixels: torch.Tensor, device) -> torch.Tensor:
        """The similarity loss's unit-norm features of images in [-1, 1] (`similarity_features`)."""
        if self.similarity_features == "pooled":
            return self.encoder.pooled_pixels(pixels, device)
        return self.encoder.encode_pixels(pixels, device)

    @staticmethod
    def save_imitated(path: Path, mlp, generators) -> None:
        buffer = io.BytesIO()
        torch.save({"mlp": mlp.state_dict(), "generators": [g.get_state() for g in generators]}, buffer)
        write_atomic(path, buffer.getvalue())

    @staticmethod
    def load_imitated(path: Path, mlp, generators) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        mlp.load_state_dict(state["mlp"])
        for generator, saved in zip(generators, state["generators"]):
            generator.set_state(saved)

    def generation_loss(self, model, scheduler, latents, hidden, exemplar_pixels, generator, similarity_weight: float):
        """Noise-prediction loss, plus similarity_weight x the mean (1 - cosine) between the image encoder's
        features of the decoded x̂0 and of the sample's exemplar (`exemplar_pixels`: the very pixels its latents
        were drawn from, mirrored or cropped alike), over samples with t > min_timestep x T."""
        prediction, target, noisy, timesteps = denoising_prediction(model.pipe.unet, scheduler, latents, hidden, generator)
        loss = torch.nn.functional.mse_loss(prediction, target)
        chosen = timesteps > self.similarity["min_timestep"] * scheduler.config.num_train_timesteps
        if similarity_weight > 0 and chosen.any():
            vae = model.pipe.vae
            clean = predicted_clean_latents(scheduler, noisy[chosen], prediction[chosen], timesteps[chosen])
            pixels = vae.decode((clean / vae.config.scaling_factor).to(vae.dtype)).sample
            with torch.no_grad():
                targets = self.image_features(exemplar_pixels[chosen], model.device)
            cosine = (self.image_features(pixels, model.device) * targets).sum(-1)
            loss = loss + similarity_weight * (1 - cosine).mean()
        return loss

    def save(self, model, task, artifact_dir: Path, learned, mlp, coefficients, info: dict) -> None:
        artifact_dir = Path(artifact_dir)
        write_atomic(artifact_dir / EMBEDS_FILE, save({self.token(task): learned.float().cpu().contiguous()}))
        save_unet_lora(model.pipe, artifact_dir)
        tensors = {f"mlp.{k}": v.detach().float().cpu().contiguous() for k, v in mlp.state_dict().items()}
        tensors["coefficients"] = coefficients.float().cpu().contiguous()
        metadata = {"action_space": json.dumps(info),
                    "action_encoder": json.dumps((self.pose or self.encoder).describe()),  # what the MLP reads
                    "similarity_encoder": json.dumps(self.encoder.describe())}
        write_atomic(artifact_dir / IMITATION_FILE, save(tensors, metadata=metadata))

    def load(self, model, task, artifact_dir: Path) -> None:
        model.pipe.load_textual_inversion(str(Path(artifact_dir) / EMBEDS_FILE))
        model.pipe.load_lora_weights(str(artifact_dir))
