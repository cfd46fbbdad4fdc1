"""The base of every agent: what training, checkpoints and logging need beyond the agent's own learning.

An agent is a ``LightningModule`` registered as ``@register("agent", name)`` and built as
``target(run, components, env_info)``; its interface is ``registry.interfaces.Agent``.
Subclassing :class:`AgentModule` gives the rest of the contract: the ``updates`` counter, the
``experience`` (attached by ``runner.train``) and its state in every checkpoint, the end of
the fit, and the progress bar and logger rows. A subclass writes ``policy``,
``training_step`` (calling :meth:`count_update` first, :meth:`skip_update` when it abandons the
update, and :meth:`log_update` at the end) and
``configure_optimizers``; ``video`` is optional.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from registry import ConfigError


def rank_states(checkpoint: dict) -> list[dict]:
    """What :meth:`AgentModule.on_save_checkpoint` keeps of each rank (experience counters, replay
    sampler, RNG), rank 0 first: read back on resume and by tools that open a run's replay."""
    return checkpoint["agent"]["ranks"]


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or Inf; the message names the term and the update (``train.nonfinite=stop``)."""


class AgentModule(L.LightningModule):
    """Update counter, experience checkpointing and progress logging shared by all agents."""

    def __init__(self, log_every: int = 100):
        super().__init__()
        self.log_every = log_every
        self.experience = None  # attached by runner.train before fitting
        self.updates = 0  # updates made; saved in checkpoints
        self.skipped_updates = 0  # updates an agent skipped on a non-finite loss (train.nonfinite=skip)

    def count_update(self) -> int:
        """Count the update being made (call first in ``training_step``); returns the new count."""
        self.updates += 1
        return self.updates

    def skip_update(self) -> None:
        """Take back the count of an update abandoned on a non-finite loss: the schedules that read
        ``updates`` (slow critic, pretrain, logging) go on as if its batch had never come."""
        self.updates -= 1
        self.skipped_updates += 1

    def video(self, batch):
        """Frames uint8 ``[T, H, W, C]`` to show for a replayed ``[B, T]`` batch, or None (the default)."""
        return None

    def on_train_epoch_end(self) -> None:
        # One epoch is one pass of the experience iterable, which ends at ``train.steps``.
        self.trainer.should_stop = True

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every rank's counters, sampler and RNG states (CPU, and the GPU's when it runs on one), so a
        # data-parallel run resumes each shard and a resumed GPU run draws what it would have drawn.
        # The batch Lightning has fetched ahead is not trained yet: the checkpoint counts only the batches
        # trained on (or skipped), so a resume schedules that update again instead of skipping it.
        state = {
            "experience": {**self.experience.state_dict(), "updates": self.updates + self.skipped_updates},
            "updates": self.updates,
            "skipped_updates": self.skipped_updates,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        ranks = [state]
        if self.trainer.world_size > 1:
            ranks = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(ranks, state)
        checkpoint["agent"] = {"ranks": ranks}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        ranks = rank_states(checkpoint)
        if len(ranks) != self.trainer.world_size:
            raise ConfigError(
                f"this checkpoint was written by {len(ranks)} rank(s); resume it with the same world size "
                f"(train.devices x train.num_nodes = {len(ranks)}), not {self.trainer.world_size}"
            )
        state = ranks[self.trainer.global_rank]
        self.experience.load_state_dict(state["experience"])
        self.updates = state["updates"]
        self.skipped_updates = state["skipped_updates"]
        torch.set_rng_state(state["torch_rng"])
        # Restored before the module moves to its device: the trainer's device is the one it will run on.
        device = self.trainer.strategy.root_device
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)

    # -- logging ----------------------------------------------------------------------------------
    def log_update(self, metrics: dict) -> None:
        """Progress bar counters; finished episodes; ``metrics`` every ``log_every`` updates (at frames)."""
        exp = self.experience
        bar = {"env_steps": float(exp.global_steps), "updates": float(self.updates), "fps": exp.fps}
        if not math.isnan(exp.last_return):
            bar["return"] = exp.last_return
        self.log_dict(bar, prog_bar=True, logger=False, batch_size=1)
        if self.logger is None:
            return
        while exp.finished:
            steps, ret, length, stats = exp.finished.popleft()  # stats: the env's info["episode_stats"]
            self.logger.log_metrics(
                {"episode/return": ret, "episode/length": length, **{f"episode/{k}": v for k, v in stats.items()}},
                step=steps * exp.world_size * exp.info.action_repeat,
            )
        if self.updates % self.log_every == 0:
            scalars = {k: float(v) for k, v in metrics.items()}
            scalars.update({"train/updates": self.updates, "train/env_steps": exp.global_steps, "train/fps": exp.fps})
            self.logger.log_metrics(scalars, step=exp.frames)
