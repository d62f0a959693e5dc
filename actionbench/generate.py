"""Batched generation with paired seeds: every method starts each (action, sample) from the same noise.

The initial latent depends only on (seed, action, sample index), never on the method or the subject,
so images differ across methods and subjects only through what the prompt conditions.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from actionbench.files import write_atomic, write_json
from actionbench.models import TextToImageModel
from actionbench.task import ActionTask, Subject


def _already_drawn(job, seed: int, meta: dict) -> bool:
    try:
        sidecar = json.loads(job.path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False
    same = {"prompt": job.prompt, "noise_seed": job.noise_seed, "seed": seed, **meta}
    return job.path.is_file() and all(sidecar.get(k) == v for k, v in same.items())


@dataclass(frozen=True)
class GeneratedImage:
    path: Path
    subject: Subject
    sample: int
    prompt: str
    noise_seed: int


def noise_seed(seed: int, action: str, sample: int) -> int:
    """A stable 63-bit seed for one (seed, action, sample): the same on every machine and Python."""
    digest = hashlib.sha256(f"{seed}/{action}/{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def initial_latents(model: TextToImageModel, seeds: list[int]) -> torch.Tensor:
    """Draw each image's starting noise on the CPU from its own seed, so it is device-independent."""
    pipe = model.pipe
    size = model.resolution // pipe.vae_scale_factor
    shape = (pipe.unet.config.in_channels, size, size)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(noise).to(model.device, pipe.unet.dtype)


def generate_images(
    method,
    model: TextToImageModel,
    task: ActionTask,
    seed: int,
    samples_per_subject: int,
    batch_size: int,
    out_dir: Path,
    meta: dict,
    reuse: bool = False,
) -> list[GeneratedImage]:
    """Generate every (subject, sample) of the task; write `{subject}_{sample}.png` and a JSON sidecar.

    With `reuse`, an image already on disk whose sidecar records the same prompt, noise and `meta` (the run's
    work digest) is kept rather than drawn again: an interrupted run only draws what it had not.
    """
    identifier = method.action_text(task)
    jobs = [
        GeneratedImage(
            Path(out_dir) / f"{subject.name}_{sample}.png",
            subject,
            sample,
            task.prompt(subject, identifier),
            noise_seed(seed, task.action.name, sample),
        )
        for subject in task.subjects
        for sample in range(samples_per_subject)
    ]
    todo = [job for job in jobs if not (reuse and _already_drawn(job, seed, meta))]
    for start in tqdm(range(0, len(todo), batch_size), desc="generate", unit="batch"):
        batch = todo[start : start + batch_size]
        latents = initial_latents(model, [job.noise_seed for job in batch])
        images = method.generate(model, [job.prompt for job in batch], latents, [job.sample for job in batch])
        for job, image in zip(batch, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            write_atomic(job.path, buffer.getvalue())
            sidecar = {"prompt": job.prompt, "noise_seed": job.noise_seed, "seed": seed, "action": task.action.name,
                       "subject": job.subject.name, "category": job.subject.category, "sample": job.sample, **meta}
            write_json(job.path.with_suffix(".json"), sidecar)
    return jobs


def keep_scores(images: list[GeneratedImage], scores: list[dict]) -> None:
    """Add each image's scores (verdicts, similarities, P(yes), whatever the scorer gave) to its sidecar under
    "scores", replacing those of an earlier scoring: the image's file pair then says how it was judged."""
    for image, row in zip(images, scores, strict=True):
        path = image.path.with_suffix(".json")
        write_json(path, {**json.loads(path.read_text()), "scores": row})
