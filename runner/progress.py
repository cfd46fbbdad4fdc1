"""What a run shows while it trains: a progress bar with environment steps, updates, fps and the latest
return, and on a CPU what the whole run will cost at the rate its first updates took."""

from __future__ import annotations

import logging
import time

from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

log = logging.getLogger(__name__)

_FORMATS = {"env_steps": "{:,.0f}", "updates": "{:,.0f}", "fps": "{:.1f}", "return": "{:.1f}"}


class ProgressBar(TQDMProgressBar):
    """TQDM bar counting this fit's updates towards the run's total; counters print as integers (``12,800``).

    A resumed run counts the updates left: from the checkpoint's update count, not from the batch
    index Lightning restores (which showed ``102/?``).
    """

    _first = 0  # updates made before this fit: those of the checkpoint when resumed

    @property
    def total_train_batches(self) -> int | float:
        """Updates this fit will make, a resumed one included (the experience iterable has no length)."""
        experience = getattr(self.trainer.lightning_module, "experience", None)
        if experience is None:
            return super().total_train_batches
        return experience.total_updates - self._first

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self._first = getattr(pl_module, "updates", 0)  # the checkpoint is restored by now
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.set_description("Training")

    def on_train_epoch_start(self, trainer, *args):
        """Label the bar "Training": a whole run is one Lightning epoch, so a resumed run showed "Epoch 1"."""
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("Training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        done = getattr(pl_module, "updates", self._first + batch_idx + 1) - self._first
        super().on_train_batch_end(trainer, pl_module, outputs, batch, done - 1)

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {k: _FORMATS[k].format(float(v)) if k in _FORMATS else v for k, v in metrics.items()}


CPU_PRESETS = (
    "recipe=dreamerv2_cartpole (a small model on CartPole's state, minutes), debug=smoke (seconds) or size=small"
)


class CostEstimate(Callback):
    """On a CPU, say after the first updates what the whole run will cost at the rate they took.

    The rate is wall time per update between the ends of updates ``skip`` and ``skip + measure``
    (the first ones pay warm-up and any compilation), collection and replay sampling included: the
    rate the run will go at. The paper-size agents are GPU work (a DreamerV2 Atari update takes
    seconds on a 2-core CPU, and a run makes millions), so a run estimated past ``advise_hours``
    names the presets that suit a CPU.
    """

    def __init__(self, skip: int = 1, measure: int = 3, advise_hours: float = 12.0):
        if skip < 1 or measure < 1:
            raise ValueError(f"skip and measure must be >= 1, got {skip} and {measure}")
        self.skip, self.measure, self.advise_hours = skip, measure, advise_hours
        self._ended, self._start = 0, 0.0  # updates ended in this fit; when update ``skip`` ended

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._ended += 1
        if self._ended == self.skip:
            self._start = time.perf_counter()
        elif self._ended == self.skip + self.measure and trainer.is_global_zero:
            per_update = (time.perf_counter() - self._start) / self.measure
            left = max(pl_module.experience.total_updates - pl_module.updates, 0)
            self.report(per_update, left, type(trainer.accelerator).__name__)

    def report(self, per_update: float, left: int, accelerator: str) -> None:
        if accelerator != "CPUAccelerator":
            return
        hours = per_update * left / 3600
        line = (
            f"on this CPU an update takes {per_update:.2f} s (collection included): the {left:,} updates left "
            f"will take about {_duration(hours)}"
        )
        if hours > self.advise_hours:
            log.warning("%s. This config is sized for a GPU; on a CPU use %s", line, CPU_PRESETS)
        else:
            log.info(line)


def _duration(hours: float) -> str:
    """``3.2 minutes``, ``5.1 hours``, ``12 days``: the unit a reader takes in at a glance."""
    if hours < 1:
        return f"{hours * 60:.1f} minutes"
    if hours < 48:
        return f"{hours:.1f} hours"
    days = hours / 24
    return f"{days:,.0f} days ({days / 365:.1f} years)" if days > 365 else f"{days:,.0f} days"
