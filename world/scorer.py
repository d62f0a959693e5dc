"""The offline world's ground-truth judges as a scorer: Action / Subject / Total exactly as ActionBench
defines them, with an abstention when a judge is unsure (an unreadable image counts as wrong); and Leak, the
subject judge reading one of the exemplar-only subjects: the method copied the exemplars' look."""

from __future__ import annotations

import torch

from actionbench.errors import UserError
from world import WEIGHTS
from world.judges import Judge, to_pixels
from world.render import EXEMPLAR_SUBJECTS
from eval.scorer import Scorer

EXEMPLAR_ONLY = frozenset(s.name for s in EXEMPLAR_SUBJECTS)  # they draw the exemplars and are never evaluated


class JudgeScorer(Scorer):
    def __init__(self, weights_dir: str | None = None, min_confidence: float = 0.5, batch_size: int = 256):
        """`min_confidence`: below this top probability a judge abstains, and the verdict is 'wrong'."""
        if not 0.0 <= min_confidence < 1.0:
            raise UserError(f"scorer.min_confidence={min_confidence!r} must lie in [0, 1)")
        self.weights_dir = weights_dir or str(WEIGHTS)
        self.min_confidence = min_confidence
        self.batch_size = batch_size
        self._judges: dict[str, Judge] = {}

    def describe(self) -> dict:
        return {"kind": "world_judges", "weights": self.weights_dir, "min_confidence": self.min_confidence}

    def judges(self) -> dict[str, Judge]:
        if not self._judges:
            self._judges = {kind: Judge.load(kind, self.weights_dir) for kind in ("action", "subject")}
        return self._judges

    def check(self, task) -> None:
        judges = self.judges()
        unknown = [s.name for s in task.subjects if s.name not in judges["subject"].classes]
        unknown += [a.name for a in task.actions if a.name not in judges["action"].classes]
        if unknown:
            raise UserError(f"the world's judges know only the offline world's subjects and actions, not {unknown[:5]}; "
                            "use them with benchmark=synthetic")

    @torch.no_grad()
    def verdicts(self, task, images, subjects, device) -> list[dict]:
        pixels = to_pixels(images)
        rows = [{} for _ in images]
        for kind, truths in (("action", [task.action.name] * len(images)), ("subject", subjects)):
            judge = self.judges()[kind]
            labels, confidences = judge.predict(pixels, device)
            for row, truth, label, confidence in zip(rows, truths, labels.tolist(), confidences.tolist()):
                abstained = confidence < self.min_confidence
                row[f"{kind}_correct"] = not abstained and judge.classes[label] == truth
                row[f"{kind}_predicted"] = None if abstained else judge.classes[label]
                row[f"{kind}_confidence"] = confidence
        for row in rows:  # an abstention reads no subject, so it is no leak either
            row["leak"] = row["subject_predicted"] in EXEMPLAR_ONLY
        return rows
