"""DreamBooth (Ruiz et al. 2023), adapted to actions as ActionBench's authors did: a rare-token identifier
stands for the action in every exemplar's description, and the UNet is fine-tuned, fully or with LoRA.

Recipe and defaults follow diffusers' `train_dreambooth.py` / `train_dreambooth_lora.py`: prior
preservation on class images that the base model generates (cached once per model and class prompt),
prior weight 1.0, gradient clipping at 1.0. Artifacts: LoRA in diffusers' LoRA format
(`pipe.load_lora_weights`); full fine-tuning saves only the UNet (the one part that changed).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from actionbench.errors import UserError, check_choice, check_positive, check_probability
from methods.base import ActionMethod
from methods.mechanics.latents import PREPROCESS, ExemplarLatents
from methods.mechanics.loop import Resume, optimise
from methods.mechanics.lora import add_unet_lora, save_unet_lora
from methods.mechanics.loss import instance_and_prior_loss
from methods.mechanics.optim import adamw, mixed_precision
from methods.mechanics.prior import PriorPreservation, text_embedder
from methods.mechanics.tokens import single_token_id

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


class DreamBooth(ActionMethod):
    def __init__(
        self,
        identifier: str = "sks",
        lora: bool = False,
        rank: int = 4,
        learning_rate: float = 5e-6,
        train_batch_size: int = 1,
        max_train_steps: int = 400,
        with_prior_preservation: bool = True,
        prior_loss_weight: float = 1.0,
        class_prompt: str = "a photo of a person",
        num_class_images: int = 100,
        cache_dir: str = "results/cache",
        flip_p: float = 0.0,
        preprocess: str = "random_crop",
        max_grad_norm: float = 1.0,
        gradient_checkpointing: bool = False,
        use_8bit_adam: bool = False,
        log_every: int = 10,
    ):
        check_positive("method", learning_rate=learning_rate, train_batch_size=train_batch_size,
                       max_train_steps=max_train_steps, log_every=log_every)
        if lora and (not isinstance(rank, int) or rank < 1):
            raise UserError(f"method.rank={rank!r} must be an integer >= 1")
        check_probability("method", flip_p=flip_p)
        check_choice("method.preprocess", preprocess, PREPROCESS)
        self.preprocess = preprocess
        self.identifier, self.lora, self.rank = identifier, lora, rank
        self.learning_rate, self.batch_size, self.max_train_steps = learning_rate, train_batch_size, max_train_steps
        self.prior = PriorPreservation(with_prior_preservation, class_prompt, num_class_images, prior_loss_weight, cache_dir)
        self.flip_p, self.max_grad_norm = flip_p, max_grad_norm
        self.gradient_checkpointing, self.use_8bit_adam, self.log_every = gradient_checkpointing, use_8bit_adam, log_every

    def action_text(self, task) -> str:
        return self.identifier

    def train(self, model, task, seed: int, artifact_dir: Path) -> None:
        pipe, unet = model.pipe, model.pipe.unet
        single_token_id(pipe.tokenizer, self.identifier, "method.identifier")
        self.prior.check_prompt(pipe.tokenizer)
        device, model_dtype = model.device, unet.dtype
        embed = text_embedder(pipe)
        self.prior.prepare(model, embed)
        exemplars = task.action.exemplars
        latents = ExemplarLatents(pipe.vae, [e.load() for e in exemplars], model.resolution, mirrored=self.flip_p > 0,
                                  preprocess=self.preprocess)
        instance_embeds = embed([e.caption(self.identifier) for e in exemplars])

        if self.lora:
            params = add_unet_lora(unet, self.rank)
        else:
            unet.to(torch.float32).requires_grad_(True)  # trained weights in fp32; frozen parts stay in dtype
            params = list(unet.parameters())
        if self.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        optimizer = adamw(params, self.learning_rate, self.use_8bit_adam)
        generator = torch.Generator(device).manual_seed(seed)
        sampler = torch.Generator().manual_seed(seed)

        def loss() -> torch.Tensor:
            index = torch.randint(len(exemplars), (self.batch_size,), generator=sampler)
            flipped = torch.rand(self.batch_size, generator=sampler) < self.flip_p
            prior, prior_hidden = self.prior.batch(self.batch_size, sampler, generator)
            with mixed_precision(device, model_dtype):
                return instance_and_prior_loss(unet, scheduler, latents.sample(index, flipped, generator),
                                               instance_embeds[index.to(device)], prior, prior_hidden, generator, self.prior.weight)

        # A full-UNet checkpoint (weights + Adam moments, ~10 GB for SD) costs more than redoing 400 steps:
        # none periodically, only the states the convergence ladder asks to keep.
        resume = Resume(artifact_dir, (generator, sampler), every=200 if self.lora else None)
        optimise(optimizer, loss, self.max_train_steps, "dreambooth-lora" if self.lora else "dreambooth",
                 log_every=self.log_every, clip_params=params, max_grad_norm=self.max_grad_norm, resume=resume)
        unet.eval().requires_grad_(False)
        if self.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        if self.lora:
            save_unet_lora(pipe, artifact_dir)
        else:
            unet.to(model_dtype).save_pretrained(Path(artifact_dir) / "unet", safe_serialization=True)

    def load(self, model, task, artifact_dir: Path) -> None:
        if self.lora:
            model.pipe.load_lora_weights(str(artifact_dir))
        else:
            state = load_file(str(Path(artifact_dir) / UNET_WEIGHTS))
            model.pipe.unet.load_state_dict({k: v.to(model.pipe.unet.dtype) for k, v in state.items()})
