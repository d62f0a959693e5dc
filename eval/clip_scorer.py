"""Automated judging with open_clip: zero-shot Subject / Action verdicts and similarity scores per image.

- Subject correct: the image is closest to its own subject's prompt among all the task's subjects.
- Action correct: with the subject held fixed, the image is closest to the learned action's description
  among all the benchmark's actions.
- image_exemplar_cosine: mean cosine to the action's exemplar images; image_subject_cosine: cosine to the
  subject prompt.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch

from actionbench.errors import UserError
from eval.scorer import Scorer

CONFIG_DIR = Path(__file__).parent / "clip_configs"  # the project's own open_clip model configs
open_clip.add_model_config(CONFIG_DIR)


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
        self.model_name, self.pretrained = model_name, pretrained
        self.batch_size = batch_size
        self.subject_template, self.action_template = subject_template, action_template
        self.seed = seed
        self._weights: str | None = None
        self._model = None
        self._task_features: dict = {}

    @property
    def measures_nothing(self) -> bool:
        return self.pretrained is None

    def describe(self) -> dict:
        info = {"kind": "open_clip", "model": self.model_name, "pretrained": self.pretrained}
        if self.measures_nothing:
            info["note"] = "random-weight scorer: these scores exercise the code and measure nothing"
        return info

    def check(self, task=None) -> None:
        """Find the weights now, before any expensive work, or fail with one clear message."""
        if self.model_name not in open_clip.list_models():
            raise UserError(f"scorer.model_name={self.model_name!r} is not an open_clip model (e.g. ViT-H-14, ViT-L-14; "
                            "see open_clip.list_models())")
        if self.pretrained is None or Path(self.pretrained).is_file():
            self._weights = self.pretrained
            return
        cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(self.model_name)
            raise UserError(f"scorer.pretrained={self.pretrained!r} is neither a file nor a pretrained tag of "
                            f"{self.model_name}; its tags: {', '.join(tags) or 'none'}")
        try:
            self._weights = open_clip.pretrained.download_pretrained(cfg)
        except Exception as err:  # hub and network errors come in many types; all mean "weights not here"
            raise UserError(f"weights of open_clip {self.model_name}/{self.pretrained} could not be found: "
                            f"{str(err).splitlines()[0]}\nPut them in the Hugging Face cache (HF_HOME), or set "
                            "scorer.pretrained to a local checkpoint file.") from err

    def _load(self, device: torch.device):
        if self._model is None:
            if self._weights is None and not self.measures_nothing:
                self.check()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)  # random-weight scorers are reproducible too
                model, _, preprocess = open_clip.create_model_and_transforms(self.model_name, pretrained=self._weights)
            self._model = model.eval(), preprocess, open_clip.get_tokenizer(self.model_name)
        model, preprocess, tokenizer = self._model
        return model.to(device), preprocess, tokenizer

    def _encode_images(self, model, preprocess, images, device):
        feats = [model.encode_image(torch.stack([preprocess(im) for im in images[i : i + self.batch_size]]).to(device))
                 for i in range(0, len(images), self.batch_size)]
        return torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)

    def _features(self, task, device):
        """Text and exemplar features of a task, computed once per (benchmark, action)."""
        key = (task.benchmark, task.action.name, str(device))
        if key not in self._task_features:
            model, preprocess, tokenizer = self._load(device)

            def encode_texts(texts):
                feats = [model.encode_text(tokenizer(texts[i : i + self.batch_size]).to(device))
                         for i in range(0, len(texts), self.batch_size)]
                return torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)

            subjects, actions = task.subjects, task.actions
            subject_feats = encode_texts([self.subject_template.format(subject=s.prompt) for s in subjects])
            action_feats = encode_texts([self.action_template.format(subject=s.prompt, action=a.description)
                                         for s in subjects for a in actions]).view(len(subjects), len(actions), -1)
            exemplar_feats = self._encode_images(model, preprocess, [e.load() for e in task.action.exemplars], device)
            self._task_features[key] = subject_feats, action_feats, exemplar_feats
        return self._task_features[key]

    @torch.no_grad()
    def verdicts(self, task, images, subjects, device) -> list[dict]:
        subject_feats, action_feats, exemplar_feats = self._features(task, device)
        model, preprocess, _ = self._load(device)
        feats = self._encode_images(model, preprocess, images, device)
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
