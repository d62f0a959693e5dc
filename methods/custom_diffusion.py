"""Custom Diffusion (Kumari et al. 2023): only the cross-attention key/value projections and one modifier
token's embedding train, with prior preservation on the base model's class images.

Recipe and defaults follow diffusers' `train_custom_diffusion.py` (lr 1e-5 x batch, 250 steps, batch 2,
200 class images, horizontal flips, modifier "<new1>"). Its initialiser "ktn" is two CLIP tokens, so the
modifier starts from the rare one-token word "ohwx". The artifact is diffusers' own pair:
attention-processor weights (`unet.save_attn_procs`' file) and the learned embedding (`pipe.load_textual_inversion`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import CustomDiffusionAttnProcessor2_0
from safetensors.torch import load_file, save

from actionbench.errors import (
    UserError,
    check_choice,
    check_positive,
    check_probability,
)
from actionbench.files import write_atomic
from methods.base import ActionMethod
from methods.mechanics.latents import ExemplarLatents
from methods.mechanics.loop import Resume, optimise
from methods.mechanics.loss import instance_and_prior_loss
from methods.mechanics.optim import adamw, mixed_precision
from methods.mechanics.prior import PriorPreservation, text_embedder
from methods.mechanics.tokens import TokenVectors, add_tokens, token_ids

PROCESSOR_WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"
EMBEDS_FILE = "learned_embeds.safetensors"
FREEZE_CHOICES = ("crossattn_kv", "crossattn")  # train cross-attention k/v only, or all of cross-attention


def custom_diffusion_processors(unet, train_q_out: bool) -> list[torch.nn.Parameter]:
    """Cross-attention layers get trainable copies of their projections; self-attention layers a plain
    (parameter-free) processor of the same family, as the reference does, so `save_attn_procs` can save
    them all. The copies start from the layer's own weights: the model is unchanged until training moves them.
    """
    processors = {}
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            processors[name] = CustomDiffusionAttnProcessor2_0(train_kv=False, train_q_out=False)
            continue
        layer = unet.get_submodule(name[: -len(".processor")])
        processor = CustomDiffusionAttnProcessor2_0(
            train_kv=True, train_q_out=train_q_out, hidden_size=layer.to_q.out_features,
            cross_attention_dim=layer.to_k.in_features, out_bias=layer.to_out[0].bias is not None,
        )
        copies = {"to_k_custom_diffusion": layer.to_k, "to_v_custom_diffusion": layer.to_v}
        if train_q_out:
            copies.update(to_q_custom_diffusion=layer.to_q, to_out_custom_diffusion=layer.to_out)
        for attr, source in copies.items():
            getattr(processor, attr).load_state_dict(source.state_dict())
        processors[name] = processor.to(unet.device, torch.float32)
    params = [p for proc in processors.values() for p in proc.parameters()]
    unet.set_attn_processor(processors)  # (empties the dict it is given)
    return params


class CustomDiffusion(ActionMethod):
    def __init__(
        self,
        modifier_token: str = "<new1>",
        initializer_token: str = "ohwx",
        freeze_model: str = "crossattn_kv",
        learning_rate: float = 1e-5,
        scale_lr: bool = True,
        train_batch_size: int = 2,
        max_train_steps: int = 250,
        with_prior_preservation: bool = True,
        prior_loss_weight: float = 1.0,
        class_prompt: str = "a photo of a person",
        num_class_images: int = 200,
        cache_dir: str = "results/cache",
        flip_p: float = 0.5,
        max_grad_norm: float = 1.0,
        use_8bit_adam: bool = False,
        log_every: int = 10,
    ):
        check_choice("method.freeze_model", freeze_model, FREEZE_CHOICES)
        check_positive("method", learning_rate=learning_rate, train_batch_size=train_batch_size,
                       max_train_steps=max_train_steps, log_every=log_every)
        check_probability("method", flip_p=flip_p)
        self.modifier_token, self.initializer_token, self.freeze_model = modifier_token, initializer_token, freeze_model
        self.learning_rate = learning_rate * (train_batch_size if scale_lr else 1)
        self.batch_size, self.max_train_steps = train_batch_size, max_train_steps
        self.prior = PriorPreservation(with_prior_preservation, class_prompt, num_class_images, prior_loss_weight, cache_dir)
        self.flip_p, self.max_grad_norm, self.use_8bit_adam, self.log_every = flip_p, max_grad_norm, use_8bit_adam, log_every

    def action_text(self, task) -> str:
        return self.modifier_token

    def train(self, model, task, seed: int, artifact_dir: Path) -> None:
        pipe = model.pipe
        device, model_dtype = model.device, pipe.unet.dtype
        self.prior.check_prompt(pipe.tokenizer)
        self.prior.prepare(model, text_embedder(pipe))  # before the modifier token exists
        text_encoder = pipe.text_encoder.to(torch.float32)
        texts = [s.prompt for s in task.subjects] + [e.text for e in task.action.exemplars]
        [token_id] = add_tokens(pipe.tokenizer, text_encoder, [self.modifier_token], self.initializer_token, texts)
        token = TokenVectors(text_encoder, [token_id])
        layers = custom_diffusion_processors(pipe.unet, train_q_out=self.freeze_model == "crossattn")
        exemplars = task.action.exemplars
        latents = ExemplarLatents(pipe.vae, [e.load() for e in exemplars], model.resolution, mirrored=self.flip_p > 0)
        input_ids = token_ids(pipe.tokenizer, [e.caption(self.modifier_token) for e in exemplars], device)
        params = [token.vectors, *layers]
        optimizer = adamw(params, self.learning_rate, self.use_8bit_adam)
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        generator = torch.Generator(device).manual_seed(seed)
        sampler = torch.Generator().manual_seed(seed)

        def loss() -> torch.Tensor:
            index = torch.randint(len(exemplars), (self.batch_size,), generator=sampler)
            flipped = torch.rand(self.batch_size, generator=sampler) < self.flip_p
            prior, prior_hidden = self.prior.batch(self.batch_size, sampler, generator)
            with token():
                hidden = text_encoder(input_ids[index.to(device)])[0]
            with mixed_precision(device, model_dtype):
                return instance_and_prior_loss(pipe.unet, scheduler, latents.sample(index, flipped, generator), hidden,
                                               prior, prior_hidden, generator, self.prior.weight)

        try:
            optimise(optimizer, loss, self.max_train_steps, "custom diffusion", log_every=self.log_every,
                     clip_params=params, max_grad_norm=self.max_grad_norm, resume=Resume(artifact_dir, (generator, sampler)))
        finally:
            learned = token.done().float().cpu()
        for p in layers:
            p.requires_grad_(False)
        text_encoder.to(model_dtype)
        pipe.unet.to(model_dtype)  # the processors' trained copies too
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        pipe.unet.save_attn_procs(str(artifact_dir), weight_name=PROCESSOR_WEIGHTS, safe_serialization=True)
        write_atomic(Path(artifact_dir) / EMBEDS_FILE, save({self.modifier_token: learned}))

    def load(self, model, task, artifact_dir: Path) -> None:
        """Read diffusers' Custom Diffusion files. The processor file is read here rather than by
        `unet.load_attn_procs`, which in diffusers 0.42 cannot restore a safetensors file with its layers."""
        unet = model.pipe.unet
        state = load_file(str(Path(artifact_dir) / PROCESSOR_WEIGHTS))
        custom_diffusion_processors(unet, train_q_out=any("to_q_custom_diffusion" in k for k in state))
        unexpected = unet.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise UserError(f"{artifact_dir}: not Custom Diffusion weights for this model (e.g. {unexpected[0]})")
        unet.to(unet.dtype)
        model.pipe.load_textual_inversion(str(Path(artifact_dir) / EMBEDS_FILE))
