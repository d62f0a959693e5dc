"""Exemplar latents encoded once by the VAE and reused every step (the reference scripts re-encode)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def image_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """Resize the short side to `resolution`, centre-crop, scale to [-1, 1] (as diffusers' examples do)."""
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


class ExemplarLatents:
    """The VAE's latent distribution of every exemplar and of its mirror image, computed once.

    `sample` draws from those cached distributions, which is what encoding the (possibly flipped)
    image anew at every step would give, without the per-step VAE encoder pass.
    """

    @torch.no_grad()
    def __init__(self, vae, images: list[Image.Image], resolution: int, mirrored: bool = True, batch_size: int = 8):
        """`mirrored`: also encode each image's mirror image (only needed when training may flip)."""
        pixels = torch.stack([image_tensor(image, resolution) for image in images])
        if mirrored:
            pixels = torch.cat([pixels, pixels.flip(-1)])  # [originals; mirrored]
        self.mean, self.std = latent_distribution(vae, pixels, batch_size)
        self.count, self.mirrored = len(images), mirrored
        self.scaling_factor = vae.config.scaling_factor

    def sample(self, indices: torch.Tensor, flipped: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if flipped.any() and not self.mirrored:
            raise ValueError("mirror images were not encoded (mirrored=False)")
        rows = (indices + self.count * flipped.long()).to(self.mean.device)
        return sample_latents(self.mean[rows], self.std[rows], generator, self.scaling_factor)


@torch.no_grad()
def latent_distribution(vae, pixels: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (fp32) of the VAE's latent distribution of images in [-1, 1]."""
    means, stds = [], []
    for chunk in pixels.split(batch_size):
        dist = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def sample_latents(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator, scaling_factor: float) -> torch.Tensor:
    """A draw from the latent distribution, scaled as the UNet reads latents."""
    noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean.device)
    return (mean + std * noise) * scaling_factor
