"""The world board's records are committed (results/world/runs/: records and image sidecars, no images or
artifacts), so a sweep resumes from a clean clone wherever it lies, and the committed board rebuilds from them."""

import io
import json
import shutil
import subprocess

import pandas as pd

from conftest import REPO, compose_config

import world
from actionbench import convergence, leaderboard
from actionbench.run import resolved_config, run
from methods.textual_inversion import TextualInversion


def test_a_world_config_holds_no_path_of_this_clone():
    config = json.dumps(resolved_config(convergence.compose_run(["method=twinact"])))
    assert str(world.WORLD) not in config
    assert '"<world>/benchmark"' in config and '"<world>/model"' in config


def test_a_sweep_resumed_from_committed_records_trains_nothing_already_recorded(mini_root, tmp_path, monkeypatch, capsys):
    """A run in one clone, then only what git keeps of its folder (record and sidecars) in another clone at
    another path: the run there is skipped, nothing trained or drawn."""
    runs = "results/world/runs/mini"
    overrides = ["method=textual_inversion", "suite=actionbench", "model=tiny", f"benchmark.root={mini_root}",
                 "method.max_train_steps=2", f"output_dir={runs}/ti/salute/seed0", "cache_dir=results/cache"]
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    monkeypatch.chdir(first)
    record = run(compose_config(overrides))
    kept = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin", "-v", "-n"],
                          input="\n".join(f"results/world/runs/mini/ti/salute/seed0/{p.relative_to(first / runs / 'ti/salute/seed0')}"
                                          for p in (first / runs).rglob("*") if p.is_file()),
                          capture_output=True, text=True).stdout.splitlines()
    committed = [line.split("\t")[1] for line in kept if line.startswith("::")]  # not ignored: git keeps them
    assert sorted(p.rsplit("/", 1)[-1] for p in committed if "/images/" not in p) == ["record.json"]
    assert {p.rsplit(".", 1)[-1] for p in committed if "/images/" in p} == {"json"}, "sidecars, no images"
    for path in committed:
        (second / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first / path, second / path)
    monkeypatch.chdir(second)
    monkeypatch.setattr(TextualInversion, "train", lambda *args: (_ for _ in ()).throw(AssertionError("trained again")))
    capsys.readouterr()
    assert run(compose_config(overrides)) == json.loads((first / runs / "ti/salute/seed0/record.json").read_text())
    assert "skipped" in capsys.readouterr().out
    assert record["aggregates"]["images"] == 46


def test_the_committed_world_board_is_what_its_committed_records_make():
    """Fails when either is stale: the board's table rebuilt from results/world/runs/ equals the committed one
    (`python -m actionbench.leaderboard out=results/world` writes both from the same records)."""
    board_dir = REPO / "results" / "world"
    _, board, per_action, skipped = leaderboard.build(board_dir / "runs", 1000)
    assert not skipped
    committed = pd.read_csv(board_dir / "leaderboard.csv")
    rebuilt = pd.read_csv(io.StringIO(board.to_csv(index=False)))
    pd.testing.assert_frame_equal(rebuilt, committed)
    committed_actions = pd.read_csv(board_dir / "leaderboard_per_action.csv")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(per_action.to_csv(index=False))), committed_actions)
