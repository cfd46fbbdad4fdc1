"""Logs that read as one run across crashes and resumes, and say so when the disk is full.

- ``CSVLogger`` writes each row of ``metrics.csv`` as it is logged (a SIGKILL loses none) and
  appends to the file on resume; a new column rewrites the file atomically.
- ``TensorBoardLogger`` is Lightning's, with a full disk reported as :class:`NoSpace`.
- Each checkpoint records :func:`log_marks` (the rows of every CSV log, the logging step);
  :func:`rewind` brings the logs back to them when a run resumes from that checkpoint: CSV rows
  written after it are dropped, and TensorBoard purges the steps after it (SummaryWriter's
  ``purge_step``), so the resumed run logs each update once.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

from components.diskspace import NoSpace, no_space, write_atomically, writing

# The CSV logs of a run directory that grow by appended rows; a resume cuts them back to a checkpoint.
CSV_LOGS = ("csv/metrics.csv", "eval/learning.csv", "eval/episodes.csv")
ROW_BYTES = 4096  # what one more row may need on disk, for the "needs ~N" of a full disk


def log_marks(run_dir: str | Path, step: int) -> dict:
    """How far the run's logs have got: ``{"step": logging step, "rows": {CSV log: data rows}}``."""
    rows = {}
    for name in CSV_LOGS:
        path = Path(run_dir) / name
        if path.is_file():
            with open(path, "rb") as f:
                rows[name] = max(sum(1 for _ in f) - 1, 0)
    return {"step": step, "rows": rows}


def rewind(cfg: DictConfig, marks: dict | None) -> None:
    """Bring the logs of ``cfg.run_dir`` back to ``marks`` (a checkpoint's :func:`log_marks`; ``{}`` for
    a run that saved no checkpoint, whose logs start over; None for a checkpoint that predates marks)."""
    if marks is None:
        return
    for name in CSV_LOGS:
        keep_rows(Path(cfg.run_dir) / name, marks.get("rows", {}).get(name, 0))
    if cfg.get("logger") and str(cfg.logger.get("_target_", "")).endswith("TensorBoardLogger"):
        OmegaConf.update(cfg, "logger.purge_step", marks.get("step", -1) + 1, force_add=True)


def keep_rows(path: Path, rows: int) -> None:
    """Keep the header and the first ``rows`` rows of the CSV file ``path`` (atomically)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        lines = f.readlines()
    if len(lines) > rows + 1:
        write_atomically("log", path, "".join(lines[: rows + 1]))


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (and its columns) so a resumed run continues it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])

    def save(self) -> None:
        path = self.metrics_file_path
        needed = os.path.getsize(path) + ROW_BYTES if os.path.isfile(path) else ROW_BYTES
        with writing("log", path, needed):
            super().save()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """A new column rewrites the file: into a temp file, then renamed, so a crash keeps the old one."""
        with open(self.metrics_file_path, newline="") as file:
            metrics = list(csv.DictReader(file))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(metrics)
        write_atomically("log", self.metrics_file_path, text.getvalue())


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, writing each row at once and appending on resume.

    Lightning holds rows until ``(step + 1) % flush_logs_every_n_steps == 0``; a crash lost them,
    and our steps (frames, advancing by the action repeat) may never meet that test. Writing each
    row costs ~0.5 ms (0.13 ms batched by 100), against one row per ``train.log_every`` updates of
    tens of ms (smoke) to seconds (docs/ARCHITECTURE.md).
    """

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        self.save()

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger; a full disk (which TensorBoard's writer thread reports on the
    next write) becomes :class:`NoSpace` naming the log directory."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if threading.excepthook is not _quiet_full_disk:
            _quiet_full_disk.previous = threading.excepthook
            threading.excepthook = _quiet_full_disk

    def _guard(self):
        return writing("log", Path(self.log_dir), ROW_BYTES)

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        with self._guard():
            super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params, metrics=None) -> None:
        with self._guard():
            super().log_hyperparams(params, metrics)

    @rank_zero_only
    def save(self) -> None:
        with self._guard():
            super().save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        try:
            with self._guard():
                super().finalize(status)
        except NoSpace:
            if status == "success":
                raise  # else the run already failed, with its own message


def _quiet_full_disk(args) -> None:
    """A full disk in TensorBoard's writer thread: the main thread reports it (as NoSpace) at its next
    write, so the thread's own traceback is left out; any other thread error is printed as usual."""
    if isinstance(args.thread, _AsyncWriterThread) and no_space(args.exc_value):
        return
    _quiet_full_disk.previous(args)
