"""A Lightning progress bar that shows environment steps, updates, fps and the latest return."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

_FORMATS = {"env_steps": "{:,.0f}", "updates": "{:,.0f}", "fps": "{:.1f}", "return": "{:.1f}"}


class ProgressBar(TQDMProgressBar):
    """TQDM bar whose counters print as integers (``env_steps=12,800``) instead of ``1.28e+04``."""

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {k: _FORMATS[k].format(float(v)) if k in _FORMATS else v for k, v in metrics.items()}
