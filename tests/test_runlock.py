"""The run lock: a run folder is held by one process at a time; a second process skips it and goes on, and a
lock whose holder died never blocks anything."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from test_sweep import _sweep

from actionbench import runlock
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


# /proc/self/mountinfo as a cluster node shows it: the root, the runs folder's filesystem at /shared (the case
# under test), and a neighbour whose name starts like it, which must not be taken for it.
MOUNTS = """22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
41 27 0:45 / /shared{more} - {fs}
42 27 0:46 / /sharedx rw,relatime shared:9 - nfs4 other:/x rw,vers=4.2,local_lock=flock,addr=10.0.0.8
"""
NFS = "rw,relatime shared:8 - nfs filer:/export/runs rw,vers=3,hard,proto=tcp,{lock},addr=10.0.0.7"


@pytest.mark.parametrize("fs, warned", [
    (NFS.format(lock="local_lock=flock"), "mounted with local_lock=flock"),
    (NFS.format(lock="local_lock=all"), "mounted with local_lock=all"),
    (NFS.format(lock="nolock,local_lock=all"), "mounted with local_lock=all, nolock"),
    (NFS.format(lock="local_lock=none"), None),
    (NFS.format(lock="local_lock=posix"), None),  # POSIX locks local, flock still the server's
    ("rw,relatime - nfs4 filer:/export rw,vers=4.2,local_lock=none", None),
    ("rw,relatime - lustre 10.0.0.1@o2ib:/scratch rw,localflock,lazystatfs", "mounted with localflock"),
    ("rw,relatime - lustre 10.0.0.1@o2ib:/scratch rw,flock,lazystatfs", None),
    ("rw,relatime - beegfs beegfs_nodev rw,cfgFile={conf}", "whose client keeps flock on its node by default"),
    ("rw,relatime - beegfs beegfs_nodev rw,cfgFile={global_conf}", None),
    ("rw,relatime - ceph 10.0.0.2:6789:/ rw,name=runs", None),  # CephFS: flock goes through its MDS
], ids=["nfs local_lock=flock", "nfs local_lock=all", "nfs nolock", "nfs default", "nfs local_lock=posix",
        "nfs4 default", "lustre localflock", "lustre flock", "beegfs default", "beegfs global locks", "ceph"])
def test_a_filesystem_whose_flock_stays_on_its_node_is_named_once_per_process(fs, warned, tmp_path, monkeypatch,
                                                                             capsys):
    conf, global_conf = tmp_path / "beegfs-client.conf", tmp_path / "global.conf"
    conf.write_text("sysMgmtdHost = mgmt\ntuneUseGlobalFileLocks       = false\n")
    global_conf.write_text("# cluster-wide locks\ntuneUseGlobalFileLocks = true\n")
    more, fs = fs.split(" - ")
    text = MOUNTS.format(more=" " + more, fs=fs.format(conf=conf, global_conf=global_conf))
    mount = runlock.mount_of("/shared/runs/sd/salute/seed0", text)
    assert (mount.point, mount.fstype) == ("/shared", fs.split()[0]), "the longest mount point above the folder"
    assert runlock.mount_of("/sharedy/run", text).point == "/", "a mount point matches whole names only"
    found = runlock.node_local(mount)
    assert (found[0] if found else None) == warned
    info = tmp_path / "mountinfo"
    info.write_text(text.replace("/shared ", f"{tmp_path} ", 1))
    monkeypatch.setattr(runlock, "MOUNTINFO", info)
    monkeypatch.setattr(runlock, "_warned", set())
    for run in ("salute", "wave"):
        with RunLock(tmp_path / "runs" / run) as lock:
            assert lock.held, "the lock is still taken: the warning only says what it cannot do"
    said = capsys.readouterr().out
    assert said.count("warning:") == (1 if warned else 0), said
    if warned:
        assert f"at {tmp_path}, {warned}" in said and "from one node only" in said and fs.split()[0] in said


def test_escaped_mount_points_are_read_and_a_missing_mountinfo_is_no_error(tmp_path, monkeypatch, capsys):
    text = r"50 27 0:60 / /mnt/my\040runs rw - lustre mgs:/fs rw,localflock" + "\n"
    assert runlock.mount_of("/mnt/my runs/sd", text).point == "/mnt/my runs"
    assert runlock.mount_of("/elsewhere", text) is None
    monkeypatch.setattr(runlock, "MOUNTINFO", tmp_path / "no_proc" / "mountinfo")
    with RunLock(tmp_path / "run") as lock:
        assert lock.held and "warning" not in capsys.readouterr().out


def test_a_refused_runs_release_removes_its_folder_unless_another_process_came_in_between(tmp_path, monkeypatch):
    alone = tmp_path / "alone"
    lock = RunLock(alone).__enter__()
    lock.release(remove=True)
    assert not alone.exists(), "a run refused before it started leaves no folder"

    # Between the lock file's removal and the folder's, another process opens the run's lock file anew.
    run_dir, others = tmp_path / "run", []
    lock = RunLock(run_dir).__enter__()
    unlink = Path.unlink

    def unlink_then_another_comes(path, *args, **kwargs):
        unlink(path, *args, **kwargs)
        if path == run_dir / LOCK_FILE and not others:
            others.append(RunLock(run_dir).__enter__())

    monkeypatch.setattr(Path, "unlink", unlink_then_another_comes)
    lock.release(remove=True)  # no traceback: the folder is not empty, and stays
    assert others[0].held and (run_dir / LOCK_FILE).is_file()
    others[0].release()


def test_a_folder_removed_under_a_starting_run_is_made_anew(tmp_path, monkeypatch):
    """The other side of the same race: a refused run removes the folder between this one's mkdir and open."""
    run_dir, removed = tmp_path / "run", []
    open_file = os.open

    def folder_removed_first(path, *args):
        if not removed:
            removed.append(path)
            run_dir.rmdir()
        return open_file(path, *args)

    monkeypatch.setattr(runlock.os, "open", folder_removed_first)
    with RunLock(run_dir) as lock:
        assert removed and lock.held and (run_dir / LOCK_FILE).is_file()
