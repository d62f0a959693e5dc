"""The run lock: a run folder is held by one process at a time; a second process skips it and goes on, and a
lock whose holder died never blocks anything."""

import os
import signal
import subprocess
import sys
import time

from conftest import REPO
from test_sweep import _sweep

from actionbench.runlock import LOCK_FILE, RunLock

# `python -m actionbench.run` that, on its sweep's first run, announces itself (a file) once trained and then
# waits, holding the run's lock, until the test lets it go on (another file).
HELD_IN_THE_FIRST_RUN = """
import os, runpy, sys, time
from pathlib import Path
import actionbench.generate
held, go = Path(os.environ["HELD"]), Path(os.environ["GO"])
draw, runs = actionbench.generate.generate_images, []
def draw_after_go(*args, **kwargs):
    runs.append(1)
    if len(runs) == 1:
        held.touch()
        for _ in range(1200):
            if go.exists():
                break
            time.sleep(0.5)
    return draw(*args, **kwargs)
actionbench.generate.generate_images = draw_after_go
runpy.run_module("actionbench.run", run_name="__main__", alter_sys=True)
"""


def test_a_held_run_is_refused_to_others_and_freed_on_release(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir) as first:
        assert first.held
        with RunLock(run_dir) as second:
            assert not second.held and f"pid {os.getpid()}" in second.holder
    with RunLock(run_dir) as again:
        assert again.held


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from actionbench.runlock import RunLock\n"
                               f"lock = RunLock({str(run_dir)!r}).__enter__(); print(lock.held, flush=True); time.sleep(600)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        with RunLock(run_dir) as lock:
            assert not lock.held, "held while its holder lives"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert (run_dir / LOCK_FILE).exists(), "the file stays"
    with RunLock(run_dir) as lock:
        assert lock.held, "the lock does not"


def test_two_overlapping_sweeps_train_each_run_once(mini_root, tmp_path):
    held, go = tmp_path / "held", tmp_path / "go"
    env = {**os.environ, "HELD": str(held), "GO": str(go)}
    first = subprocess.Popen([sys.executable, "-c", HELD_IN_THE_FIRST_RUN, *_sweep(mini_root, tmp_path, methods="textual_inversion")[3:]],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            if held.exists() or first.poll() is not None:
                break
            time.sleep(0.5)
        assert held.exists(), first.communicate()[0][-2000:]
        # The same sweep again, while the first holds its first run (salute): it skips that one and does wave.
        second = subprocess.run(_sweep(mini_root, tmp_path, methods="textual_inversion"), cwd=REPO, capture_output=True,
                                text=True, timeout=900)
        go.touch()
        said_first = first.communicate(timeout=900)[0]
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and second.returncode == 0, said_first[-2000:] + second.stderr[-2000:]
    salute, wave = tmp_path / "runs" / "textual_inversion" / "salute", tmp_path / "runs" / "textual_inversion" / "wave"
    assert f"skipped: {salute} is running elsewhere ({os.uname().nodename} pid {first.pid} holds its lock)" in second.stdout
    assert f"skipped: {wave} already holds the complete record" in said_first
    trained = {name: (said_first + second.stdout).count(f"textual_inversion on {name!r}: Action") for name in ("salute", "wave")}
    assert trained == {"salute": 1, "wave": 1}, "each run trained and recorded by one process only"
    assert "on 'salute'" in said_first and "on 'wave'" in second.stdout
    assert (salute / "record.json").is_file() and (wave / "record.json").is_file()
