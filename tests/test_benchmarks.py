"""`python -m benchmarks quick=true` (CI's smoke run of the suite) measures every section and writes its tables;
the figures themselves are for people to read, never asserted."""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from benchmarks import __main__ as suite
from benchmarks.train_step import METHODS
from conftest import compose_config

REPO = Path(__file__).resolve().parents[1]


def test_quick_suite_writes_every_table(tmp_path):
    suite.main(["quick=true", "device=cpu", f"out={tmp_path}", f"runs={tmp_path / 'no_runs'}"])
    steps = pd.read_csv(tmp_path / "train_step.csv")
    assert steps.method.tolist() == METHODS
    assert all(math.isfinite(v) for v in steps[["ours_ms", "reference_ms", "peak_mib"]].to_numpy().ravel())
    generation = pd.read_csv(tmp_path / "generation.csv")
    assert len(generation) == 3 and (generation.images == 23).all() and (generation.images_per_s > 0).all()
    assert (pd.read_csv(tmp_path / "scoring.csv").images_per_s > 0).all()
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    assert (sweep.records == 0).all()  # no records under runs=: nothing is claimed as measured
    assert sweep.total_s.notna().all(), "estimated from the committed step times"
    assert "Benchmarks" in (tmp_path / "BENCHMARKS.md").read_text()


def test_a_quick_run_leaves_the_committed_tables_alone():
    assert suite.output(suite.Keys()) == Path("results/benchmarks")
    assert suite.output(suite.Keys(quick=True)) == Path("results/benchmarks/quick")
    assert suite.output(suite.Keys(quick=True, out=Path("results/benchmarks"))) == Path("results/benchmarks"), "unless asked"
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/benchmarks/quick/BENCHMARKS.md"], cwd=REPO)
    assert ignored.returncode == 0, "the smoke run's tables are ignored by git"


def test_two_processes_share_the_sweep_longest_first():
    from benchmarks.sweep import two_processes

    rows = [{"method": m, "total_s": t} for m, t in (("a", 50.0), ("b", 40.0), ("c", 30.0), ("d", 20.0))]
    wall, groups = two_processes(rows)
    assert wall == 70.0 and sorted(map(sorted, groups)) == [["a", "d"], ["b", "c"]]


def _sweep_record(runs, method, action, seed, seconds, overrides=(), benchmark="synthetic"):
    import json

    from actionbench.records import settings_tag

    path = runs / benchmark / "synthetic" / f"{method}{settings_tag(overrides)}" / action / f"seed{seed}" / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"complete": True, "benchmark": benchmark, "model": "synthetic", "method": method,
                                "action": action, "seed": seed, "overrides": [f"method={method}", *overrides],
                                "timings_s": {"total": seconds, "generate": 1.0}}))


def test_the_sweep_times_count_every_seed_asked_and_print_the_split_as_commands(tmp_path, capsys):
    from benchmarks import sweep

    for method, seconds in (("sd", 10.0), ("twinact", 100.0)):
        for action in sweep.ACTIONS:
            for seed in (0, 1):
                _sweep_record(tmp_path, method, action, seed, seconds)
    _sweep_record(tmp_path, "twinact", "kick", 0, 7.0, ["method.action_encoder.kind=clip"])  # the variant's row
    _sweep_record(tmp_path, "sd", "kick", 2, 7.0, benchmark="synthetic_unnamed")  # another task: not this sweep's
    rows = {r["method"]: r for r in sweep.measure(tmp_path, seeds=(0, 1))}
    assert (rows["sd"]["records"], rows["sd"]["total_s"]) == (16, 160.0)
    assert rows["twinact (action_encoder.kind=clip)"]["records"] == 1
    rows = {r["method"]: r for r in sweep.measure(tmp_path, seeds=(0, 1, 2))}
    assert (rows["twinact"]["records"], rows["twinact"]["total_s"]) == (16, 2400.0), "the missing seed estimated"
    sweep.main([f"runs={tmp_path}", "seeds=[0,1]"])
    out = capsys.readouterr().out
    runs = [command.split(" -m ", 1)[1].split() for line in out.splitlines()  # "( a; b ) &": a and b
            for command in line.strip("() &").split("; ") if "actionbench.run" in command]
    assert len(runs) == 3, "two processes and the variant's multirun"
    for run in runs:  # each a valid command line that writes where the records are read
        assert run[:2] == ["actionbench.run", "-m"] and "seed=0,1" in run
        overrides = [o.replace("$A", "kick").split(",")[0] if o.startswith(("method=", "action=", "seed=")) else o
                     for o in run[2:]]
        assert compose_config(overrides).output_dir.startswith(f"{tmp_path}/synthetic/synthetic/")
    assert f"python -m actionbench.leaderboard results_dir={tmp_path} out=results/world" in out


def test_on_a_clean_clone_the_sweep_estimates_every_board_method_and_prints_the_commands(tmp_path, capsys):
    """No records: each of the board's methods (conf/method/, and TwinAct with the CLIP encoder) is estimated
    from the committed step times and its world step count, and the two processes' commands cover them all."""
    import math

    from benchmarks import sweep

    assert all(math.isfinite(row["total_s"]) for row in sweep.measure(tmp_path / "none")), "every row estimated"
    sweep.main([f"runs={tmp_path / 'none'}"])
    out = capsys.readouterr().out
    assert "nan" not in out
    board = ["sd", "textual_inversion", "dreambooth", "dreambooth_lora", "custom_diffusion", "pplus", "adi",
             "twinact", "twinact (action_encoder.kind=clip)", "reversion", "controlnet"]
    rows = {line.split("  ")[0]: line for line in out.splitlines() if "records" in line}
    assert sorted(rows) == sorted(board)
    steps = yaml.safe_load((REPO / "conf/tuning/synthetic_textual_inversion.yaml").read_text())["method"]["max_train_steps"]
    step_ms = pd.read_csv(REPO / "results/benchmarks/train_step.csv").set_index("method").ours_ms["textual_inversion"]
    assert f"{steps} steps x {step_ms:.0f} ms" in rows["textual_inversion"], "TI's world count x its committed step time"
    assert "(textual_inversion's)" in rows["reversion"] and "no training" in rows["sd"]
    runs = [line for line in out.splitlines() if "python -m actionbench.run" in line]
    assert [line.split("taskset -c ")[1][0] for line in runs].count("0") >= 1 and any("taskset -c 1" in r for r in runs)
    methods = [m for line in runs for part in line.split() if part.startswith("method=") for m in part[7:].split(",")]
    assert sorted(methods) == sorted(m.split()[0] for m in board), "each of the board's methods runs once"
    assert any("method=twinact method.action_encoder.kind=clip action=$A" in line for line in runs)
    assert out.rstrip().endswith(f"wait\npython -m actionbench.leaderboard results_dir={tmp_path / 'none'} out=results/world")
