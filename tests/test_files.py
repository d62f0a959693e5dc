"""Atomic writes and folder replacement (actionbench/files.py)."""

import os
import stat
import threading

import pytest

from actionbench import files


def test_replace_dir_puts_the_new_folder_in_place_even_over_a_stale_old_one(tmp_path):
    out, tmp = tmp_path / "model", tmp_path / "model.tmp"
    out.mkdir()
    (out / "weights").write_text("first")
    stale = tmp_path / "model.old"  # left by a process killed between its two renames
    stale.mkdir()
    (stale / "weights").write_text("older still")
    tmp.mkdir()
    (tmp / "weights").write_text("second")
    files.replace_dir(tmp, out)
    assert (out / "weights").read_text() == "second"
    assert not tmp.exists() and not stale.exists()
    tmp.mkdir()
    (tmp / "weights").write_text("third")
    files.replace_dir(tmp, tmp_path / "fresh")  # nothing to move aside
    assert (tmp_path / "fresh" / "weights").read_text() == "third"


def test_atomic_writes_give_the_usual_mode_without_touching_the_process_umask(tmp_path, monkeypatch):
    previous = os.umask(0o027)
    try:
        def forbidden(_):
            raise AssertionError("os.umask is process-wide: another thread's files would get its mode meanwhile")

        monkeypatch.setattr(os, "umask", forbidden)
        files.write_atomic(tmp_path / "a.txt", b"x")
        monkeypatch.undo()
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640, "0o666 less the umask, as open() gives"
        assert (tmp_path / "a.txt").read_bytes() == b"x"
    finally:
        os.umask(previous)


def test_concurrent_atomic_writes_leave_whole_files_and_no_temporaries(tmp_path):
    def write(i):
        for j in range(20):
            files.write_atomic(tmp_path / f"{i % 2}.bin", bytes([i]) * 1000)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.bin", "1.bin"]
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert len(data) == 1000 and len(set(data)) == 1


def test_a_failed_write_leaves_the_target_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    files.write_atomic(target, b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]
