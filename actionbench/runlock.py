"""The run lock: a run holds an exclusive lock on its folder for as long as it runs, so that two sweeps whose
runs overlap (the same command in two terminals, a job array submitted twice) never train one run twice at
once. The second process to reach a locked run skips it and goes on; once the first has finished, a relaunch
skips the run (its record is complete) or resumes it (it was killed).

The lock is `fcntl.flock` on `.lock` in the run folder. The kernel drops it when its holder exits, however it
exits (SIGKILL, a node's job killed at its time limit), so a lock left by a dead process never blocks anything:
the file stays, the lock does not. On NFS, Linux turns flock into the server's byte-range locks, which hold
across machines where the server runs a lock manager; a filesystem that refuses locks is reported and the run
goes on unguarded. Some cluster filesystems take a flock without a word but keep it on the node that took it
(NFS mounted with `nolock`, `local_lock=flock` or `local_lock=all`; Lustre with `localflock`; BeeGFS unless
its client sets `tuneUseGlobalFileLocks`): a job on another node takes the same lock at once. flock itself
cannot tell, so the runs folder's mount is looked up in /proc/self/mountinfo and such a filesystem is named
in a warning, once per process and mount (README, cluster section)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = ".lock"
MOUNTINFO = Path("/proc/self/mountinfo")
BEEGFS_CLIENT_CONF = "/etc/beegfs/beegfs-client.conf"  # the client's default `cfgFile`
_warned: set[str] = set()  # mount points already named in a warning by this process


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    source: str
    options: tuple[str, ...]  # the mount's and its superblock's, `name` or `name=value`


def mount_of(path: str, mountinfo: str) -> Mount | None:
    """The mount that holds `path` (absolute, resolved), from the text of /proc/self/mountinfo: the longest
    mount point above it, the last of equal ones (mounted over the others)."""
    best = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        tail = fields.index("-", 6)
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040: a space
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.point)):
            options = fields[5].split(",") + (fields[tail + 3].split(",") if len(fields) > tail + 3 else [])
            best = Mount(point, fields[tail + 1], fields[tail + 2], tuple(options))
    return best


def node_local(mount: Mount) -> tuple[str, str] | None:
    """Why a flock on `mount` keeps out only this node's processes, and what to set instead; None where it
    holds across nodes or fails outright (then RunLock says so itself)."""
    options = set(mount.options)
    if mount.fstype in ("nfs", "nfs4"):
        local = sorted(options & {"nolock", "local_lock=flock", "local_lock=all"})
        if local:
            return (f"mounted with {', '.join(local)}", "Remount it with lock and local_lock=none, the defaults, "
                    "from a server that runs a lock manager (NFSv4, or NFSv3 with rpc.statd and lockd on both sides)")
    elif mount.fstype == "lustre" and "localflock" in options:
        return "mounted with localflock", "Remount it with -o flock"
    elif mount.fstype == "beegfs":
        config = next((o.split("=", 1)[1] for o in options if o.startswith("cfgFile=")), BEEGFS_CLIENT_CONF)
        if not _beegfs_global_locks(config):
            return ("whose client keeps flock on its node by default",
                    f"Set tuneUseGlobalFileLocks = true in {config} and remount")
    return None


def _beegfs_global_locks(config: str) -> bool:
    """Whether the BeeGFS client's config file turns on cluster-wide locks."""
    try:
        text = Path(config).read_text()
    except OSError:
        return False
    settings = dict(re.findall(r"^\s*(\w+)\s*=\s*(\S*)", text, flags=re.M))
    return settings.get("tuneUseGlobalFileLocks", "").lower() == "true"


def _warn_if_node_local(folder: Path) -> None:
    """Print, once per process and mount, that `folder`'s filesystem keeps its locks on this node."""
    try:
        mount = mount_of(os.path.realpath(folder), MOUNTINFO.read_text())
    except OSError:  # not Linux, or no /proc
        return
    found = mount and node_local(mount)
    if found and mount.point not in _warned:
        _warned.add(mount.point)
        why, fix = found
        print(f"warning: {folder} is on {mount.fstype} {mount.source} at {mount.point}, {why}: its run lock keeps "
              f"out only processes on this node, so a sweep over the same runs from another node would train "
              f"them too. {fix}; until then, launch sweeps whose runs overlap from one node only")


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
        _warn_if_node_local(self.path.parent)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # the folder was removed since (a refused run's release): make it anew
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
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
        old file retries on a new one) and then the folder, so that a run refused before it started leaves no
        folder behind. The folder stays if anything is in it by then: another process may have made a new lock
        file there a moment ago, and holds the run now."""
        if remove:
            self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor of the open file releases the flock
            self.fd = None
        if remove:
            try:
                self.path.parent.rmdir()
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise

    def __exit__(self, *exc) -> None:
        self.release()
