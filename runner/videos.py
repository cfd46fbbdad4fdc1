"""Open-loop video predictions during training, written as GIFs to the run directory and to the logger."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from components.diskspace import writing


class VideoPredictions(Callback):
    """Every ``every`` updates (rank 0): the agent's ``video`` of ``sequences`` replayed windows (Dreamer:
    5 observed frames, then model-only frames); nothing for an agent whose ``video`` is None."""

    def __init__(self, every: int, run_dir: Path, sequences: int = 4):
        self.every, self.sequences = every, sequences
        self.directory = Path(run_dir) / "videos"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not trainer.is_global_zero or pl_module.updates % self.every:
            return
        video = pl_module.video(pl_module.experience.replay.sample(self.sequences))
        if video is None:
            return
        video = video.numpy()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"openloop_{pl_module.updates:08d}.gif"
        with writing("video", path, video.nbytes, remove=True):
            imageio.mimsave(path, list(video.squeeze(-1) if video.shape[-1] == 1 else video), duration=1 / 15)
        step = pl_module.experience.frames
        if isinstance(trainer.logger, TensorBoardLogger):
            strip = video[:: max(len(video) // 10, 1)]  # every few frames, left to right
            trainer.logger.experiment.add_image(
                "openloop",
                strip.transpose(1, 0, 2, 3).reshape(strip.shape[1], -1, strip.shape[3]),
                step,
                dataformats="HWC",
            )
        elif isinstance(trainer.logger, WandbLogger):
            trainer.logger.log_video("openloop", [str(path)], step=step)
