"""The world's two tasks on one board: the judges read a copied exemplar look as a leak, the board sets each
method's rows on both tasks side by side (trade-off plot, per-category table, per-task heatmaps and grids),
and ReVersion's step count has a ladder of its own like every other method's."""

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from actionbench import leaderboard
from actionbench.convergence import LADDER, compose_run, faithful_steps, rungs
from actionbench.task import PLACEHOLDER, load_task
from eval import plots
from test_leaderboard import _record
from world import UNNAMED
from world.render import BENCHMARK_ACTIONS, EVAL_SUBJECTS, PUPPET_ACTORS, render
from world.scorer import JudgeScorer

ANIMALS = [s for s in EVAL_SUBJECTS if s.category == "animal" and s.name != "panda"]  # a white-headed panda in yellow reads as the clown


def test_the_unnamed_tasks_texts_are_the_placeholder_alone():
    """No article before it: in the world's captions "a" opens a subject's name, so "a {action}" would hand the
    placeholder a subject's slot and hide the copying the task is there to show (README, "The offline world")."""
    manifest = yaml.safe_load((UNNAMED / "manifest.yaml").read_text())
    texts = {e["text"] for action in manifest["actions"].values() for e in action["exemplars"]}
    assert texts == {PLACEHOLDER}


def test_the_exemplars_look_on_an_evaluation_subject_is_a_leak():
    """Hand-made renders: each animal drawn as itself, then with the puppets' shared body (the unnamed task's
    exemplars' look copied onto it), then the unnamed task's actors themselves."""
    task = load_task("synthetic_unnamed", str(UNNAMED), "squat")
    squat = next(a for a in BENCHMARK_ACTIONS if a.name == "squat")
    yellow = PUPPET_ACTORS[0].look.body
    copied = [dataclasses.replace(s, look=dataclasses.replace(s.look, body=yellow, head=yellow)) for s in ANIMALS]
    drawn = [*ANIMALS, *copied, *PUPPET_ACTORS]
    images = [render(subject, squat, np.random.default_rng([3, i])) for i, subject in enumerate(drawn)]
    asked = [s.name for s in ANIMALS] * 2 + ["cat"] * len(PUPPET_ACTORS)
    verdicts = JudgeScorer().verdicts(task, images, asked, torch.device("cpu"))
    n = len(ANIMALS)
    themselves, in_yellow, actors = verdicts[:n], verdicts[n:2 * n], verdicts[2 * n:]
    assert all(v["subject_correct"] and not v["leak"] for v in themselves)
    assert all(v["action_correct"] for v in themselves + in_yellow), "the pose is read whatever the look"
    assert [v["leak"] for v in in_yellow] == [True] * n and not any(v["subject_correct"] for v in in_yellow)
    assert all(v["leak"] and v["subject_predicted"] == "puppet" for v in actors)


def _two_task_records(root):
    """sd keeps every subject on both tasks; ti copies the exemplars' look onto the animals on the unnamed task."""
    categories = ["human", "animal", "animal", "personality"]
    for task, folder in (("synthetic", root / "a"), ("synthetic_unnamed", root / "b")):
        _record(folder, "sd", "kick", [(False, True)] * 4, leak=[False] * 4, categories=categories, benchmark=task)
        lost = task == "synthetic_unnamed"
        _record(folder, "ti", "kick", [(True, True), (True, not lost), (True, not lost), (False, True)],
                leak=[False, lost, lost, False], categories=categories, benchmark=task)


def test_the_tradeoff_plot_shows_each_method_on_both_tasks(tmp_path, monkeypatch):
    _two_task_records(tmp_path)
    _, board, _, _ = leaderboard.build(tmp_path, resamples=50)
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.setdefault("figure", figure) and path)
    plots.tradeoff_tasks(board, "world", tmp_path / "t.png")
    ax = drawn["figure"].axes[0]
    points = sorted((round(float(c.lines[0].get_xdata()[0]), 1), round(float(c.lines[0].get_ydata()[0]), 1))
                    for c in ax.containers)
    expected = sorted((round(r.Subject, 1), round(r.Action, 1)) for r in board.itertuples())
    assert points == expected and len(points) == 4, "one point per method x task"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["synthetic", "synthetic_unnamed"]
    ti = board[board.method == "ti"].set_index("benchmark")
    assert ti.loc["synthetic_unnamed", "Subject"] == 50.0 < ti.loc["synthetic", "Subject"] == 100.0


def test_the_board_has_per_task_pictures_and_a_per_category_table_with_both_tasks(tmp_path):
    _two_task_records(tmp_path)
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=20"])
    for name in ("synthetic_tasks_tradeoff", "synthetic_synthetic_heatmap", "synthetic_unnamed_synthetic_heatmap",
                 "grids/synthetic_synthetic_kick", "grids/synthetic_unnamed_synthetic_kick"):
        assert (tmp_path / "plots" / f"{name}.png").is_file(), name
    page = (tmp_path / "LEADERBOARD.md").read_text()
    assert "## synthetic / synthetic" in page and "## synthetic_unnamed / synthetic" in page
    table = page.split("## Subject and Leak per subject category")[1]
    rows = {tuple(line.split(" | ")[:2]): line for line in table.splitlines() if line.startswith("| ")}
    assert "Subject human | Subject personality | Subject animal | Leak human" in rows[("| method", "task")]
    assert "| 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] | 0.0 [0.0, 0.0] |" in rows[("| ti", "synthetic_unnamed")]
    assert rows[("| ti", "synthetic_unnamed")].endswith("| 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 100.0 [100.0, 100.0] |")
    assert rows[("| ti", "synthetic")].endswith("| 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] |")
    assert "synthetic_tasks_tradeoff.png" in (tmp_path / "report.html").read_text()
    with Image.open(tmp_path / "plots" / "synthetic_tasks_tradeoff.png") as image:
        assert image.width > 300


def test_a_board_of_one_task_has_no_tasks_plot(tmp_path):
    _record(tmp_path, "sd", "kick", [(True, True)], categories=["human"])
    leaderboard.main([f"results_dir={tmp_path}", "bootstrap=10"])
    assert not list((tmp_path / "plots").glob("*tasks_tradeoff.png"))
    assert "| sd | synthetic | 1 | 100.0" in (tmp_path / "LEADERBOARD.md").read_text()


def test_reversions_ladder_climbs_to_its_own_recipes_step_count_and_the_world_runs_its_tuned_count():
    """`python -m actionbench.convergence methods=[reversion]` judges every rung up to ReVersion's faithful 3,000
    steps; conf/tuning/synthetic_reversion.yaml is where its world count goes, and what a world run uses."""
    assert faithful_steps(["method=reversion"]) == 3000
    assert rungs(LADDER, faithful_steps(["method=reversion"])) == list(LADDER)
    world = compose_run(["method=reversion", "action=salute"])
    assert world.model_name == "synthetic" and world.method.max_train_steps < 3000
    assert compose_run(["method=reversion", "suite=actionbench"]).method.max_train_steps == 3000  # SD 2.1: the recipe
    unnamed = compose_run(["method=reversion", "benchmark=synthetic_unnamed"])
    assert unnamed.method.max_train_steps == world.method.max_train_steps, "the same count on both world tasks"


@pytest.mark.parametrize("task", ["synthetic", "synthetic_unnamed"])
def test_both_world_tasks_run_to_their_own_folders(task):
    cfg = compose_run(["method=sd", "action=kick", f"benchmark={task}"])
    assert cfg.output_dir == f"results/runs/{task}/synthetic/sd/kick/seed0"
