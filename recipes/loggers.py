"""Logger tweaks: a CSV logger that writes ``metrics.csv`` as it goes and appends to it on resume."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (and its columns) so a resumed run continues it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, appending on resume and flushing every ``flush_logs_every_n_steps`` rows.

    Lightning flushes when ``(step + 1) % flush_logs_every_n_steps == 0``; our steps are
    environment frames, which advance by the action repeat (2, 4, 8), so that test never held
    and a run wrote nothing until it ended. Flushing also once that many rows are buffered
    keeps at most that many in memory, whatever the step.
    """

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        if len(self.experiment.metrics) >= self._flush_logs_every_n_steps:
            self.save()

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
