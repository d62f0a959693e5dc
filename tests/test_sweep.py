"""Sweeps: a relaunched sweep skips the runs it finished (also after a real kill), through Hydra's basic
launcher and through the submitit launcher's local mode, and the leaderboard does not notice the break."""

import subprocess
import sys

from conftest import REPO

from actionbench import leaderboard
from actionbench.runlock import LOCK_FILE

# `python -m actionbench.run` that SIGKILLs itself when the sweep's 3rd run, trained, starts drawing: a fixed
# point (2 records written, the 3rd run's artifact finished, none of its images), whatever the machine's speed.
KILLED_IN_THE_THIRD_RUN = """
import os, runpy, signal
import actionbench.generate
draw, runs = actionbench.generate.generate_images, []
def draw_or_die(*args, **kwargs):
    runs.append(1)
    if len(runs) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no chance to clean up
    return draw(*args, **kwargs)
actionbench.generate.generate_images = draw_or_die
runpy.run_module("actionbench.run", run_name="__main__", alter_sys=True)
"""


def _sweep(mini_root, out, launcher=None, methods="sd,textual_inversion", actions="salute,wave", kill=False):
    start = [sys.executable, "-c", KILLED_IN_THE_THIRD_RUN] if kill else [sys.executable, "-m", "actionbench.run"]
    return [*start, "-m", f"method={methods}", f"action={actions}", "suite=actionbench",
            "model=tiny", "method.max_train_steps=3", f"benchmark.root={mini_root}", f"hydra.sweep.dir={out}/sweep",
            f"output_dir={out}/runs/${{method_name}}/${{action}}", f"cache_dir={out}/cache",
            *([f"hydra/launcher={launcher}"] if launcher else [])]


def _records(out):
    """Each finished run's record as written: a run done again writes other timings."""
    return {p.parent.relative_to(out).as_posix(): p.read_bytes() for p in (out / "runs").rglob("record.json")}


def test_a_killed_sweep_resumes_without_recomputing_and_gives_the_same_leaderboard(mini_root, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.run(_sweep(mini_root, killed, kill=True), cwd=REPO, capture_output=True, timeout=900)
    assert process.returncode == -9, process.stderr.decode()[-2000:]
    before = _records(killed)
    assert sorted(before) == ["runs/sd/salute", "runs/sd/wave"]
    third = killed / "runs" / "textual_inversion" / "salute"
    assert (third / "artifact" / "trained.json").is_file() and not (third / "record.json").exists()
    assert (third / LOCK_FILE).is_file(), "the killed run's lock file stays behind (its lock died with it)"
    relaunch = subprocess.run(_sweep(mini_root, killed), cwd=REPO, check=True, capture_output=True, text=True, timeout=900)
    assert "running elsewhere" not in relaunch.stdout
    after = _records(killed)
    assert len(after) == 4
    assert all(after[run] == record for run, record in before.items()), "finished runs were not recomputed"
    assert "reusing the trained artifact in " + str(third / "artifact") in relaunch.stdout

    subprocess.run(_sweep(mini_root, whole), cwd=REPO, check=True, capture_output=True, timeout=900)
    _, board_killed, per_action_killed, _ = leaderboard.build(killed / "runs", resamples=100)
    _, board_whole, per_action_whole, _ = leaderboard.build(whole / "runs", resamples=100)
    assert board_killed.equals(board_whole) and per_action_killed.equals(per_action_whole)


def test_submitit_local_launcher_runs_the_sweep_and_its_rerun_skips_it(mini_root, tmp_path):
    command = _sweep(mini_root, tmp_path, launcher="submitit_local", methods="sd", actions="salute")
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=900)
    first = _records(tmp_path)
    assert len(first) == 1
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=900)
    assert _records(tmp_path) == first
