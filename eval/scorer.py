"""What every scorer shares: per-image verdicts from in-memory images, and the loop over generated files."""

from __future__ import annotations

import torch
from PIL import Image
from tqdm.auto import tqdm


class Scorer:
    """Judges images of a task: `action_correct`, `subject_correct`, and scorer-specific scores per image."""

    batch_size: int = 32
    measures_nothing: bool = False

    def check(self, task) -> None:
        """Fail now, before expensive work, if this scorer cannot score `task`."""

    def describe(self) -> dict:
        raise NotImplementedError

    def verdicts(self, task, images: list[Image.Image], subjects: list[str], device: torch.device) -> list[dict]:
        """One dict per image; `subjects[i]` names the subject image i was asked to show."""
        raise NotImplementedError

    def score(self, task, generated: list, device: torch.device) -> list[dict]:
        """Score generated images (objects with .path and .subject), reading them a batch at a time."""
        results = []
        for start in tqdm(range(0, len(generated), self.batch_size), desc=type(self).__name__, unit="batch"):
            chunk = generated[start : start + self.batch_size]
            images = [Image.open(g.path).convert("RGB") for g in chunk]
            results += self.verdicts(task, images, [g.subject.name for g in chunk], device)
        return results
