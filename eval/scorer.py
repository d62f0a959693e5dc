"""What every scorer shares: per-image verdicts from in-memory images, and the loop over generated files."""

from __future__ import annotations

import torch
from PIL import Image
from tqdm.auto import tqdm

from eval.aggregate import aggregate


class Scorer:
    """Judges images of a task: `action_correct`, `subject_correct`, and scorer-specific scores per image."""

    batch_size: int = 32
    measures_nothing: bool = False

    def check(self, task) -> None:
        """Fail now, before expensive work, if this scorer cannot score `task`."""

    def describe(self) -> dict:
        raise NotImplementedError

    def clips(self) -> list:
        """The open_clip models (`actionbench.clip.OpenClip`) this scorer judges with."""
        return []

    def verdicts(self, task, images: list[Image.Image], subjects: list[str], device: torch.device) -> list[dict]:
        """One dict per image; `subjects[i]` names the subject image i was asked to show."""
        raise NotImplementedError

    def summarise(self, rows: list[dict]) -> dict:
        """The record's figures from the per-image rows `score` returned."""
        return aggregate(rows)

    def score(self, task, generated: list, device: torch.device) -> list[dict]:
        """Score generated images (objects with .path and .subject), reading them a batch at a time."""
        results = []
        for start in tqdm(range(0, len(generated), self.batch_size), desc=type(self).__name__, unit="batch"):
            chunk = generated[start : start + self.batch_size]
            images = [Image.open(g.path).convert("RGB") for g in chunk]
            results += self.verdicts(task, images, [g.subject.name for g in chunk], device)
        return results


class ScorerSet(Scorer):
    """Several scorers over the same images: `headline` gives the record's Action / Subject / Total; each
    other's per-image verdicts are kept under its name (`clip.action_correct`), its figures under `beside`."""

    def __init__(self, headline: str, **scorers: Scorer):
        if headline not in scorers:
            raise ValueError(f"headline={headline!r} is none of the scorers {list(scorers)}")
        self.headline, self.scorers = headline, scorers
        self.measures_nothing = scorers[headline].measures_nothing

    def check(self, task) -> None:
        for scorer in self.scorers.values():
            scorer.check(task)

    def describe(self) -> dict:
        info = {"headline": self.headline, **{name: s.describe() for name, s in self.scorers.items()}}
        if self.measures_nothing:  # the headline's note, where a run prints it
            info["note"] = info[self.headline]["note"]
        return info

    def clips(self) -> list:
        return [clip for scorer in self.scorers.values() for clip in scorer.clips()]

    def verdicts(self, task, images, subjects, device) -> list[dict]:
        rows = [{} for _ in images]
        for name, scorer in self.scorers.items():
            for row, verdict in zip(rows, scorer.verdicts(task, images, subjects, device)):
                row.update(verdict if name == self.headline else {f"{name}.{k}": v for k, v in verdict.items()})
        return rows

    def summarise(self, rows: list[dict]) -> dict:
        summary = aggregate(rows)
        summary["beside"] = {}
        for name in self.scorers:
            if name != self.headline:
                prefix = f"{name}."
                summary["beside"][name] = aggregate([{k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
                                                     for r in rows])
        return summary
