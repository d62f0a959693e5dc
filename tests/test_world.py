"""The offline world: a deterministic renderer, a committed task that matches it, and judges that see."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from actionbench.errors import UserError
from actionbench.task import load_task
from world import BENCHMARK, CONTROL, UNNAMED
from world.benchmark import EXEMPLARS_PER_ACTION, TASKS, manifest
from world.judges import Judge, to_pixels
from world.render import (
    ACTIONS,
    BENCHMARK_ACTIONS,
    EVAL_SUBJECTS,
    EXEMPLAR_SUBJECTS,
    KNOWN_ACTIONS,
    PUPPET_ACTORS,
    SUBJECTS,
    background,
    place,
    pose_map,
    random_dataset,
    render,
)
from world.scorer import JudgeScorer


def test_world_has_the_benchmark_shape():
    assert len(EVAL_SUBJECTS) == 23 and len(EXEMPLAR_SUBJECTS) == 3
    assert {s.category for s in EVAL_SUBJECTS} == {"human", "personality", "animal"}
    assert len(KNOWN_ACTIONS) == 8 and len(BENCHMARK_ACTIONS) == 8
    assert len({s.name for s in SUBJECTS}) == len(SUBJECTS) and len({a.name for a in ACTIONS}) == len(ACTIONS)


def test_render_is_deterministic_from_the_seed():
    a = render(SUBJECTS[0], ACTIONS[0], np.random.default_rng(5))
    b = render(SUBJECTS[0], ACTIONS[0], np.random.default_rng(5))
    c = render(SUBJECTS[0], ACTIONS[0], np.random.default_rng(6))
    assert a.size == (32, 32) and a.tobytes() == b.tobytes() != c.tobytes()


def test_a_pose_map_is_its_renders_skeleton_and_nothing_of_the_look():
    robot, cat = (next(s for s in SUBJECTS if s.name == name) for name in ("robot", "cat"))
    for seed, action in enumerate(BENCHMARK_ACTIONS):
        pose = np.asarray(pose_map(action, np.random.default_rng(seed)))
        assert np.array_equal(pose, np.asarray(pose_map(action, np.random.default_rng(seed))))
        assert not np.array_equal(pose, np.asarray(pose_map(action, np.random.default_rng(seed + 100))))
        lit = pose.max(-1) > 128
        assert 15 < lit.sum() < 200 and (pose[pose.max(-1) < 40] < 40).all(), "coloured limbs on black"
        rng = np.random.default_rng(seed)
        place(action, rng)  # the render's rng draws its background right after the placement
        empty = np.asarray(background(rng, 32)).astype(int)
        drawn = [np.asarray(render(subject, action, np.random.default_rng(seed))) for subject in (robot, cat)]
        assert not np.array_equal(*drawn)
        for image in drawn:  # one map for both looks, lying on each figure
            figure = np.abs(image.astype(int) - empty).max(-1) > 20
            assert figure[lit].mean() > 0.8, (action.name, figure[lit].mean())


@pytest.mark.parametrize("folder", [BENCHMARK, UNNAMED, CONTROL], ids=["benchmark", "unnamed", "control"])
def test_committed_task_matches_the_renderer(folder):
    task = TASKS[folder]
    committed = yaml.safe_load((folder / "manifest.yaml").read_text())
    assert committed == manifest(task)
    for a, action in enumerate(task.actions):
        for i in (0, 1, EXEMPLARS_PER_ACTION - 1):
            fresh = render(task.actors[i % 3], action, np.random.default_rng([task.seed, a, i]))
            assert np.array_equal(np.asarray(Image.open(folder / action.name / f"{i:02d}.png")), np.asarray(fresh))
            pose = pose_map(action, np.random.default_rng([task.seed, a, i]))
            assert np.array_equal(np.asarray(Image.open(folder / action.name / "pose" / f"{i:02d}.png")), np.asarray(pose))


def test_the_control_split_is_the_known_actions_by_the_exemplar_subjects():
    from conftest import compose_config

    cfg = compose_config(["benchmark=synthetic_control", "action=wave", "method=sd"])
    assert cfg.benchmark.name == "synthetic_control"
    task = load_task("synthetic_control", str(CONTROL), "wave")
    assert [a.name for a in task.actions] == [a.name for a in KNOWN_ACTIONS] and len(task.subjects) == 23
    assert len(task.action.exemplars) == 10 and task.action.description == "waving"
    exemplar_prompts = {s.prompt for s in EXEMPLAR_SUBJECTS}
    assert all(e.caption("<w>").removesuffix(" <w>") in exemplar_prompts for e in task.action.exemplars)
    with pytest.raises(UserError, match="stand, walk, run"):
        load_task("synthetic_control", str(CONTROL), "salute")


def test_synthetic_benchmark_loads_through_the_same_loader():
    task = load_task("synthetic", str(BENCHMARK), "kick")
    assert len(task.action.exemplars) == 10 and len(task.subjects) == 23 and len(task.actions) == 8
    assert task.action.exemplars[0].caption("<kick>") == "a yellow puppet <kick>"
    with pytest.raises(UserError, match="salute, point, raise_hand"):
        load_task("synthetic", str(BENCHMARK), "moonwalk")


def test_the_unnamed_task_is_synthetic_drawn_by_puppets_its_texts_do_not_name():
    from conftest import compose_config

    cfg = compose_config(["benchmark=synthetic_unnamed", "action=kick", "method=sd"])
    assert cfg.benchmark.name == "synthetic_unnamed"
    task = load_task("synthetic_unnamed", str(UNNAMED), "kick")
    plain = load_task("synthetic", str(BENCHMARK), "kick")
    assert [a.name for a in task.actions] == [a.name for a in BENCHMARK_ACTIONS] and task.subjects == plain.subjects
    assert len(task.action.exemplars) == 10 and {e.caption("<w>") for e in task.action.exemplars} == {"<w>"}
    for mine, theirs in zip(task.action.exemplars, plain.action.exemplars):  # the same poses; other actors
        assert np.array_equal(np.asarray(Image.open(mine.pose)), np.asarray(Image.open(theirs.pose)))
        assert not np.array_equal(np.asarray(Image.open(mine.image)), np.asarray(Image.open(theirs.image)))
    # several actors sharing the puppet's body, none an evaluation subject; the judge reads every exemplar as
    # the puppet, so a copy of what they share is a Leak
    assert len({a.look for a in PUPPET_ACTORS}) == 3 and {a.look.body for a in PUPPET_ACTORS} == {EXEMPLAR_SUBJECTS[0].look.body}
    assert not {a.look.body for a in PUPPET_ACTORS} & {s.look.body for s in EVAL_SUBJECTS}
    exemplars = [e.load() for name in ("salute", "handstand") for e in load_task("synthetic_unnamed", str(UNNAMED), name).action.exemplars]
    predicted, _ = Judge.load("subject").predict(to_pixels(exemplars))
    assert {Judge.load("subject").classes[p] for p in predicted.tolist()} == {"puppet"}


@pytest.mark.parametrize("kind", ["action", "subject"])
def test_judges_read_fresh_renders(kind):
    images, subjects, actions = random_dataset(600, seed=987_654)
    truth = torch.from_numpy(actions if kind == "action" else subjects)
    predicted, _ = Judge.load(kind).predict(to_pixels(images))
    accuracy = (predicted == truth).float().mean().item()
    assert accuracy >= 0.95, f"{kind} judge: {accuracy:.3f}"  # the full check (>= 98%) is in weights/judges.md


def test_judge_scorer_abstains_below_its_confidence(monkeypatch):
    task = load_task("synthetic", str(BENCHMARK), "squat")
    images = [render(EVAL_SUBJECTS[3], BENCHMARK_ACTIONS[6], np.random.default_rng(i)) for i in range(4)]
    sure = JudgeScorer().verdicts(task, images, ["girl"] * 4, torch.device("cpu"))
    assert all(v["action_correct"] and v["subject_correct"] for v in sure)

    def hesitant(self, pixels, device=None):  # the right label, but at probability 0.4
        truth = self.classes.index("squat" if self.kind == "action" else "girl")
        return torch.full((len(pixels),), truth), torch.full((len(pixels),), 0.4)

    monkeypatch.setattr(Judge, "predict", hesitant)
    unsure = JudgeScorer(min_confidence=0.5).verdicts(task, images, ["girl"] * 4, torch.device("cpu"))
    assert not any(v["action_correct"] or v["subject_correct"] for v in unsure), "an abstention counts as wrong"
    assert all(v["action_predicted"] is None and v["subject_predicted"] is None for v in unsure)
    lenient = JudgeScorer(min_confidence=0.3).verdicts(task, images, ["girl"] * 4, torch.device("cpu"))
    assert all(v["action_correct"] and v["subject_correct"] for v in lenient)


def test_judge_scorer_flags_the_exemplars_look_as_a_leak():
    task = load_task("synthetic", str(BENCHMARK), "salute")
    drawn = [*EXEMPLAR_SUBJECTS, EVAL_SUBJECTS[0], EVAL_SUBJECTS[-1]]  # the exemplars' subjects, then two evaluated
    images = [render(subject, BENCHMARK_ACTIONS[0], np.random.default_rng(i)) for i, subject in enumerate(drawn)]
    verdicts = JudgeScorer().verdicts(task, images, [EVAL_SUBJECTS[0].name] * len(images), torch.device("cpu"))
    assert [v["leak"] for v in verdicts] == [True, True, True, False, False]
    assert JudgeScorer().summarise(verdicts)["leak"] == pytest.approx(60.0)


def test_judge_scorer_refuses_tasks_outside_the_world(mini_task):
    with pytest.raises(UserError, match="benchmark=synthetic"):
        JudgeScorer().check(mini_task)


def test_world_clip_has_real_weights_that_see_the_world():
    """Through the same ClipScorer real runs use; chance is 1/23 (subject) and 1/8 (action)."""
    from world import WEIGHTS
    from world.clip import MODEL_NAME, WEIGHTS_FILE
    from eval.clip_scorer import ClipScorer

    scorer = ClipScorer(MODEL_NAME, str(WEIGHTS / WEIGHTS_FILE))
    right = {"action": 0, "subject": 0}
    for a, action in enumerate(BENCHMARK_ACTIONS):
        task = load_task("synthetic", str(BENCHMARK), action.name)
        subjects = [EVAL_SUBJECTS[(a * 5 + i) % 23] for i in range(12)]
        images = [render(s, action, np.random.default_rng([31, a, i])) for i, s in enumerate(subjects)]
        for v in scorer.verdicts(task, images, [s.name for s in subjects], torch.device("cpu")):
            right["action"] += v["action_correct"]
            right["subject"] += v["subject_correct"]
    n = 12 * len(BENCHMARK_ACTIONS)
    assert right["subject"] / n >= 0.9 and right["action"] / n >= 0.5, right
