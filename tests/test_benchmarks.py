"""`python -m benchmarks --quick` (CI's smoke run of the suite) measures every section and writes its tables;
the figures themselves are for people to read, never asserted."""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks import __main__ as suite
from benchmarks.train_step import METHODS

REPO = Path(__file__).resolve().parents[1]


def test_quick_suite_writes_every_table(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--quick", "--device", "cpu", "--out", str(tmp_path),
                                      "--runs", str(tmp_path / "no_runs")])
    suite.main()
    steps = pd.read_csv(tmp_path / "train_step.csv")
    assert steps.method.tolist() == METHODS
    assert all(math.isfinite(v) for v in steps[["ours_ms", "reference_ms", "peak_mib"]].to_numpy().ravel())
    generation = pd.read_csv(tmp_path / "generation.csv")
    assert len(generation) == 3 and (generation.images == 23).all() and (generation.images_per_s > 0).all()
    assert (pd.read_csv(tmp_path / "scoring.csv").images_per_s > 0).all()
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    assert (sweep.records == 0).all()  # no records under --runs: nothing is claimed as measured
    assert "Benchmarks" in (tmp_path / "BENCHMARKS.md").read_text()


def test_a_quick_run_leaves_the_committed_tables_alone():
    assert suite.arguments([]).out == Path("results/benchmarks")
    assert suite.arguments(["--quick"]).out == Path("results/benchmarks/quick")
    assert suite.arguments(["--quick", "--out", "results/benchmarks"]).out == Path("results/benchmarks"), "unless asked"
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/benchmarks/quick/BENCHMARKS.md"], cwd=REPO)
    assert ignored.returncode == 0, "the smoke run's tables are ignored by git"


def test_two_processes_share_the_sweep_longest_first():
    from benchmarks.sweep import two_processes

    rows = [{"method": m, "total_s": t} for m, t in (("a", 50.0), ("b", 40.0), ("c", 30.0), ("d", 20.0))]
    wall, groups = two_processes(rows)
    assert wall == 70.0 and sorted(map(sorted, groups)) == [["a", "d"], ["b", "c"]]


def test_the_sweep_times_count_every_seed_asked_and_print_the_split_as_commands(tmp_path, monkeypatch, capsys):
    import json
    import sys

    from benchmarks import sweep

    for method, seconds in (("sd", 10.0), ("twinact", 100.0)):
        for action in sweep.ACTIONS:
            for seed in (0, 1):
                path = tmp_path / method / action / f"seed{seed}" / "record.json"
                path.parent.mkdir(parents=True)
                path.write_text(json.dumps({"complete": True, "overrides": [], "timings_s": {"total": seconds}}))
    rows = {r["method"]: r for r in sweep.measure(tmp_path, seeds=(0, 1))}
    assert (rows["sd"]["records"], rows["sd"]["total_s"]) == (16, 160.0)
    rows = {r["method"]: r for r in sweep.measure(tmp_path, seeds=(0, 1, 2))}
    assert (rows["twinact"]["records"], rows["twinact"]["total_s"]) == (16, 2400.0), "the missing seed estimated"
    monkeypatch.setattr(sys, "argv", ["sweep", "--runs", str(tmp_path), "--seeds", "0", "1"])
    sweep.main()
    out = capsys.readouterr().out
    assert "-m seed=0,1 method=twinact action=$A &" in out and "-m seed=0,1 method=sd action=$A\nwait\n" in out
