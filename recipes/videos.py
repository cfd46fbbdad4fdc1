"""Open-loop video predictions during training, written as GIFs to the run directory and to the logger."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from recipes.diskspace import writing


class VideoPredictions(Callback):
    """Every ``every`` updates (rank 0): ``sequences`` replayed windows, 5 observed frames then model-only frames."""

    def __init__(self, every: int, run_dir: Path, sequences: int = 4, context: int = 5):
        self.every, self.sequences, self.context = every, sequences, context
        self.directory = Path(run_dir) / "videos"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (
            not trainer.is_global_zero
            or pl_module.updates_made % self.every
            or "image" not in pl_module.env_info.obs_space
        ):
            return
        sample = pl_module.experience.replay.sample(self.sequences).to(pl_module.device)
        video = pl_module.world_model.open_loop(sample, self.context).numpy()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"openloop_{pl_module.updates_made:08d}.gif"
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
