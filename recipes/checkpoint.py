"""Checkpoints a crash cannot break: atomic writes, periodic saves by env steps and wall time, keep-last-N.

- ``AtomicCheckpointIO`` (a Lightning CheckpointIO plugin) writes ``<name>.tmp`` and renames it
  over ``<name>``, so a crash mid-write never leaves a broken checkpoint; a full disk raises
  ``CheckpointError`` naming the file and keeps the previous one.
- ``Checkpointer`` (a Lightning callback) saves ``step_<agent steps>.ckpt`` every
  ``every_steps`` agent steps or ``every_minutes`` of wall time, on SIGINT/SIGTERM and at the
  end, points ``last.ckpt`` at the newest one and keeps the newest ``keep``. A SIGTERM
  during training stops the run cleanly after the update on every rank (its own handler only
  notes the signal; rank 0's decides), and the final save follows, in data-parallel runs too.
  (Lightning's ModelCheckpoint counts optimizer steps and cannot combine a step and a
  time trigger, hence this small callback.) In a data-parallel run rank 0 decides when
  to save, every rank contributes its state, and rank 0 writes the file.
- ``load_checkpoint`` reads one with an error that names the file when it is corrupt.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from registry import ConfigError

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file."""


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or Inf; the message names the term and the update."""


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
        except OSError as err:
            tmp.unlink(missing_ok=True)
            why = "no space left on device" if err.errno == errno.ENOSPC else str(err)
            raise CheckpointError(
                f"could not write checkpoint {path}: {why}; the previous checkpoints are kept"
            ) from err


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint; a missing, truncated or corrupt file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: {err})") from None


class Checkpointer(Callback):
    """Periodic, signal and final checkpoints of a Dreamer run into ``directory``."""

    def __init__(self, directory: str | Path, every_steps: int, every_minutes: float, keep: int):
        self.directory = Path(directory)
        self.every_steps, self.every_seconds, self.keep = every_steps, every_minutes * 60, keep
        self._last_steps, self._last_time = 0, time.time()
        self._sigterm, self._handler = False, None

    def on_train_start(self, trainer, pl_module):
        self._last_steps, self._last_time = pl_module.experience.global_steps, time.time()
        self._sigterm = False
        if threading.current_thread() is threading.main_thread():  # (replaces Lightning's handler meanwhile)
            self._handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        """Only note it: the loop stops at the end of the update, on every rank at once, and saves."""
        self._sigterm = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        steps = pl_module.experience.global_steps
        due = steps - self._last_steps >= self.every_steps or time.time() - self._last_time >= self.every_seconds
        # Wall clocks and signals differ between ranks: rank 0 decides for all, so that a SIGTERM
        # (a cluster's preemption, ``kill``) saves every rank's state in a data-parallel run too.
        due, stop = trainer.strategy.broadcast((due, self._sigterm))
        if stop:
            self._sigterm = True  # on every rank: the run ends after this update and on_train_end saves
            trainer.should_stop = True
        elif due:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        path = self.save(trainer, pl_module)
        if self._sigterm and trainer.is_global_zero:
            log.warning(
                "SIGTERM: saved a checkpoint at %d agent steps (%s), stopped",
                pl_module.experience.global_steps,
                path.name,
            )

    def teardown(self, trainer, pl_module, stage):
        if self._handler is not None:
            signal.signal(signal.SIGTERM, self._handler)
            self._handler = None

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (NonFiniteLoss, CheckpointError, ConfigError)):
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
        os.link(path, tmp)  # a hard link costs no space; the rename makes it atomic
        os.replace(tmp, last)
        for old in sorted(self.directory.glob("step_*.ckpt"))[: -self.keep]:
            old.unlink()
        return path
