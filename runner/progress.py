"""A Lightning progress bar that shows environment steps, updates, fps and the latest return."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

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
