"""The run lock: a run holds an exclusive lock on its folder for as long as it runs, so that two sweeps whose
runs overlap (the same command in two terminals, a job array submitted twice) never train one run twice at
once. The second process to reach a locked run skips it and goes on; once the first has finished, a relaunch
skips the run (its record is complete) or resumes it (it was killed).

The lock is `fcntl.flock` on `.lock` in the run folder. The kernel drops it when its holder exits, however it
exits (SIGKILL, a node's job killed at its time limit), so a lock left by a dead process never blocks anything:
the file stays, the lock does not. On NFS, Linux turns flock into the server's byte-range locks, which hold
across machines where the server runs a lock manager; a filesystem that refuses locks is reported and the run
goes on unguarded (README, cluster section)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class RunLock:
    """`with RunLock(run_dir) as lock:` -- `lock.held` says whether this process may run; if not, `lock.holder`
    is what the holder wrote into the lock file (its host and pid), for the message."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None
        self.held = False
        self.holder = ""

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.holder = os.read(fd, 200).decode(errors="replace").strip()
                os.close(fd)
                return self
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                print(f"warning: cannot lock {self.path} ({os.strerror(err.errno)}: a filesystem without working "
                      "locks); running without the run lock, so a second sweep over this run would train it too")
                self.held = True
                return self
            # The file may have been removed and made anew between our open and our lock (see release): then
            # this lock guards nothing; take the lock of the file that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        self.fd, self.held = fd, True
        return self

    def release(self, remove: bool = False) -> None:
        """Drop the lock; with `remove`, also the lock file (while still holding it, so that whoever opened the
        old file retries on a new one): a run refused before it started leaves no folder behind."""
        if remove:
            self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor of the open file releases the flock
            self.fd = None

    def __exit__(self, *exc) -> None:
        self.release()
