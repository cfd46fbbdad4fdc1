"""A Lightning progress bar that shows environment steps, updates, fps and the latest return."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

_FORMATS = {"env_steps": "{:,.0f}", "updates": "{:,.0f}", "fps": "{:.1f}", "return": "{:.1f}"}


class ProgressBar(TQDMProgressBar):
    """TQDM bar counting this fit's updates towards the run's total; counters print as integers (``12,800``)."""

    @property
    def total_train_batches(self) -> int | float:
        """Updates this fit will make, a resumed one included (the experience iterable has no length)."""
        experience = getattr(self.trainer.lightning_module, "experience", None)
        if experience is None:
            return super().total_train_batches
        return experience.total_updates - experience.start_updates

    def on_train_epoch_start(self, trainer, *args):
        """Label the bar "Training": a whole run is one Lightning epoch, so a resumed run showed "Epoch 1"."""
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("Training")

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {k: _FORMATS[k].format(float(v)) if k in _FORMATS else v for k, v in metrics.items()}
