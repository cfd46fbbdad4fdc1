"""Evaluation during training: a Lightning callback running evaluation episodes every few agent steps."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

import registry
from runner.episodes import run_episode, write_gif


class PeriodicEval(Callback):
    """Every ``every`` agent steps (all ranks), rank 0 runs ``episodes`` evaluation episodes on a separate
    env, acting by the actor's mode or by samples (``policy``, from ``eval.policy``).

    Logs ``eval/return`` against frames and appends a row to ``<run dir>/eval/learning.csv``:
    frames, agent_steps, updates, eval_return (the mean over the episodes), train_return, wall_s (seconds
    of training, summed over the resumes of a run). Each episode's own return goes to ``eval/episodes.csv``
    (frames, agent_steps, episode, return), so the spread is kept too. The first ``videos`` episodes are
    written as ``eval/episode_<frames>_<i>.gif``.
    """

    def __init__(
        self, env_cfg: dict, every: int, episodes: int, run_dir: Path, seed: int, videos: int = 0, policy: str = "mode"
    ):
        self.env_cfg, self.every, self.episodes, self.seed, self.videos = env_cfg, every, episodes, seed, videos
        self.policy = policy
        self.path = Path(run_dir) / "eval" / "learning.csv"
        self.episodes_path = self.path.with_name("episodes.csv")
        self._next, self._env = every, None  # the clock starts in on_train_start

    def on_train_start(self, trainer, pl_module):
        self._next = (pl_module.experience.global_steps // self.every + 1) * self.every
        self._start = time.time()
        if not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.episodes_path.exists():  # also for a run from before this file existed
            self.episodes_path.write_text("frames,agent_steps,episode,return\n")
        if not self.path.exists():
            self.path.write_text("frames,agent_steps,updates,eval_return,train_return,wall_s\n")
            return
        rows = self.path.read_text().splitlines()
        if len(rows) > 1:  # a resumed run: its wall time goes on from the last row, not from zero
            self._start -= float(rows[-1].rsplit(",", 1)[1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        exp = pl_module.experience
        if exp.global_steps < self._next:
            return
        self._next += self.every
        if not trainer.is_global_zero:
            return
        if self._env is None:
            self._env = registry.build("env", self.env_cfg, path="env", seed=self.seed + 20_000)
        was_training = pl_module.training
        pl_module.eval()
        returns = []
        for i in range(self.episodes):
            ret, _, frames = run_episode(pl_module, self._env, self.seed + 20_000 + i, self.policy, i < self.videos)
            returns.append(ret)
            if frames:
                write_gif(self.path.parent / f"episode_{exp.frames:012d}_{i}.gif", frames)
        pl_module.train(was_training)
        mean = float(np.mean(returns))
        with open(self.episodes_path, "a") as f:
            f.writelines(f"{exp.frames},{exp.global_steps},{i},{ret}\n" for i, ret in enumerate(returns))
        with open(self.path, "a") as f:
            f.write(
                f"{exp.frames},{exp.global_steps},{pl_module.updates},{mean},{exp.last_return},"
                f"{time.time() - self._start:.1f}\n"
            )
        if trainer.logger:
            trainer.logger.log_metrics({"eval/return": mean}, step=exp.frames)

    def on_train_end(self, trainer, pl_module):
        if self._env is not None:
            self._env.close()
