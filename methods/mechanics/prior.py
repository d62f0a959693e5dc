"""Prior-preservation images: generated once by the base model per (model, class prompt), cached on disk,
and reused by every action, seed and method that asks for the same prompt (DreamBooth, Custom Diffusion)."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from actionbench.errors import UserError, check_positive
from actionbench.files import write_atomic, write_json
from methods.mechanics.latents import ExemplarLatents
from methods.mechanics.tokens import token_ids


def model_cache(cache_dir: str | Path, model, kind: str) -> Path:
    """`cache_dir/kind/<model>`: what the base model generated, shared by every run on that model."""
    model_key = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model.source}-{model.resolution}px").strip("_")
    return Path(cache_dir).expanduser() / kind / model_key


def cache_folder(cache_dir: str | Path, model, prompt: str) -> Path:
    return model_cache(cache_dir, model, "class_images") / hashlib.sha256(prompt.encode()).hexdigest()[:16]


@torch.no_grad()
def generate_to_files(model, jobs: list[tuple[Path, str, int]], desc: str, batch_size: int = 8) -> None:
    """Generate (path, prompt, seed) jobs with the model's own settings; each PNG written atomically."""
    for start in tqdm(range(0, len(jobs), batch_size), desc=desc, unit="batch", disable=not jobs):
        batch = jobs[start : start + batch_size]
        images = model.pipe(
            prompt=[prompt for _, prompt, _ in batch],
            generator=[torch.Generator().manual_seed(seed) for _, _, seed in batch],
            height=model.resolution,
            width=model.resolution,
            num_inference_steps=model.inference_steps,
            guidance_scale=model.guidance_scale,
        ).images
        for (path, _, _), image in zip(batch, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            write_atomic(path, buffer.getvalue())


def class_images(model, prompt: str, count: int, cache_dir: str | Path) -> tuple[list[Image.Image], int]:
    """The first `count` cached images of `prompt` (image i from seed i), generating only missing ones.

    Returns the images and how many were generated now (0 when the cache already held them all).
    """
    folder = cache_folder(cache_dir, model, prompt)
    paths = [folder / f"{i:04d}.png" for i in range(count)]
    missing = [(path, prompt, i) for i, path in enumerate(paths) if not path.is_file()]
    if missing:
        write_json(folder / "prompt.json", {"prompt": prompt, "model": model.source, "resolution": model.resolution})
    generate_to_files(model, missing, "class images")
    return [Image.open(path).convert("RGB") for path in paths], len(missing)


class PriorPreservation:
    """Class prompt, class images and weight: what DreamBooth and Custom Diffusion share. `flip_p`: probability
    that a class image is drawn mirrored (Custom Diffusion's reference flips class images as it flips instances)."""

    def __init__(self, enabled: bool, class_prompt: str, num_class_images: int, weight: float, cache_dir: str,
                 flip_p: float = 0.0):
        if enabled:
            check_positive("method", num_class_images=num_class_images, prior_loss_weight=weight)
            if not class_prompt or not class_prompt.strip():
                raise UserError("method.class_prompt must be a non-empty prompt when with_prior_preservation is true")
        self.enabled, self.prompt, self.count, self.weight, self.cache_dir = enabled, class_prompt, num_class_images, weight, cache_dir
        self.flip_p = flip_p

    def check_prompt(self, tokenizer) -> None:
        length = len(tokenizer(self.prompt).input_ids)
        if self.enabled and length > tokenizer.model_max_length:
            raise UserError(f"method.class_prompt is {length} tokens; the text encoder reads at most {tokenizer.model_max_length}")

    def prepare(self, model, text_embeds) -> None:
        """Cache the class images' latents and the class prompt's text embedding (nothing when disabled)."""
        self.latents = self.embeds = None
        if self.enabled:
            images, _ = class_images(model, self.prompt, self.count, self.cache_dir)
            # class images are drawn at the model's square: every preprocessing leaves them as they are
            self.latents = ExemplarLatents(model.pipe.vae, images, model.resolution, mirrored=self.flip_p > 0,
                                           preprocess="squash")
            self.embeds = text_embeds([self.prompt]).float()

    def batch(self, size: int, sampler: torch.Generator, generator: torch.Generator):
        """Latents of `size` random class images and their text embeddings; (None, None) when disabled."""
        if self.latents is None:
            return None, None
        index = torch.randint(self.latents.count, (size,), generator=sampler)
        flipped = torch.rand(size, generator=sampler) < self.flip_p if self.flip_p > 0 else torch.zeros(size, dtype=torch.bool)
        latents = self.latents.sample(index, flipped, generator)
        return latents, self.embeds.expand(size, -1, -1)


def text_embedder(pipe):
    """Encode prompts with the (frozen) text encoder, once: the per-step text pass of the reference is not needed."""

    @torch.no_grad()
    def embed(prompts: list[str]) -> torch.Tensor:
        return pipe.text_encoder(token_ids(pipe.tokenizer, prompts, pipe.text_encoder.device))[0]

    return embed
