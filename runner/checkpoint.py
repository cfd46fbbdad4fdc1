"""Checkpoints a crash cannot break: atomic writes, periodic saves by env steps and wall time, keep-last-N.

- ``AtomicCheckpointIO`` (a Lightning CheckpointIO plugin) writes ``<name>.tmp`` and renames it
  over ``<name>``, so a crash mid-write never leaves a broken checkpoint; a full disk raises
  ``NoSpace`` naming the file and the sizes, removes the temp file and keeps the previous one.
- ``Checkpointer`` (a Lightning checkpoint callback, so it runs after every other callback of
  an update) saves ``step_<agent steps>.ckpt`` every ``every_steps`` agent steps or
  ``every_minutes`` of wall time, on SIGINT/SIGTERM and at the end, points ``last.ckpt`` at
  the newest one and keeps the newest ``keep``. A SIGINT or SIGTERM during training stops
  the run cleanly after the update on every rank (its own handler only notes the signal;
  rank 0's decides), and the final save follows, in data-parallel runs too; a second SIGINT
  interrupts at once. (Lightning's ModelCheckpoint counts optimizer steps and cannot combine a
  step and a time trigger, hence this small callback.) In a data-parallel run rank 0 decides
  when to save, every rank contributes its state, and rank 0 writes the file. Each checkpoint
  also records how far the run's logs had got (``runner.loggers.log_marks``), so a resume
  rewinds them to it.
- ``resume_checkpoint`` picks the checkpoint a resume starts from: ``last.ckpt``, else the
  newest ``step_*.ckpt`` that loads, or the one asked for; stale temp files are removed.
- ``load_checkpoint`` reads one with an error that names the file when it is corrupt.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from components.diskspace import NoSpace, nbytes, no_space
from recipes.agent import NonFiniteLoss
from registry import ConfigError
from runner import loggers

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file, then rename it into place."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:  # a signal's KeyboardInterrupt too: no temp file stays behind
            tmp.unlink(missing_ok=True)
            kept = "; the previous checkpoints are kept"
            # torch.save reports a full disk as RuntimeError("... unexpected pos"), the OSError in its context
            if no_space(err):
                raise NoSpace("checkpoint", path, nbytes(checkpoint), kept) from None
            if isinstance(err, OSError):
                raise CheckpointError(f"could not write checkpoint {path}: {err}{kept}") from err
            raise


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint; a missing, truncated or corrupt file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        there = sorted(p.name for p in path.parent.glob("*.ckpt")) if path.parent.is_dir() else []
        raise CheckpointError(f"no checkpoint at {path}" + (f"; {path.parent} has {', '.join(there)}" if there else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err})") from None


def resume_checkpoint(run_dir: str | Path, name: str | None = None) -> tuple[Path, dict] | None:
    """The checkpoint a resume of ``run_dir`` starts from, loaded; None when the run saved none yet.

    ``name`` (a file in ``checkpoints/`` or a path) picks one; otherwise ``last.ckpt``, and when that
    is missing or corrupt the newest ``step_*.ckpt`` that loads, with a warning naming it. Temp files
    of writes a crash cut short are removed first.
    """
    directory = Path(run_dir) / "checkpoints"
    for tmp in directory.glob("*.tmp"):
        log.warning("removing %s, left by a write that was cut short", tmp)
        tmp.unlink()
    if name:
        path = directory / name if not Path(name).is_absolute() else Path(name)
        return path, load_checkpoint(path)
    candidates = [directory / "last.ckpt", *sorted(directory.glob("step_*.ckpt"), reverse=True)]
    candidates = [path for path in candidates if path.is_file()]
    if not candidates:
        log.warning("%s holds no checkpoint yet: the run starts over", directory)
        return None
    errors = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors or path.name != "last.ckpt":
            why = errors[0] if errors else f"no checkpoint at {directory / 'last.ckpt'}"
            log.warning("%s; resuming from %s, the newest that loads", why, path.name)
        return path, state
    raise CheckpointError("; ".join(errors) + "; no checkpoint of the run loads")


class Checkpointer(Checkpoint):
    """Periodic, signal and final checkpoints of a Dreamer run into ``directory``."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, directory: str | Path, every_steps: int, every_minutes: float, keep: int):
        self.directory = Path(directory)
        self.every_steps, self.every_seconds, self.keep = every_steps, every_minutes * 60, keep
        self._last_steps, self._last_time = 0, time.time()
        self._signal, self._handlers = None, {}

    def on_train_start(self, trainer, pl_module):
        self._last_steps, self._last_time = pl_module.experience.global_steps, time.time()
        self._signal = None
        if threading.current_thread() is threading.main_thread():  # (replaces Lightning's handlers meanwhile)
            self._handlers = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}

    def _on_signal(self, signum, frame) -> None:
        """Only note it: the loop stops at the end of the update, on every rank at once, and saves.

        A second SIGINT (Ctrl-C twice) interrupts at once, as Python's own handler does."""
        if signum == signal.SIGINT and self._signal == signal.SIGINT:
            raise KeyboardInterrupt
        self._signal = signum
        log.warning("%s: stopping after this update, with a checkpoint", signal.Signals(signum).name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        steps = pl_module.experience.global_steps
        due = steps - self._last_steps >= self.every_steps or time.time() - self._last_time >= self.every_seconds
        # Wall clocks and signals differ between ranks: rank 0 decides for all, so that a SIGTERM
        # (a cluster's preemption, ``kill``) saves every rank's state in a data-parallel run too.
        due, stop = trainer.strategy.broadcast((due, self._signal))
        if stop:
            self._signal = stop  # on every rank: the run ends after this update and on_train_end saves
            trainer.should_stop = True
        elif due:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        path = self.save(trainer, pl_module)
        if self._signal is not None and trainer.is_global_zero:
            log.warning(
                "%s: saved a checkpoint at %d agent steps (%s), stopped",
                signal.Signals(self._signal).name,
                pl_module.experience.global_steps,
                path.name,
            )

    def teardown(self, trainer, pl_module, stage):
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers = {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # How far the logs had got, and the episodes finished but not logged yet (the next update
        # logs them), so that a resume continues the logs exactly from here.
        checkpoint["logs"] = loggers.log_marks(self.directory.parent, pl_module.experience.frames)
        checkpoint["logs"]["episodes"] = list(pl_module.experience.finished)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        pl_module.experience.finished.extend(checkpoint.get("logs", {}).get("episodes", []))

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (NonFiniteLoss, CheckpointError, ConfigError, NoSpace)):
            return  # keep the last good checkpoint as it is
        if trainer.world_size > 1:
            log.warning("%s in a data-parallel run: resume from the last periodic checkpoint", type(exception).__name__)
            return  # saving needs every rank, and the others may be gone
        if pl_module.experience is not None and pl_module.updates > 0:
            log.warning("saving a checkpoint after %s", type(exception).__name__)
            self.save(trainer, pl_module)

    def save(self, trainer, pl_module) -> Path:
        """Write ``step_<agent steps>.ckpt``, repoint ``last.ckpt`` and prune old ones."""
        steps = pl_module.experience.global_steps
        path = self.directory / f"step_{steps:012d}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # collective: every rank calls it, rank 0 writes
        self._last_steps, self._last_time = steps, time.time()
        if not trainer.is_global_zero:
            return path
        last = self.directory / "last.ckpt"
        tmp = self.directory / "last.ckpt.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)  # a hard link costs no space; the rename makes it atomic
            os.replace(tmp, last)
        except OSError as err:  # a directory entry needs space too
            tmp.unlink(missing_ok=True)
            if no_space(err):
                raise NoSpace("checkpoint", last, 0, f"; {path.name} was written") from None
            raise
        for old in sorted(self.directory.glob("step_*.ckpt"))[: -self.keep]:
            old.unlink()
        return path
