"""Scoring: aggregation arithmetic, zero-shot verdicts, and clear errors for missing scorer weights."""

import huggingface_hub.constants
import pytest
import torch
from PIL import Image

from actionbench.errors import UserError
from actionbench.generate import GeneratedImage
from eval.aggregate import aggregate
from eval.clip_scorer import ClipScorer, judge
from eval.scorer import Scorer, ScorerSet


def test_aggregate_counts_total_as_both_correct():
    rows = [
        {"action_correct": True, "subject_correct": True, "image_exemplar_cosine": 0.5, "image_subject_cosine": 0.1},
        {"action_correct": True, "subject_correct": False, "image_exemplar_cosine": 0.3, "image_subject_cosine": 0.3},
        {"action_correct": False, "subject_correct": True, "image_exemplar_cosine": 0.1, "image_subject_cosine": 0.2},
        {"action_correct": False, "subject_correct": False, "image_exemplar_cosine": 0.1, "image_subject_cosine": 0.2},
    ]
    summary = aggregate(rows)
    assert (summary["action"], summary["subject"], summary["total"], summary["images"]) == (50.0, 50.0, 25.0, 4)
    assert summary["image_exemplar_cosine"] == pytest.approx(0.25)


def test_leak_is_a_figure_only_where_the_scorer_tells():
    rows = [{"action_correct": True, "subject_correct": False, "leak": True},
            {"action_correct": True, "subject_correct": True, "leak": False}]
    assert aggregate(rows)["leak"] == 50.0
    assert "leak" not in aggregate([{k: v for k, v in r.items() if k != "leak"} for r in rows]), "not a 0"


def test_unknown_pretrained_tag_lists_the_tags():
    with pytest.raises(UserError, match="laion2b_s32b_b79k"):
        ClipScorer("ViT-H-14", "no_such_tag").check()


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty, whatever this machine's holds
    with pytest.raises(UserError, match="could not be found"):
        ClipScorer("ViT-B-32", "openai").check()  # the hub is offline in tests


def test_verdicts_follow_the_nearest_text():
    # 3 subjects, 2 actions, 4-d features: axes 0-2 are subjects, axis 3 the true action.
    eye = torch.eye(4)
    subject_feats = eye[:3]
    action_feats = torch.stack([torch.stack([eye[s] + eye[3], eye[s]]) for s in range(3)])  # action 0 = true
    action_feats = torch.nn.functional.normalize(action_feats, dim=-1)
    exemplar_feats = eye[3:4]
    images = torch.nn.functional.normalize(torch.stack([
        eye[0] + eye[3],  # subject 0 doing the action: both right
        eye[1] + eye[3],  # looks like subject 1 doing the action, but was prompted as subject 2
        eye[2],           # subject 2 without the action
    ]), dim=-1)
    verdicts = judge(images, [0, 2, 2], subject_feats, action_feats, 0, exemplar_feats)
    assert [v["subject_correct"] for v in verdicts] == [True, False, True]
    assert [v["action_correct"] for v in verdicts] == [True, True, False]
    assert verdicts[0]["image_exemplar_cosine"] == pytest.approx(2 ** -0.5)
    assert verdicts[2]["image_subject_cosine"] == pytest.approx(1.0)


def test_tiny_scorer_is_deterministic(mini_task, tmp_path):
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "x.png")
    images = [GeneratedImage(tmp_path / "x.png", mini_task.subjects[0], 0, "", 0)]
    a = ClipScorer("ActionBench-Tiny-CLIP", None).score(mini_task, images, torch.device("cpu"))
    b = ClipScorer("ActionBench-Tiny-CLIP", None).score(mini_task, images, torch.device("cpu"))
    assert a == b


class _Fixed(Scorer):
    """A scorer whose verdicts are given in advance."""

    def __init__(self, verdicts):
        self._verdicts = verdicts

    def describe(self):
        return {"kind": "fixed"}

    def verdicts(self, task, images, subjects, device):
        return self._verdicts[: len(images)]


def test_scorer_set_headlines_one_scorer_and_keeps_the_others_beside_it():
    judges = _Fixed([{"action_correct": True, "subject_correct": True}, {"action_correct": False, "subject_correct": True}])
    clip = _Fixed([{"action_correct": False, "subject_correct": False}, {"action_correct": True, "subject_correct": True}])
    scorers = ScorerSet(headline="judges", judges=judges, clip=clip)
    rows = scorers.verdicts(None, [None, None], ["man", "dog"], torch.device("cpu"))
    assert rows[0] == {"action_correct": True, "subject_correct": True, "clip.action_correct": False,
                       "clip.subject_correct": False}
    summary = scorers.summarise(rows)
    assert (summary["action"], summary["subject"], summary["total"]) == (50.0, 100.0, 50.0)
    assert (summary["beside"]["clip"]["action"], summary["beside"]["clip"]["total"]) == (50.0, 50.0)
    assert scorers.describe() == {"headline": "judges", "judges": {"kind": "fixed"}, "clip": {"kind": "fixed"}}
    with pytest.raises(ValueError, match="headline"):
        ScorerSet(headline="nope", judges=judges)
