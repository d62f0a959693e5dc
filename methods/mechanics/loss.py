"""The denoising objective every method trains with."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def draw_timesteps(scheduler, count: int, generator, density: torch.Tensor | None = None) -> torch.Tensor:
    """`count` training timesteps from `generator`: uniform over the schedule's, or, with `density` (one weight
    per timestep, any positive scale), drawn with replacement in proportion to it (ReVersion's focal sampling)."""
    if density is None:
        return torch.randint(0, scheduler.config.num_train_timesteps, (count,), generator=generator, device=generator.device)
    if density.shape != (scheduler.config.num_train_timesteps,):
        raise ValueError(f"a timestep density needs {scheduler.config.num_train_timesteps} weights, got {tuple(density.shape)}")
    return torch.multinomial(density.to(generator.device, torch.float64), count, replacement=True, generator=generator)


def denoising_prediction(unet, scheduler, latents, encoder_hidden_states, generator, repeats: int = 1,
                         timestep_density: torch.Tensor | None = None):
    """Noise the latents at random timesteps and predict: (prediction, target, noisy latents, timesteps).

    The target is the noise, or the velocity for v-prediction models. Noise and timesteps come from
    `generator`, so a seeded run is reproducible. With `repeats` = r, the batch is r blocks whose k-th samples
    share noise and timestep (ADI compares gradients of samples that differ only in the image).
    Timesteps are uniform, or follow `timestep_density` (see `draw_timesteps`).
    """
    draws = latents.shape[0] // repeats
    noise = torch.randn((draws, *latents.shape[1:]), generator=generator, device=generator.device).to(latents)
    timesteps = draw_timesteps(scheduler, draws, generator, timestep_density).to(latents.device)
    noise, timesteps = noise.repeat(repeats, 1, 1, 1), timesteps.repeat(repeats)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}")
    unet_dtype = next(unet.parameters()).dtype
    prediction = unet(noisy.to(unet_dtype), timesteps, encoder_hidden_states.to(unet_dtype)).sample
    return prediction.float(), target.float(), noisy, timesteps


def predicted_clean_latents(scheduler, noisy, prediction, timesteps):
    """x̂0, the clean latents the prediction implies at these timesteps (epsilon or v-prediction)."""
    alpha = scheduler.alphas_cumprod.to(noisy.device)[timesteps].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - scheduler.alphas_cumprod.to(noisy.device)[timesteps]).sqrt().view(-1, 1, 1, 1)
    if scheduler.config.prediction_type == "v_prediction":
        return alpha * noisy - sigma * prediction
    return (noisy - sigma * prediction) / alpha


def masked_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per sample, the mean of `loss` (batch, channels, h, w) over the elements where `mask` (batch, 1, h, w) is 1;
    over all elements without a mask."""
    if mask is None:
        return loss.mean(dim=(1, 2, 3))
    mask = mask.to(loss).expand_as(loss)
    return (loss * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))


def noise_prediction_loss(unet, scheduler, latents, encoder_hidden_states, generator, reduction: str = "mean",
                          repeats: int = 1, mask: torch.Tensor | None = None, timestep_density: torch.Tensor | None = None):
    """MSE between the UNet's prediction and its target (see `denoising_prediction`); `reduction="none"`
    gives one loss per sample. With `mask` (batch, 1, h, w), each sample's loss is its mean over the valid region;
    `timestep_density`: see `draw_timesteps`."""
    prediction, target, _, _ = denoising_prediction(unet, scheduler, latents, encoder_hidden_states, generator, repeats,
                                                    timestep_density)
    loss = masked_mean(F.mse_loss(prediction, target, reduction="none"), mask)
    return loss.mean() if reduction == "mean" else loss


def instance_and_prior_loss(unet, scheduler, instance_latents, instance_hidden, prior_latents, prior_hidden, generator,
                            prior_weight: float, instance_mask: torch.Tensor | None = None):
    """DreamBooth's objective: the instance loss plus `prior_weight` x the loss on the base model's own class
    images (prior preservation), in one batched UNet pass. Without prior latents it is the instance loss.
    `instance_mask` (batch, 1, h, w): each instance sample counts only its valid region (Custom Diffusion)."""
    if prior_latents is None:
        return noise_prediction_loss(unet, scheduler, instance_latents, instance_hidden, generator, mask=instance_mask)
    mask = None if instance_mask is None else torch.cat([instance_mask, torch.ones_like(prior_latents[:, :1])])
    per_sample = noise_prediction_loss(unet, scheduler, torch.cat([instance_latents, prior_latents]),
                                       torch.cat([instance_hidden, prior_hidden]), generator, reduction="none", mask=mask)
    n = instance_latents.shape[0]
    return per_sample[:n].mean() + prior_weight * per_sample[n:].mean()
