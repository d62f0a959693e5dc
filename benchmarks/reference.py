"""The reference recipes' training step, written minimally on diffusers and peft the way their scripts step:
the exemplar batch is VAE-encoded and every prompt text-encoded at every step, one forward/backward per
loss term, per-layer prompts encoded one layer at a time. Same model, batch, resolution and precision as
ours; only the way of stepping differs.

`STEPS[name](model, task, method)` sets a method's reference loop up and returns its `step()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from methods.adi import adi_mask
from methods.custom_diffusion import custom_diffusion_processors
from methods.mechanics.latents import image_tensor
from methods.mechanics.layerwise import (
    cross_attention_layers,
    per_layer_ids,
    route_per_layer,
)
from methods.mechanics.lora import add_unet_lora
from methods.mechanics.loss import predicted_clean_latents
from methods.mechanics.prior import class_images
from methods.mechanics.tokens import (
    EmbeddingOverride,
    add_tokens,
    token_ids,
    vector_tokens,
)
from methods.twinact import ImitationMLP


class TrainableRows:
    """The scripts' way of training new token rows: the whole embedding table is the parameter (a dense
    gradient and AdamW state for every row), and every other row is put back after each step."""

    def __init__(self, text_encoder, token_ids: list[int]):
        self.weight = text_encoder.get_input_embeddings().weight
        self.frozen = torch.ones(self.weight.shape[0], dtype=torch.bool, device=self.weight.device)
        self.frozen[token_ids] = False
        self.original = self.weight.detach()[self.frozen].clone()
        self.weight.requires_grad_(True)

    @torch.no_grad()
    def restore(self) -> None:
        self.weight[self.frozen] = self.original


def _pixels(images, resolution, count, device) -> torch.Tensor:
    return torch.stack([image_tensor(images[i % len(images)], resolution, "squash") for i in range(count)]).to(device)


def _encode(pipe, pixels) -> torch.Tensor:
    with torch.no_grad():
        return pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor


def _loss(unet, scheduler, latents, hidden, keep=None):
    """The scripts' denoising loss; `keep` also returns what x̂0 needs."""
    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    target = scheduler.get_velocity(latents, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    prediction = unet(noisy, t, hidden).sample
    loss = F.mse_loss(prediction, target)
    return (loss, noisy, prediction, t) if keep else loss


def _token_setup(m, task, method, tokens):
    pipe = m.pipe
    texts = [s.prompt for s in task.subjects] + [e.text for e in task.action.exemplars]
    new_ids = add_tokens(pipe.tokenizer, pipe.text_encoder, tokens, method.initializer_token, texts)
    rows = TrainableRows(pipe.text_encoder, new_ids)  # the scripts train the whole table, then restore other rows
    return new_ids, rows


def textual_inversion(m, task, method, layers: int = 1):
    """diffusers' textual_inversion.py: VAE encode and text-encoder pass each step, AdamW over the whole
    embedding table, other rows restored after the step. With `layers` > 1, P+'s way: one text-encoder pass
    per layer's prompt."""
    pipe, device = m.pipe, m.device
    tokens = vector_tokens(method.token(task), layers)
    new_ids, rows = _token_setup(m, task, method, tokens)
    if layers > 1:
        route_per_layer(pipe.unet, pipe.tokenizer.model_max_length)
    exemplars = task.action.exemplars
    pixels = _pixels([e.load() for e in exemplars], m.resolution, method.batch_size, device)
    ids = token_ids(pipe.tokenizer, [exemplars[i % len(exemplars)].caption(tokens[0]) for i in range(method.batch_size)], device)
    optimizer = torch.optim.AdamW([rows.weight], lr=method.learning_rate, **method.adam)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def encode_prompts(prompt_ids):
        if layers == 1:
            return pipe.text_encoder(prompt_ids)[0]
        stacked = per_layer_ids(prompt_ids, new_ids)
        return torch.cat([pipe.text_encoder(stacked[:, i])[0] for i in range(layers)], dim=1)

    def step():
        loss = _loss(pipe.unet, scheduler, _encode(pipe, pixels), encode_prompts(ids))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rows.restore()

    return step


def pplus(m, task, method):
    return textual_inversion(m, task, method, layers=len(cross_attention_layers(m.pipe.unet)))


def adi(m, task, method):
    """ADI the plain way: the anchor, context-different and action-different batches each VAE-encoded and
    run through their own forward/backward (per-layer prompts one layer at a time) for their gradients."""
    pipe, device = m.pipe, m.device
    layers = len(cross_attention_layers(pipe.unet))
    tokens = vector_tokens(method.token(task), layers)
    new_ids, rows = _token_setup(m, task, method, tokens)
    route_per_layer(pipe.unet, pipe.tokenizer.model_max_length)
    exemplars, b = task.action.exemplars, method.batch_size
    images = [e.load() for e in exemplars]
    batches = [_pixels(images[k:] + images[:k], m.resolution, b, device) for k in range(3)]  # anchor, context, action
    ids = token_ids(pipe.tokenizer, [exemplars[i % len(exemplars)].caption(tokens[0]) for i in range(b)], device)
    optimizer = torch.optim.AdamW([rows.weight], lr=method.learning_rate, **method.adam)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def gradient(pixels):
        stacked = per_layer_ids(ids, new_ids)
        hidden = torch.cat([pipe.text_encoder(stacked[:, i])[0] for i in range(layers)], dim=1)
        (grad,) = torch.autograd.grad(_loss(pipe.unet, scheduler, _encode(pipe, pixels), hidden), rows.weight)
        return grad[new_ids]

    def step():
        anchor, context, action = (gradient(p) for p in batches)
        mask = adi_mask(anchor, context, action, method.beta, method.merge)
        grad = torch.zeros_like(rows.weight)
        grad[new_ids] = mask * anchor
        rows.weight.grad = grad
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        rows.restore()

    return step


def twinact(m, task, method):
    """TwinAct's generation stage the reference's way: each micro-batch VAE-encoded and its exemplars run
    through the action encoder at every step; MLP -> tokens -> text encoder; LoRA UNet; the similarity term
    on the decoded x̂0 of the late-timestep samples; the same accumulation."""
    pipe, device = m.pipe, m.device
    tokens = vector_tokens(method.token(task), method.num_tokens)
    texts = [s.prompt for s in task.subjects] + [e.text for e in task.action.exemplars]
    new_ids = add_tokens(pipe.tokenizer, pipe.text_encoder, tokens, method.initializer_token, texts)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    bases = torch.linalg.qr(torch.randn(width, method.num_bases, device=device))[0].T.expand(method.num_tokens, -1, -1)
    mean = torch.zeros(method.num_tokens, width, device=device)
    exemplars, b = task.action.exemplars, method.batch_size
    pixels = _pixels([e.load() for e in exemplars], m.resolution, b, device)
    features = method.encoder.encode_pixels(pixels[:1], device).shape[1]
    mlp = ImitationMLP(features, method.mlp_hidden, method.num_tokens, bases.shape[1]).to(device)
    params = list(mlp.parameters()) + add_unet_lora(pipe.unet, method.rank)
    optimizer = torch.optim.AdamW(params, lr=method.learning_rate)
    override = EmbeddingOverride(pipe.text_encoder, new_ids)
    ids = token_ids(pipe.tokenizer, [exemplars[i % len(exemplars)].caption(" ".join(tokens)) for i in range(b)], device)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    late = method.similarity["min_timestep"] * scheduler.config.num_train_timesteps

    def micro_batch():
        with torch.no_grad():
            target = method.encoder.encode_pixels(pixels, device)
        with override(mean + torch.einsum("btr,trw->btw", mlp(target), bases)):
            hidden = pipe.text_encoder(ids)[0]
        loss, noisy, prediction, t = _loss(pipe.unet, scheduler, _encode(pipe, pixels), hidden, keep=True)
        chosen = t > late
        if chosen.any():
            clean = predicted_clean_latents(scheduler, noisy[chosen], prediction[chosen], t[chosen])
            decoded = pipe.vae.decode(clean / pipe.vae.config.scaling_factor).sample
            cosine = (method.encoder.encode_pixels(decoded, device) * target[chosen]).sum(-1)
            loss = loss + method.similarity["weight"] * (1 - cosine).mean()
        (loss / method.accumulation).backward()

    def step():
        for _ in range(method.accumulation):
            micro_batch()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def dreambooth(m, task, method):
    """train_dreambooth(_lora).py and train_custom_diffusion.py: instance and class images VAE-encoded and
    prompts text-encoded every step, one UNet pass over both, gradient clipping."""
    pipe, unet, device = m.pipe, m.pipe.unet, m.device
    prior_images, _ = class_images(m, method.prior.prompt, method.prior.count, method.prior.cache_dir)
    exemplars, b = task.action.exemplars, method.batch_size
    instance = _pixels([e.load() for e in exemplars], m.resolution, b, device)
    prior = _pixels(prior_images, m.resolution, b, device)
    identifier = method.action_text(task)
    custom = hasattr(method, "initializer_token")
    if custom:
        [token_id] = add_tokens(pipe.tokenizer, pipe.text_encoder, [identifier], method.initializer_token, [])
        rows = TrainableRows(pipe.text_encoder, [token_id])
        params = [rows.weight, *custom_diffusion_processors(unet, train_q_out=False)]
    elif method.lora:
        params = add_unet_lora(unet, method.rank)
    else:
        unet.requires_grad_(True)
        params = list(unet.parameters())
    prompts = [exemplars[i % len(exemplars)].caption(identifier) for i in range(b)] + [method.prior.prompt] * b
    ids = token_ids(pipe.tokenizer, prompts, device)
    optimizer = torch.optim.AdamW(params, lr=method.learning_rate)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def step():
        with torch.set_grad_enabled(custom):
            hidden = pipe.text_encoder(ids)[0]
        loss = _loss(unet, scheduler, _encode(pipe, torch.cat([instance, prior])), hidden)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, method.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if custom:
            rows.restore()

    return step


STEPS = {"textual_inversion": textual_inversion, "pplus": pplus, "adi": adi, "twinact": twinact,
         "dreambooth": dreambooth, "dreambooth_lora": dreambooth, "custom_diffusion": dreambooth}
