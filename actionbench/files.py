"""Atomic file writes: a reader (or a resumed sweep) never sees a half-written record or image."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path


def _create_temporary(folder: Path, name: str, mode: int = 0o666) -> tuple[int, Path]:
    """A new file beside the target under a name no one else holds, opened for writing. Created with mode
    0o666 as `open()` creates files (0o600 for owner-only files), so the kernel applies the umask: the usual
    mode, with no need to read the umask (os.umask can only be read by setting it, process-wide, which races
    with other threads)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode), tmp
        except FileExistsError:
            continue


def write_atomic(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Write to a temporary name in the same folder, then rename over the target (atomic on POSIX); `mode`
    0o600 for a file only its owner may read."""
    with atomic_file(path, mode) as handle:
        handle.write(data)


def write_new(path: Path, data: bytes, mode: int = 0o666) -> bool:
    """Create `path` holding `data` unless it exists (False: another writer's file was there first). Written to
    a temporary name, then hard-linked into place, which fails where the target exists: of writers racing, the
    first wins, and a reader never sees the file before it is whole (as with one created empty, written after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path.parent, path.name, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def replace_dir(tmp: Path, out: Path) -> None:
    """Put a finished folder `tmp` in place of `out`: the old one is moved aside first, never half-overwritten.
    A `.old` folder already there is a leftover of a process killed between the renames (`tmp` is finished,
    so it is never the only copy worth keeping): removed first, since a folder cannot be renamed onto it."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.replace(old)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: Path, mode: int = 0o666):
    """A binary file to write `path` through, renamed over it when the block ends (removed if the block fails):
    for data written in pieces, too large to hold a second copy of as `write_atomic`'s bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path.parent, path.name, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
