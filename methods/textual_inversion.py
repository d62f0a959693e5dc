"""Textual Inversion (Gal et al. 2022): one new token embedding is the only trainable parameter.

Recipe and defaults follow diffusers' `textual_inversion` example; the action's identifier replaces the
placeholder in each exemplar's own description. The artifact is `learned_embeds.safetensors`
({token: vector}), loadable by `pipe.load_textual_inversion`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler
from safetensors.torch import save

from actionbench.errors import check_choice, check_positive, check_probability
from actionbench.files import write_atomic
from methods.base import ActionMethod
from methods.mechanics.latents import PREPROCESS, ExemplarLatents
from methods.mechanics.loop import Resume, optimise
from methods.mechanics.loss import noise_prediction_loss
from methods.mechanics.tokens import TokenVectors, add_tokens, token_ids

EMBEDS_FILE = "learned_embeds.safetensors"


class TextualInversion(ActionMethod):
    def __init__(
        self,
        placeholder_token: str | None = None,
        initializer_token: str = "action",
        learning_rate: float = 5e-4,
        scale_lr: bool = True,
        train_batch_size: int = 4,
        gradient_accumulation_steps: int = 1,
        max_train_steps: int = 3000,
        flip_p: float = 0.5,
        preprocess: str = "squash",
        adam_beta1: float = 0.9,
        adam_beta2: float = 0.999,
        adam_weight_decay: float = 1e-2,
        adam_epsilon: float = 1e-8,
        log_every: int = 10,
    ):
        check_positive("method", learning_rate=learning_rate, train_batch_size=train_batch_size, max_train_steps=max_train_steps,
                       gradient_accumulation_steps=gradient_accumulation_steps, log_every=log_every)
        check_probability("method", flip_p=flip_p)
        check_choice("method.preprocess", preprocess, PREPROCESS)
        self.preprocess = preprocess
        self.placeholder_token = placeholder_token
        self.initializer_token = initializer_token
        self.learning_rate = learning_rate * (train_batch_size * gradient_accumulation_steps if scale_lr else 1)
        self.batch_size = train_batch_size
        self.accumulation = gradient_accumulation_steps
        self.max_train_steps = max_train_steps
        self.flip_p = flip_p
        self.adam = dict(betas=(adam_beta1, adam_beta2), weight_decay=adam_weight_decay, eps=adam_epsilon)
        self.log_every = log_every

    def token(self, task) -> str:
        return self.placeholder_token or f"<{task.action.name}>"

    def action_text(self, task) -> str:
        return self.token(task)

    def tokens(self, model, task) -> list[str]:
        """The new tokens: one here; one per cross-attention layer in P+."""
        return [self.token(task)]

    def metadata(self, model) -> dict:
        """Strings stored in the artifact's safetensors header."""
        return {}

    def encode(self, text_encoder, input_ids: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
        """Text conditioning of tokenized prompts (P+ encodes one prompt per layer)."""
        return text_encoder(input_ids)[0]

    def timestep_density(self, scheduler) -> torch.Tensor | None:
        """Weights over the training timesteps (ReVersion's relation-focal sampling); None: uniform."""
        return None

    def extra_loss(self, tokens: TokenVectors, input_ids: torch.Tensor, sampler: torch.Generator) -> torch.Tensor | None:
        """A term added to each batch's denoising loss, from the trained vectors and the batch's prompts
        (ReVersion's steering loss); None: none. Its random draws come from `sampler`, which resume restores."""
        return None

    def train(self, model, task, seed: int, artifact_dir: Path) -> None:
        pipe, token = model.pipe, self.token(task)
        device, model_dtype = model.device, pipe.unet.dtype
        text_encoder = pipe.text_encoder.to(torch.float32)  # the trained embeddings stay in full precision
        texts = [s.prompt for s in task.subjects] + [e.text for e in task.action.exemplars]
        new_ids = add_tokens(pipe.tokenizer, text_encoder, self.tokens(model, task), self.initializer_token, texts)
        tokens = TokenVectors(text_encoder, new_ids)
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        exemplars = task.action.exemplars
        latents = ExemplarLatents(pipe.vae, [e.load() for e in exemplars], model.resolution, mirrored=self.flip_p > 0,
                                  preprocess=self.preprocess)
        input_ids = token_ids(pipe.tokenizer, [e.caption(token) for e in exemplars], device)
        optimizer = torch.optim.AdamW([tokens.vectors], lr=self.learning_rate, **self.adam)
        generator = torch.Generator(device).manual_seed(seed)
        sampler = torch.Generator().manual_seed(seed)  # which exemplars, and whether mirrored
        density = self.timestep_density(scheduler)

        def loss() -> torch.Tensor:
            index = torch.randint(len(exemplars), (self.batch_size,), generator=sampler)
            flipped = torch.rand(self.batch_size, generator=sampler) < self.flip_p
            batch_ids = input_ids[index.to(device)]
            with tokens():
                hidden = self.encode(text_encoder, batch_ids, new_ids)
            denoising = noise_prediction_loss(pipe.unet, scheduler, latents.sample(index, flipped, generator), hidden,
                                              generator, timestep_density=density)
            extra = self.extra_loss(tokens, batch_ids, sampler)
            return denoising if extra is None else denoising + extra

        try:
            optimise(optimizer, loss, self.max_train_steps, type(self).__name__, self.accumulation, log_every=self.log_every,
                     resume=Resume(artifact_dir, (generator, sampler)))
        finally:
            learned = tokens.done()  # the hook goes even when training fails
        text_encoder.to(model_dtype)
        self.save(model, task, artifact_dir, learned)

    def save(self, model, task, artifact_dir: Path, learned: torch.Tensor) -> None:
        """{token: (tokens, width)}: diffusers' (multi-vector) textual-inversion layout."""
        tensors = {self.token(task): learned.float().cpu().contiguous()}
        write_atomic(Path(artifact_dir) / EMBEDS_FILE, save(tensors, metadata=self.metadata(model)))

    def load(self, model, task, artifact_dir: Path) -> None:
        model.pipe.load_textual_inversion(str(Path(artifact_dir) / EMBEDS_FILE))
