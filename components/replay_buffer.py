"""Replay on TorchRL, behind ``components.replay``: per-env time streams sampled as ``[B, T]`` windows.

One storage row is one vector-env step, a TensorDict of batch ``[num_envs]``;
the storage is circular along time (``RoundRobinWriter``), in memory
(``LazyTensorStorage``) or memory-mapped in the run directory
(``LazyMemmapStorage``). A sample is ``batch`` windows of ``length``
consecutive steps, each from one env's stream. Windows never span the seam
between the newest and the oldest stored step.

Samplers (TorchRL ``Sampler`` subclasses, so ``ReplayBuffer.sample`` returns the batch):

    uniform          window starts uniform over the stored stream (every step equally likely);
                     a window may run from one episode into the next, whose first step
                     carries ``is_first``
    episodes         the official DreamerV2 replay: an episode uniformly over the stored
                     complete episodes longer than a window, then a window inside it whose
                     first step is flagged ``is_first`` (the RSSM starts it from zeros)
    prioritize_ends  ``episodes`` whose last window of every episode gets ``length`` times
                     the share of any other start (official Atari setting)

``episodes`` and ``prioritize_ends`` keep the sampling dreamerkit used before as
options: ``ongoing`` (draw each env's unfinished episode too), ``short=chain`` (an
episode shorter than a window starts one that runs on into the next episodes, so
CartPole's early failures are drawn) and ``reset_start=false`` (a mid-episode window
keeps the stored previous action; ``uniform`` takes ``reset_start=true`` as well).

Not TorchRL's ``SliceSampler``: it draws steps, not episodes, uniformly; it cannot
chain short episodes (with ``strict_length`` it drops them, without it the slices
vary in length); and it does not know the circular seam of a time-major
``[steps, num_envs]`` storage.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.writers import RoundRobinWriter

from components.diskspace import NoSpace, allocated, free_bytes, reserve, size, writing
from registry import ConfigError

log = logging.getLogger(__name__)


def stream(storage) -> tuple[int, int]:
    """``(steps, oldest)``: stored time steps and the storage row holding the oldest of them.

    Read from the storage, which TorchRL keeps up to date on every write: ``len(storage)``
    (rows written, at most ``max_size``) and ``_last_cursor_index`` (the row written last;
    a shared counter in torchrl 0.14). Until the storage is full the oldest row is 0;
    afterwards it is the row the ``RoundRobinWriter`` overwrites next.
    """
    steps = len(storage)
    if steps < storage.max_size:
        return steps, 0
    return steps, (storage._last_cursor_index + 1) % storage.max_size


class UniformSampler(Sampler):
    """Uniform windows of ``length`` consecutive steps of one env's stream, as a ``[B, T]`` index."""

    def __init__(self, length: int, num_envs: int, seed: int = 0, reset_start: bool = False):
        super().__init__()
        self.length, self.num_envs = length, num_envs
        self.reset_start = reset_start  # read by Replay.sample: flag each window's first step is_first
        # Our own generator: ReplayBuffer.set_rng overwrites ``_rng`` (with None by default).
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, storage, batch_size: int) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
        """Draw ``batch_size`` windows; returns ``(time_idx, env_idx)``, each ``[batch_size, length]``."""
        steps, oldest = stream(storage)
        if steps < self.length:
            raise RuntimeError(
                f"replay holds {steps} steps per env, fewer than one window of {self.length}; "
                "add more steps before sampling"
            )
        offset, env = self.starts(storage, steps, oldest, batch_size)
        # Offsets count from the oldest row and end at most at the newest, so a window never
        # spans the seam; the modulo only maps them onto the circular rows.
        time_idx = (oldest + offset[:, None] + torch.arange(self.length)) % storage.max_size
        return (time_idx, env[:, None].expand_as(time_idx)), {}

    def ready(self, storage) -> bool:
        """Whether a window can be drawn: one is stored."""
        return stream(storage)[0] >= self.length

    def starts(self, storage, steps: int, oldest: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window start offsets (counted from the oldest row, at most ``steps - length``) and envs."""
        offset = torch.randint(steps - self.length + 1, (batch_size,), generator=self.generator)
        env = torch.randint(self.num_envs, (batch_size,), generator=self.generator)
        return offset, env

    def _empty(self) -> None:
        return  # nothing to forget: where the data lies is read from the storage

    def state_dict(self) -> dict[str, Any]:
        """The generator state: the rest is read from the storage."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the saved random sequence."""
        self.generator.set_state(state_dict["generator"])

    def dumps(self, path) -> None:
        """Save the state to ``path/sampler.pt`` (TorchRL's ``ReplayBuffer.dumps``)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), Path(path) / "sampler.pt")

    def loads(self, path) -> None:
        """Load the state saved by :meth:`dumps`."""
        self.load_state_dict(torch.load(Path(path) / "sampler.pt"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length}, num_envs={self.num_envs})"


class EpisodeSampler(UniformSampler):
    """Official DreamerV2 sampling: an episode uniformly over the stored episodes, then a window in it.

    Episodes are read from ``is_first`` (the oldest stored step starts one too, possibly cut by
    the circular overwrite); each env's newest episode is complete once its last stored step
    has ``is_last``. By default only complete episodes with more than ``length`` steps are
    drawn (danijar/dreamerv2: ``ongoing: False``; ``minlen`` at HEAD, the skip of short
    episodes at 0216d33), as whole windows inside them. A window starts uniformly where it
    fits; with ``prioritize_ends`` the start is drawn over the whole episode and clamped, so
    the window ending at the episode's end gets ``length`` of the draws. ``ongoing`` also
    draws each env's unfinished episode; ``short="chain"`` also draws episodes of at most
    ``length`` steps: such a window starts at the episode's start and runs on into the next.

    The episode starts are indexed as they are written: TorchRL calls ``add`` with each written
    row, and a sample reads only the flags of the rows written since the last one (a full scan
    of every stored flag took 1-3 ms at 1M steps). A new, emptied or resumed sampler scans once.
    """

    def __init__(
        self,
        length: int,
        num_envs: int,
        seed: int = 0,
        prioritize_ends: bool = False,
        ongoing: bool = False,
        short: str = "skip",
        reset_start: bool = True,
    ):
        super().__init__(length, num_envs, seed, reset_start)
        self.prioritize_ends, self.ongoing, self.short = prioritize_ends, ongoing, short
        self._forget()

    def _forget(self) -> None:
        """Drop the index: the next sample rebuilds it from every stored flag."""
        self._begin = self._env = None  # episode starts on the writing clock, ordered by env then time
        self._written = 0  # steps written on that clock
        self._pending: list[int] = []  # rows written since the last sample

    def add(self, index: int) -> None:
        """(TorchRL, after each write) note the row; its flags are read at the next sample."""
        if self._begin is not None:
            self._pending.append(int(index))

    def _empty(self) -> None:
        self._forget()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the saved random sequence; the index is rebuilt from the storage."""
        super().load_state_dict(state_dict)
        self._forget()

    def episodes(self, storage, steps: int, oldest: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(begin, end, env)`` of every stored episode, in steps from the oldest row, by env then time."""
        flags = storage._storage.get("is_first")  # [rows, num_envs]
        if self._begin is None or len(self._pending) >= steps:  # scan every flag: two slices, not a gather
            first = torch.cat([flags[oldest:steps], flags[:oldest]]).reshape(steps, self.num_envs).bool()
            first[0] = True  # cat copied the flags: the storage is not written
            self._env, self._begin = first.t().nonzero(as_tuple=True)
            self._written = steps
        elif self._pending:
            rows = torch.tensor(self._pending)
            step, env = flags[rows].reshape(len(rows), self.num_envs).bool().nonzero(as_tuple=True)
            if len(step):  # new episodes: append, then a stable sort by env keeps each env's time order
                env, order = torch.cat([self._env, env]).sort(stable=True)
                self._begin, self._env = torch.cat([self._begin, self._written + step])[order], env
            self._written += len(rows)
        self._pending.clear()
        base = self._written - steps  # the oldest stored row on the writing clock
        end = self._ends()
        keep = end > base  # drop the episodes the circular writer has overwritten whole
        if not keep.all():
            self._begin, self._env, end = self._begin[keep], self._env[keep], end[keep]
        return (self._begin - base).clamp(min=0), end - base, self._env

    def _ends(self) -> torch.Tensor:
        """Where each indexed episode ends: the next start of its env, or the newest row."""
        same_env = torch.cat([self._env[1:] == self._env[:-1], torch.tensor([False])])
        return torch.where(same_env, torch.cat([self._begin[1:], self._begin[-1:]]), self._written)

    def drawable(self, storage, steps: int, oldest: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(begin, end, env)`` of the episodes a window may be drawn from (see the class doc)."""
        begin, end, env = self.episodes(storage, steps, oldest)
        keep = torch.ones_like(begin, dtype=torch.bool)
        if not self.ongoing:
            newest = torch.cat([env[1:] != env[:-1], torch.tensor([True])])  # each env's last episode
            ended = storage._storage.get("is_last")[(oldest + steps - 1) % storage.max_size]
            keep &= ~newest | ended.reshape(self.num_envs).bool()[env]
        if self.short == "skip":
            keep &= end - begin > self.length
        return begin[keep], end[keep], env[keep]

    def ready(self, storage) -> bool:
        """Whether a window can be drawn: some stored episode qualifies."""
        steps, oldest = stream(storage)
        return steps >= self.length and len(self.drawable(storage, steps, oldest)[0]) > 0

    def starts(self, storage, steps: int, oldest: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One episode per window, uniformly over the drawable episodes, and a start inside it."""
        begin, end, env = self.drawable(storage, steps, oldest)
        if not len(begin):
            raise RuntimeError(self._nothing_to_draw(storage, steps, oldest))
        pick = torch.randint(len(begin), (batch_size,), generator=self.generator)
        begin, size, env = begin[pick], end[pick] - begin[pick], env[pick]
        room = (size - self.length).clamp(min=0)  # last start that keeps the window in the episode
        span = size if self.prioritize_ends else room + 1
        u = (torch.rand(batch_size, generator=self.generator) * span).long()
        offset = (begin + torch.minimum(u, room)).clamp(max=steps - self.length)  # a chained window stays stored
        return offset, env

    def _nothing_to_draw(self, storage, steps: int, oldest: int) -> str:
        begin, end, _ = self.episodes(storage, steps, oldest)
        stored = f"{len(begin)} stored episodes, the longest of {int((end - begin).max())} steps"
        return (
            f"replay holds no {'' if self.ongoing else 'complete '}episode of more than {self.length} steps "
            f"to draw a window of {self.length} from ({stored}); collect more, or sample across episodes with "
            "replay.short=chain and replay.ongoing=true"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(length={self.length}, num_envs={self.num_envs}, prioritize_ends="
            f"{self.prioritize_ends}, ongoing={self.ongoing}, short={self.short!r}, reset_start={self.reset_start})"
        )


class ReservedMemmapStorage(LazyMemmapStorage):
    """TorchRL's ``LazyMemmapStorage`` that claims the disk space of its whole capacity when it makes its files.

    Memory-mapped files start sparse, and a write into a page that a full disk cannot back kills
    the process with SIGBUS, saying nothing. So the files' blocks are reserved (``posix_fallocate``)
    when the first step creates them, and a disk too small fails there with :class:`NoSpace`,
    saying what the capacity needs and what is free.
    """

    def _init(self, data: TensorDict) -> None:
        directory = Path(self.scratch_dir)
        needed = data.bytes() * self.max_size  # one step of every env, times the rows
        missing = needed - allocated(directory)  # a resumed replay's files already hold theirs
        hint = "; lower replay.capacity or free some space"
        if missing > free_bytes(directory):
            raise NoSpace("replay", directory, missing, hint)
        with writing("replay", directory, missing, then=hint):
            super()._init(data)
            for tensor in self._storage.values(include_nested=True, leaves_only=True):
                reserve(tensor.filename)
        # the disk fills at the first step, not over the run: say so where the user looks
        log.info("replay: reserved %s in %s for %d rows (replay.capacity)", size(needed), directory, self.max_size)


class UndoLog:
    """The rows a full disk replay overwrites after a checkpoint, kept so a resume from it puts them back.

    Once the circular storage is full, every new step overwrites the oldest stored one: a run
    killed some steps after a checkpoint has overwritten rows that the checkpoint's replay still
    holds, so without them a resume would sample the killed run's steps where the checkpoint had
    its oldest ones, and how many depends on when the kill came. Before a stored row is
    overwritten, its old content goes to ``<replay>/undo/<rows written>.bin`` (one file per
    checkpoint, named by the rows written when the checkpoint took the replay's state; each
    record: the write's index, the row, the row's bytes key by key). A resume from the checkpoint
    that opened a file writes back the records of that file and of the later ones, newest first,
    so every row is as the checkpoint left it. The files of the checkpoint before the newest are
    kept (the newest one's write may have been cut short), older ones are removed: about two
    checkpoint intervals of rows at most. A record cut short by a kill is the last of its file
    and is ignored: its row had not been touched yet.
    """

    HEADER = np.dtype([("write", "<i8"), ("row", "<i8")])  # the write's index (rows written before it), the row

    def __init__(self, directory: Path):
        self.directory = directory
        self.start: int | None = None  # rows written when the file being appended to was opened
        self._fd: int | None = None
        self._columns: list[np.ndarray] | None = None  # the storage's memory-mapped arrays, by key

    def _path(self, start: int) -> Path:
        return self.directory / f"{start:012d}.bin"

    def _starts(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.bin")) if self.directory.is_dir() else []

    def begin(self, start: int, keep: int | None = None) -> None:
        """Append from now on to the (emptied) file of ``start``; remove every other file but ``keep``'s."""
        if self._fd is not None:
            os.close(self._fd)
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in reversed(self._starts()):  # the newest first: the files left stay a restorable prefix
            if old not in (start, keep):
                self._path(old).unlink()
        self._fd = os.open(self._path(start), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        self.start = start

    def _arrays(self, rows: TensorDict) -> list[np.ndarray]:
        """The storage's memory-mapped arrays, key by key: numpy views, as indexing a MemoryMappedTensor
        costs more than the write."""
        if self._columns is None:
            self._columns = [rows.get(key).numpy() for key in sorted(rows.keys(True, True), key=str)]
        return self._columns

    def keep(self, write: int, row: int, rows: TensorDict) -> None:
        """Note storage row ``row`` of ``rows`` (the whole storage) before write number ``write`` replaces it."""
        header = np.array((write, row), self.HEADER).tobytes()
        record = header + b"".join(column[row].tobytes() for column in self._arrays(rows))
        with writing("replay", self.directory, len(record)):
            os.write(self._fd, record)  # one write: in the OS's hands before the row changes, a kill loses none

    def restore(self, rows: TensorDict, written: int, full: bool) -> int:
        """Put back the rows overwritten since ``written`` rows (a checkpoint's); returns how many records.

        Without a file opened at ``written`` (a checkpoint older than the newest two, or a run from
        before this log) the rows overwritten since cannot come back; a warning says so when the
        storage was ``full`` then or other files show that the run went on.
        """
        starts = [start for start in self._starts() if start >= written]
        if written not in starts:
            if full or starts:
                log.warning(
                    "replay: the rows overwritten after this checkpoint were not kept (only those after the "
                    "newest two checkpoints are): some of its oldest rows hold newer steps"
                )
            self.begin(written)
            return 0
        columns = self._arrays(rows)
        layout = np.dtype(self.HEADER.descr + [(str(i), c.dtype, c.shape[1:]) for i, c in enumerate(columns)])
        restored = 0
        for start in reversed(starts):  # newest first: a row overwritten twice ends as the checkpoint had it
            path = self._path(start)
            count = path.stat().st_size // layout.itemsize  # leaves out a record cut short by a kill
            if count:
                for record in np.memmap(path, layout, "r", shape=(count,))[::-1]:
                    for i, column in enumerate(columns):
                        column[record["row"]] = record[str(i)]
                restored += count
        self.begin(written)  # the restored rows stand; what is overwritten from here is logged afresh
        return restored


class Replay:
    """Experience storage the recipe adds vector-env steps to and samples ``[B, T]`` batches from.

    ``state_dict`` holds the sampler's generator, the writer's cursor, the stored length and
    the layout of one step (key -> shape, dtype), never the data: a disk replay reopens its
    memory-mapped files in place, a memory replay's data is lost with the process.
    """

    def __init__(
        self, capacity: int, storage: str, sampler: UniformSampler, num_envs: int, length: int, directory: str | None
    ):
        """``capacity`` agent steps of all envs, ``storage`` ``memory`` or ``disk`` (the ``replay.*`` settings)."""
        rows = capacity // num_envs  # at least one window: checked with train.length by runner.config
        if storage == "disk":
            if directory is None:
                raise ConfigError("replay.storage: 'disk' needs a run directory (or use storage=memory)")
            rows_storage = ReservedMemmapStorage(rows, scratch_dir=directory, existsok=True)
        else:
            rows_storage = LazyTensorStorage(rows)
        self.buffer = ReplayBuffer(storage=rows_storage, sampler=sampler, writer=RoundRobinWriter(), batch_size=None)
        self.num_envs, self.length, self.directory = num_envs, length, directory
        self.undo = UndoLog(Path(directory) / "undo") if storage == "disk" else None

    def add(self, step: TensorDict) -> None:
        """Store one vector-env step (batch ``[num_envs]``)."""
        # One storage element, written at an int cursor: a plain row copy. ``extend(step[None])``
        # writes through a tensor index (index_put, ~5x slower for images), and the public
        # ``add`` warns about the [num_envs] batch it cannot tell is our element shape.
        storage, writer = self.buffer.storage, self.buffer.writer
        if self.undo is not None:
            if self.undo.start is None:  # a fresh replay: what a run killed before it kept is stale
                self.undo.begin(writer._write_count)
            if storage.initialized and len(storage) == storage.max_size:  # the row at the cursor is stored
                self.undo.keep(writer._write_count, writer._cursor, storage._storage)
        self.buffer._add(step)

    def sample(self, batch: int) -> TensorDict:
        """``batch`` windows of ``length`` consecutive steps, as a TensorDict ``[batch, length]``."""
        windows = self.buffer.sample(batch)  # gathered: a copy, so the flag below leaves the storage alone
        if self.buffer.sampler.reset_start:
            windows["is_first"][:, 0] = True
        return windows

    def ready(self) -> bool:
        """Whether :meth:`sample` can draw a window from what is stored."""
        return self.buffer.storage.initialized and self.buffer.sampler.ready(self.buffer.storage)

    @property
    def steps(self) -> int:
        """Stored time steps per env."""
        return len(self.buffer)

    def __len__(self) -> int:
        return self.steps * self.num_envs

    def state_dict(self) -> dict[str, Any]:
        """Sampler generator, writer cursor, stored length and step layout (no data)."""
        storage = self.buffer.storage
        if self.undo is not None and self.undo.start is not None and self.undo.start != self.buffer.writer._write_count:
            # this checkpoint's own file; the previous checkpoint's is kept until the next one
            self.undo.begin(self.buffer.writer._write_count, keep=self.undo.start)
        layout = None
        if storage.initialized:
            row = storage._storage[0]  # one stored row, [num_envs]: only shapes and dtypes are kept
            layout = {
                key: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
                for key, v in row.items(include_nested=True, leaves_only=True)
            }
        return {
            "sampler": self.buffer.sampler.state_dict(),
            "writer": self.buffer.writer.state_dict(),
            "steps": len(storage),
            "layout": layout,
        }

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore sampling (and, on disk, the data and write position); returns whether the data came back.

        A disk replay maps the files already in its directory (TorchRL's ``loads`` would copy
        every step, so the storage is initialised on the existing files and its length and
        cursor set). A memory replay only continues the random sequence: its data cannot come
        back, and the caller refills it.
        """
        self.buffer.sampler.load_state_dict(state["sampler"])
        storage = self.buffer.storage
        if not isinstance(storage, LazyMemmapStorage) or not state["steps"]:
            return False
        if not storage.initialized:
            example = TensorDict({}, batch_size=[self.num_envs])
            for key, (shape, dtype) in state["layout"].items():
                example.set(key, torch.zeros(shape, dtype=getattr(torch, dtype)))
            storage._init(example)  # existsok=True: maps the files already in the directory
        self.buffer.writer.load_state_dict(state["writer"])
        storage._len = state["steps"]
        storage._set_last_cursor((state["writer"]["_cursor"] - 1) % storage.max_size)
        restored = self.undo.restore(
            storage._storage, state["writer"]["_write_count"], state["steps"] == storage.max_size
        )
        if restored:
            log.info("replay: %d rows overwritten after the checkpoint put back", restored)
        return True
