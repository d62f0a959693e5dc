"""Sweeps: a relaunched sweep skips the runs it finished (also after a real kill), through Hydra's basic
launcher and through the submitit launcher's local mode, and the leaderboard does not notice the break."""

import signal
import subprocess
import sys
import time

from conftest import REPO

from actionbench import leaderboard


def _sweep(mini_root, out, launcher=None, methods="sd,textual_inversion,pplus", actions="salute,wave"):
    return [sys.executable, "-m", "actionbench.run", "-m", f"method={methods}", f"action={actions}", "suite=actionbench",
            "model=tiny", "method.max_train_steps=3", f"benchmark.root={mini_root}", f"hydra.sweep.dir={out}/sweep",
            f"output_dir={out}/runs/${{method_name}}/${{action}}", f"cache_dir={out}/cache",
            *([f"hydra/launcher={launcher}"] if launcher else [])]


def _stamps(out):
    return {p.parent.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "runs").rglob("record.json")}


def test_a_killed_sweep_resumes_without_recomputing_and_gives_the_same_leaderboard(mini_root, tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(_sweep(mini_root, killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while len(_stamps(killed) if (killed / "runs").exists() else {}) < 2 and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: whatever is half-written stays on disk
    process.wait()
    before = _stamps(killed)
    assert 2 <= len(before) < 6
    subprocess.run(_sweep(mini_root, killed), cwd=REPO, check=True, capture_output=True, timeout=900)
    after = _stamps(killed)
    assert len(after) == 6
    assert all(after[run] == stamp for run, stamp in before.items()), "finished runs were not recomputed"

    subprocess.run(_sweep(mini_root, whole), cwd=REPO, check=True, capture_output=True, timeout=900)
    _, board_killed, per_action_killed, _ = leaderboard.build(killed / "runs", resamples=100)
    _, board_whole, per_action_whole, _ = leaderboard.build(whole / "runs", resamples=100)
    assert board_killed.equals(board_whole) and per_action_killed.equals(per_action_whole)


def test_submitit_local_launcher_runs_the_sweep_and_its_rerun_skips_it(mini_root, tmp_path):
    command = _sweep(mini_root, tmp_path, launcher="submitit_local", methods="sd", actions="salute,wave")
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=900)
    first = _stamps(tmp_path)
    assert len(first) == 2
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=900)
    assert _stamps(tmp_path) == first
