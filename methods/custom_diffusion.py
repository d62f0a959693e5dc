"""Custom Diffusion (Kumari et al. 2023): only the cross-attention key/value projections and one modifier
token's embedding train, with prior preservation on the base model's class images.

Recipe and defaults follow diffusers' `train_custom_diffusion.py` run with `--hflip` (lr 1e-5 scaled by
accumulation x batch x 2 with prior preservation, 250 steps, batch 2, 200 class images, flips of instance
and class images alike, its default rescale augmentation, modifier "<new1>"). The artifact is diffusers'
own pair: attention-processor weights (`unet.save_attn_procs`' file) and the learned embedding
(`pipe.load_textual_inversion`).

Augmentation (`augment`, the reference's default): each instance image is rescaled to a random 1/3..1 of
its size (2/3 of the time) or 1.2..1.4 of it; a smaller one is pasted at a random place on a blank (mid-grey)
canvas, a larger one randomly cropped. Scales under 0.6 prefix the prompt with "a far away " / "very small ",
scales over 1 with "zoomed in " / "close up ". The instance loss is averaged over the valid region only (the
pasted image less one latent pixel at each edge). Augmented images are encoded by the VAE at every step (as the
reference does for every image): a cached set of scales would cut the placements to a few; class images and
`augment=false` keep their latents cached.

Remaining deviations from the reference:
- Its modifier initialiser "ktn" is two CLIP tokens, so ours starts from the rare one-token word "ohwx" [ours].
- Its instance loss divides the masked sum by the mask's pixel count, not times the latent channels, so its
  instance term weighs 4x (SD's 4 channels) against the prior term, and even without augmentation its mask
  drops the outer latent pixel. Ours is a true mean over the valid region (all of it without augmentation);
  `prior_loss_weight` sets the balance (0.25 reproduces the reference's).
- It squashes the whole image straight to the drawn scale; ours squashes it to the model's square first
  (`preprocess=squash`, the reference's geometry; `centre_crop` as option) and rescales that, two resamplings
  where the reference has one (the cached square serves every draw).
- Where the inset mask of a very small image (at tiny resolutions) would be empty, the uninset region counts.
- Class images come from the base model (its `--real_prior` option, retrieved real images, is not offered).
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
from methods.mechanics.latents import (
    PREPROCESS,
    ExemplarLatents,
    image_tensor,
    latent_distribution,
    sample_latents,
)
from methods.mechanics.loop import Resume, optimise
from methods.mechanics.loss import instance_and_prior_loss
from methods.mechanics.optim import adamw, mixed_precision
from methods.mechanics.prior import PriorPreservation, text_embedder
from methods.mechanics.tokens import TokenVectors, add_tokens, token_ids

PROCESSOR_WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"
EMBEDS_FILE = "learned_embeds.safetensors"
FREEZE_CHOICES = ("crossattn_kv", "crossattn")  # train cross-attention k/v only, or all of cross-attention
SMALL_PREFIXES, LARGE_PREFIXES = ("a far away ", "very small "), ("zoomed in ", "close up ")


def draw_rescale(resolution: int, sampler: torch.Generator) -> tuple[int, int, int, str]:
    """The reference's random rescale: (scale in pixels, top, left, prompt prefix). 2/3 of the time a scale in
    [resolution / 3, resolution], else in [1.2, 1.4) x resolution; top/left place the image on the canvas
    (smaller) or the crop in the image (larger)."""
    def integer(low: int, high: int) -> int:  # in [low, high)
        return int(torch.randint(low, high, (1,), generator=sampler))

    if float(torch.rand(1, generator=sampler)) < 0.66:
        scale = integer(resolution // 3, resolution + 1)
    else:
        scale = integer(int(1.2 * resolution), int(1.4 * resolution))
    top, left = (integer(0, abs(scale - resolution) + 1) for _ in range(2))
    prefix = ""
    if scale < 0.6 * resolution:
        prefix = SMALL_PREFIXES[integer(0, 2)]
    elif scale > resolution:
        prefix = LARGE_PREFIXES[integer(0, 2)]
    return scale, top, left, prefix


def rescaled(pixels: torch.Tensor, scale: int, top: int, left: int, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image (3, r, r) in [-1, 1] rescaled to `scale`: pasted at (top, left) on a blank canvas, or cropped there;
    and the valid-region mask (1, r / factor, r / factor) in latent space (`factor`: pixels per latent pixel).
    The pasted region loses one latent pixel at each edge, as in the reference, unless that leaves nothing."""
    size = pixels.shape[-1]
    image = torch.nn.functional.interpolate(pixels[None], size=(scale, scale), mode="bilinear", antialias=True,
                                            align_corners=False)[0]
    mask = torch.zeros(1, size // factor, size // factor)
    if scale > size:
        return image[:, top : top + size, left : left + size], mask + 1
    canvas = torch.zeros_like(pixels)
    canvas[:, top : top + scale, left : left + scale] = image
    rows, cols = (slice(start // factor + 1, (start + scale) // factor - 1) for start in (top, left))
    mask[:, rows, cols] = 1
    if not mask.any():
        rows, cols = (slice(start // factor, -(-(start + scale) // factor)) for start in (top, left))
        mask[:, rows, cols] = 1
    return canvas, mask


def scaled_learning_rate(learning_rate: float, scale_lr: bool, batch_size: int, accumulation: int, prior: bool) -> float:
    """The reference's scaling: x accumulation x batch x processes (1 here), and x 2 more with prior preservation
    (each batch then holds as many class images as instance images)."""
    if not scale_lr:
        return learning_rate
    return learning_rate * accumulation * batch_size * (2 if prior else 1)


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
        gradient_accumulation_steps: int = 1,
        max_train_steps: int = 250,
        with_prior_preservation: bool = True,
        prior_loss_weight: float = 1.0,
        class_prompt: str = "a photo of a person",
        num_class_images: int = 200,
        cache_dir: str = "results/cache",
        flip_p: float = 0.5,
        augment: bool = True,
        preprocess: str = "squash",
        max_grad_norm: float = 1.0,
        use_8bit_adam: bool = False,
        log_every: int = 10,
    ):
        check_choice("method.freeze_model", freeze_model, FREEZE_CHOICES)
        check_positive("method", learning_rate=learning_rate, train_batch_size=train_batch_size,
                       gradient_accumulation_steps=gradient_accumulation_steps, max_train_steps=max_train_steps,
                       log_every=log_every)
        check_probability("method", flip_p=flip_p)
        check_choice("method.preprocess", preprocess, PREPROCESS)
        self.preprocess = preprocess
        self.modifier_token, self.initializer_token, self.freeze_model = modifier_token, initializer_token, freeze_model
        self.learning_rate = scaled_learning_rate(learning_rate, scale_lr, train_batch_size, gradient_accumulation_steps,
                                                  with_prior_preservation)
        self.batch_size, self.accumulation, self.max_train_steps = train_batch_size, gradient_accumulation_steps, max_train_steps
        self.prior = PriorPreservation(with_prior_preservation, class_prompt, num_class_images, prior_loss_weight, cache_dir,
                                       flip_p=flip_p)
        self.flip_p, self.augment = flip_p, augment
        self.max_grad_norm, self.use_8bit_adam, self.log_every = max_grad_norm, use_8bit_adam, log_every

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
        captions = [e.caption(self.modifier_token) for e in exemplars]
        instances = self.instances(pipe, [e.load() for e in exemplars], model.resolution)
        params = [token.vectors, *layers]
        optimizer = adamw(params, self.learning_rate, self.use_8bit_adam)
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        generator = torch.Generator(device).manual_seed(seed)
        sampler = torch.Generator().manual_seed(seed)

        def loss() -> torch.Tensor:
            index = torch.randint(len(exemplars), (self.batch_size,), generator=sampler)
            flipped = torch.rand(self.batch_size, generator=sampler) < self.flip_p
            latents, mask, prompts = instances(index, flipped, captions, sampler, generator)
            prior, prior_hidden = self.prior.batch(self.batch_size, sampler, generator)
            with token():
                hidden = text_encoder(token_ids(pipe.tokenizer, prompts, device))[0]
            with mixed_precision(device, model_dtype):
                return instance_and_prior_loss(pipe.unet, scheduler, latents, hidden, prior, prior_hidden, generator,
                                               self.prior.weight, instance_mask=mask)

        try:
            optimise(optimizer, loss, self.max_train_steps, "custom diffusion", self.accumulation, log_every=self.log_every,
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

    def instances(self, pipe, images: list, resolution: int):
        """`draw(index, flipped, captions, sampler, generator)` -> (latents, valid-region mask or None, prompts) of a
        batch of exemplars. Without augmentation the latents come from the cache; with it each image is rescaled
        and encoded now."""
        if not self.augment:
            cached = ExemplarLatents(pipe.vae, images, resolution, mirrored=self.flip_p > 0, preprocess=self.preprocess)

            def draw(index, flipped, captions, sampler, generator):
                return cached.sample(index, flipped, generator), None, [captions[i] for i in index]

            return draw
        pixels = torch.stack([image_tensor(image, resolution, self.preprocess) for image in images])
        factor = pipe.vae_scale_factor

        def draw(index, flipped, captions, sampler, generator):
            batch, masks, prompts = [], [], []
            for i, flip in zip(index.tolist(), flipped.tolist()):
                scale, top, left, prefix = draw_rescale(resolution, sampler)
                image, mask = rescaled(pixels[i].flip(-1) if flip else pixels[i], scale, top, left, factor)
                batch.append(image)
                masks.append(mask)
                prompts.append(prefix + captions[i])
            mean, std = latent_distribution(pipe.vae, torch.stack(batch))
            latents = sample_latents(mean, std, generator, pipe.vae.config.scaling_factor)
            return latents, torch.stack(masks).to(latents.device), prompts

        return draw

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
