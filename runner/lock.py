"""One writer per run directory: ``run.lock``, held with ``fcntl.flock`` while a process writes there.

Two processes on one run (a cluster job requeued while the old one still runs, a resume
typed twice) would both append the logs and write the same replay and checkpoints. The
kernel drops a flock when its process ends, however it ends, so a killed run leaves no
stale lock; the file stays, naming the last holder.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> with hold(run_dir, "train"):
    ...     (run_dir / "run.lock").read_text().split()[0] == str(os.getpid())
    True
"""

from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from registry import ConfigError

NAME = "run.lock"


class RunInUse(ConfigError):
    """Another process holds the run directory; the message names it."""


def launching_process() -> bool:
    """Whether this is the process that started the run (not a data-parallel rank it spawned), read
    from the variables Lightning's DDP launcher, torchrun and SLURM set."""
    return all(os.environ.get(var, "0") == "0" for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


@contextmanager
def hold(directory: str | Path, command: str):
    """Hold ``directory``'s lock for the block; ``RunInUse`` naming the holder when another process has it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise RunInUse(
                f"{command}: {directory} is in use by process {holder}; wait for it to end or stop it "
                "(two processes on one run would write the same logs, replay and checkpoints)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} ({' '.join(sys.argv)})\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
