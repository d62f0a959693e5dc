"""Draw prompts through the pipeline call every run makes, and read the draws with the ground-truth judges: the
measuring step shared by the base model's quality card, its training curve and the ControlNet's card."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from actionbench.generate import initial_latents
from methods.base import ActionMethod
from world.judges import Judge, to_pixels

MIN_CONFIDENCE = 0.5  # as the judge scorer: a less confident judge abstains (= wrong)


def generate(model, prompts: list[str], seed: int, batch_size: int, offset: int) -> np.ndarray:
    """uint8 images through the pipeline call every run makes; prompt i's noise depends only on
    (seed, offset + i), the same at every guidance."""
    images = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"guidance {model.guidance_scale}", leave=False):
        chunk = prompts[start : start + batch_size]
        latents = initial_latents(model, [seed * 1_000_003 + offset + start + i for i in range(len(chunk))])
        images += [np.asarray(image) for image in ActionMethod().pipeline_call(model, latents, prompt=chunk)]
    return np.stack(images)


def judged(images: np.ndarray, judges: dict[str, Judge], min_confidence: float,
           device: torch.device = torch.device("cpu")) -> dict[str, np.ndarray]:
    """Each judge's class index per image; -1 where it abstains."""
    result = {}
    for kind, judge in judges.items():
        label, confidence = judge.predict(to_pixels(images), device)
        result[kind] = np.where(confidence.numpy() >= min_confidence, label.numpy(), -1)
    return result
