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
from PIL import Image
from tqdm.auto import tqdm

from actionbench.errors import UserError

CONFIG_DIR = Path(__file__).parent / "clip_configs"  # the project's own open_clip model configs
open_clip.add_model_config(CONFIG_DIR)


class ClipScorer:
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

    @property
    def measures_nothing(self) -> bool:
        return self.pretrained is None

    def describe(self) -> dict:
        info = {"kind": "open_clip", "model": self.model_name, "pretrained": self.pretrained}
        if self.measures_nothing:
            info["note"] = "random-weight scorer: these scores exercise the code and measure nothing"
        return info

    def check(self) -> None:
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
        if self._weights is None and not self.measures_nothing:
            self.check()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # random-weight scorers are reproducible too
            model, _, preprocess = open_clip.create_model_and_transforms(self.model_name, pretrained=self._weights)
        return model.to(device).eval(), preprocess, open_clip.get_tokenizer(self.model_name)

    @torch.no_grad()
    def score(self, task, images: list, device: torch.device) -> list[dict]:
        """Score generated images (objects with .path, .subject) against the task; one dict per image."""
        model, preprocess, tokenizer = self._load(device)

        def encode_images(pil_images):
            feats = [model.encode_image(torch.stack([preprocess(im) for im in chunk]).to(device))
                     for chunk in _chunks(pil_images, self.batch_size)]
            return torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)

        def encode_texts(texts):
            feats = [model.encode_text(tokenizer(chunk).to(device)) for chunk in _chunks(texts, self.batch_size)]
            return torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)

        subjects, actions = task.subjects, task.actions
        subject_feats = encode_texts([self.subject_template.format(subject=s.prompt) for s in subjects])
        action_texts = [self.action_template.format(subject=s.prompt, action=a.description) for s in subjects for a in actions]
        action_feats = encode_texts(action_texts).view(len(subjects), len(actions), -1)
        exemplar_feats = encode_images([e.load() for e in task.action.exemplars])
        true_action = next(i for i, a in enumerate(actions) if a.name == task.action.name)
        subject_index = {s.name: i for i, s in enumerate(subjects)}

        results = []
        for chunk in tqdm(list(_chunks(images, self.batch_size)), desc="score", unit="batch"):
            feats = encode_images([Image.open(img.path).convert("RGB") for img in chunk])
            rows = [subject_index[img.subject.name] for img in chunk]
            results += judge(feats, rows, subject_feats, action_feats, true_action, exemplar_feats)
        return results


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


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
