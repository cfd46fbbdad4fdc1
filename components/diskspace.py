"""A full disk as one clear error: which file, how much it needed, how much was free.

ENOSPC (disk full), EDQUOT (quota) and EFBIG (a file size limit, ``ulimit -f``) all mean
"no space left" to a run. They reach us in several disguises: as an ``OSError``, or as
torch.save's ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos`` with the
``OSError`` only in its context. :func:`no_space` reads the whole chain; :class:`NoSpace` is
the one-line error every writer of a run raises (the checkpoint, the disk replay, the logs,
GIFs and ``config.yaml``).
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class NoSpace(RuntimeError):
    """A file of the run could not be written for lack of space; the message names it and the sizes."""

    def __init__(self, what: str, path: str | Path, needed: int, then: str = ""):
        self.path, self.needed, self.free = Path(path), needed, free_bytes(path)
        super().__init__(
            f"could not write {what} {path}: no space left on device "
            f"(needs ~{size(needed)}, {size(self.free)} free){then}"
        )


def size(n: float) -> str:
    """Bytes for people: ``12 KB``, ``3.4 MB``, ``1.2 GB``."""
    if n < 1e6:
        return f"{n / 1e3:.0f} KB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"


def free_bytes(path: str | Path) -> int:
    """The largest file this process can still write next to ``path``: the free disk space, or the
    file size limit (``ulimit -f``) when that is smaller."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return free if limit == resource.RLIM_INFINITY else min(free, limit)


def no_space(err: BaseException | None) -> bool:
    """Whether ``err`` (or an exception it was raised from or while handling) is a full disk."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            return True
        err = err.__cause__ or err.__context__
    return False


def nbytes(obj) -> int:
    """The bytes of the tensors in a (nested) checkpoint dict: about the size torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 64  # a plain value: a few bytes of pickle


@contextmanager
def writing(what: str, path: str | Path, needed: int, remove: bool = False, then: str = "") -> Iterator[None]:
    """Turn a full disk while writing ``path`` into :class:`NoSpace`; ``remove`` deletes the partial file."""
    try:
        yield
    except Exception as err:
        if not no_space(err):
            raise
        if remove:
            Path(path).unlink(missing_ok=True)
        raise NoSpace(what, path, needed, then) from None


def reserve(path: str | Path) -> None:
    """Claim the disk blocks of the whole (sparse) file ``path``, so writing into it cannot run out of
    space later; a file system that cannot reserve (no fallocate) is left as it is."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise
    finally:
        os.close(fd)


def allocated(directory: str | Path) -> int:
    """Bytes the files in ``directory`` already occupy on disk (sparse holes not counted)."""
    directory = Path(directory)
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir() if p.is_file()) if directory.is_dir() else 0


def write_atomically(what: str, path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file renamed over it: a crash or a full disk keeps the
    old file whole and leaves no temp file (a full disk is :class:`NoSpace`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if no_space(err):
            raise NoSpace(what, path, len(text.encode())) from None
        raise
