"""Automated judging with open_clip: zero-shot Subject / Action verdicts and similarity scores per image.

- Subject correct: the image is closest to its own subject's prompt among all the task's subjects.
- Action correct: with the subject held fixed, the image is closest to the learned action's description
  among all the benchmark's actions.
- image_exemplar_cosine: mean cosine to the action's exemplar images; image_subject_cosine: cosine to the
  subject prompt.
"""

from __future__ import annotations

import torch

from actionbench.clip import OpenClip
from eval.scorer import Scorer


class ClipScorer(Scorer):
    def __init__(
        self,
        model_name: str,
        pretrained: str | None,
        batch_size: int = 32,
        subject_template: str = "a photo of {subject}",
        action_template: str = "a photo of {subject} {action}",
        seed: int = 0,
    ):
        """`pretrained`: an open_clip tag, a checkpoint file, or null for random weights (measure nothing)."""
        self.clip = OpenClip(model_name, pretrained, key="scorer", seed=seed)
        self.batch_size = batch_size
        self.subject_template, self.action_template = subject_template, action_template
        self._task_features: dict = {}

    @property
    def measures_nothing(self) -> bool:
        return self.clip.random_weights

    def describe(self) -> dict:
        info = self.clip.describe()
        if self.measures_nothing:
            info["note"] = "random-weight scorer: these scores exercise the code and measure nothing"
        return info

    def clips(self) -> list:
        return [self.clip]

    def check(self, task=None) -> None:
        """Find the weights now, before any expensive work, or fail with one clear message."""
        self.clip.check()

    def _features(self, task, device):
        """Text and exemplar features of a task, computed once per (benchmark, action)."""
        key = (task.benchmark, task.action.name, str(device))
        if key not in self._task_features:
            subjects, actions, size = task.subjects, task.actions, self.batch_size
            subject_feats = self.clip.encode_texts([self.subject_template.format(subject=s.prompt) for s in subjects],
                                                   device, size)
            action_feats = self.clip.encode_texts([self.action_template.format(subject=s.prompt, action=a.description)
                                                   for s in subjects for a in actions], device, size)
            exemplar_feats = self.clip.encode_images([e.load() for e in task.action.exemplars], device, size)
            self._task_features[key] = subject_feats, action_feats.view(len(subjects), len(actions), -1), exemplar_feats
        return self._task_features[key]

    @torch.no_grad()
    def verdicts(self, task, images, subjects, device) -> list[dict]:
        subject_feats, action_feats, exemplar_feats = self._features(task, device)
        feats = self.clip.encode_images(images, device, self.batch_size)
        subject_index = {s.name: i for i, s in enumerate(task.subjects)}
        true_action = [a.name for a in task.actions].index(task.action.name)
        return judge(feats, [subject_index[s] for s in subjects], subject_feats, action_feats, true_action, exemplar_feats)


def judge(image_feats, subject_rows, subject_feats, action_feats, true_action: int, exemplar_feats) -> list[dict]:
    """Verdicts and similarities from unit-norm features.

    image_feats (n, d); subject_rows: each image's subject index; subject_feats (S, d);
    action_feats (S, A, d): the action texts for each subject; exemplar_feats (E, d).
    """
    results = []
    for feat, s in zip(image_feats, subject_rows):
        results.append({
            "subject_correct": bool((subject_feats @ feat).argmax() == s),
            "action_correct": bool((action_feats[s] @ feat).argmax() == true_action),
            "image_exemplar_cosine": float((exemplar_feats @ feat).mean()),
            "image_subject_cosine": float(subject_feats[s] @ feat),
        })
    return results
