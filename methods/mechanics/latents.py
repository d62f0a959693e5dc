"""Exemplar images made square, and their latents encoded once by the VAE and reused every step (the reference
scripts re-encode)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# How an exemplar becomes the model's square, as each method's reference prepares it (docs/methods.md):
# squash: the whole image resized to the square, aspect ignored (diffusers' Textual Inversion example, ReVersion,
#   Custom Diffusion); nothing is cut off, so a raised hand or a kicking foot stays in the picture
# centre_crop: the short side resized to the square's side, the long side's middle kept
# random_crop: the same resize, a random square of the long side at every draw (DreamBooth, TwinAct)
PREPROCESS = ("squash", "centre_crop", "random_crop")


def resize_short_side(image: Image.Image, resolution: int) -> Image.Image:
    w, h = image.size
    scale = resolution / min(w, h)
    return image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, h, w) in [-1, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def image_tensor(image: Image.Image, resolution: int, preprocess: str) -> torch.Tensor:
    """The image as the model's square in [-1, 1], by `preprocess` (bicubic resampling); `random_crop` gives the
    centre square here (the cached, deterministic view; `ExemplarLatents` draws the random ones)."""
    if preprocess == "squash":
        return to_tensor(image.resize((resolution, resolution), Image.BICUBIC))
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess={preprocess!r}: one of {', '.join(PREPROCESS)}")
    resized = to_tensor(resize_short_side(image, resolution))
    top, left = (resized.shape[1] - resolution) // 2, (resized.shape[2] - resolution) // 2
    return resized[:, top : top + resolution, left : left + resolution]


class ExemplarLatents:
    """The VAE's latent distribution of every exemplar and of its mirror image, computed once.

    `sample` draws from those cached distributions, which is what encoding the (possibly flipped)
    image anew at every step would give, without the per-step VAE encoder pass. With `preprocess=random_crop`
    an exemplar that is not square after its short side is resized is cropped at a random place and encoded
    anew at every draw, as the reference does (its offsets come from the draw's generator; a set of square
    exemplars draws nothing more from it).
    """

    @torch.no_grad()
    def __init__(self, vae, images: list[Image.Image], resolution: int, mirrored: bool = True, batch_size: int = 8, *,
                 preprocess: str):
        """`mirrored`: also encode each image's mirror image (only needed when training may flip); `preprocess`:
        how each image becomes the model's square (`PREPROCESS`)."""
        pixels = torch.stack([image_tensor(image, resolution, preprocess) for image in images])
        if mirrored:
            pixels = torch.cat([pixels, pixels.flip(-1)])  # [originals; mirrored]
        self.pixels = pixels  # the cached views, in [-1, 1]
        self.mean, self.std = latent_distribution(vae, pixels, batch_size)
        self.count, self.mirrored = len(images), mirrored
        self.vae, self.resolution, self.scaling_factor = vae, resolution, vae.config.scaling_factor
        resized = [resize_short_side(image, resolution) for image in images] if preprocess == "random_crop" else []
        self.uncropped = {i: to_tensor(image) for i, image in enumerate(resized) if image.size != (resolution, resolution)}

    def sample(self, indices: torch.Tensor, flipped: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.batch(indices, flipped, generator)[0]

    @torch.no_grad()
    def batch(self, indices: torch.Tensor, flipped: torch.Tensor, generator: torch.Generator):
        """(latents, the pixels in [-1, 1] they were drawn from) of exemplars `indices`, mirrored where `flipped`."""
        if flipped.any() and not self.mirrored:
            raise ValueError("mirror images were not encoded (mirrored=False)")
        rows = indices + self.count * flipped.long()
        mean, std = self.mean[rows.to(self.mean.device)], self.std[rows.to(self.std.device)]
        pixels = self.pixels[rows]
        fresh = [k for k, i in enumerate(indices.tolist()) if i in self.uncropped]
        if fresh:
            size, crops = self.resolution, []
            for k in fresh:
                full = self.uncropped[int(indices[k])]
                top, left = (int(torch.randint(full.shape[d] - size + 1, (1,), generator=generator, device=generator.device))
                             for d in (1, 2))
                crop = full[:, top : top + size, left : left + size]
                crops.append(crop.flip(-1) if flipped[k] else crop)
            crops = torch.stack(crops)
            crop_mean, crop_std = latent_distribution(self.vae, crops)
            mean, std, pixels = mean.clone(), std.clone(), pixels.clone()
            mean[fresh], std[fresh], pixels[fresh] = crop_mean.to(mean.device), crop_std.to(std.device), crops
        return sample_latents(mean, std, generator, self.scaling_factor), pixels


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
