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

from actionbench.files import write_atomic, write_json


def cache_folder(cache_dir: str | Path, model, prompt: str) -> Path:
    model_key = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model.source}-{model.resolution}px").strip("_")
    prompt_key = hashlib.sha256(prompt.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / "class_images" / model_key / prompt_key


@torch.no_grad()
def class_images(model, prompt: str, count: int, cache_dir: str | Path, batch_size: int = 8) -> tuple[list[Image.Image], int]:
    """The first `count` cached images of `prompt` (image i from seed i), generating only missing ones.

    Returns the images and how many were generated now (0 when the cache already held them all).
    """
    folder = cache_folder(cache_dir, model, prompt)
    paths = [folder / f"{i:04d}.png" for i in range(count)]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if missing:
        write_json(folder / "prompt.json", {"prompt": prompt, "model": model.source, "resolution": model.resolution})
    for start in tqdm(range(0, len(missing), batch_size), desc="class images", unit="batch", disable=not missing):
        batch = missing[start : start + batch_size]
        images = model.pipe(
            prompt=[prompt] * len(batch),
            generator=[torch.Generator().manual_seed(i) for i in batch],
            height=model.resolution,
            width=model.resolution,
            num_inference_steps=model.inference_steps,
            guidance_scale=model.guidance_scale,
        ).images
        for i, image in zip(batch, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            write_atomic(paths[i], buffer.getvalue())
    return [Image.open(path).convert("RGB") for path in paths], len(missing)
