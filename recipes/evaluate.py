"""Evaluate a checkpoint: ``python run.py evaluate=<run dir> eval.episodes=10 eval.policy=mode``.

Runs full episodes with the actor (its mode, or samples with ``eval.policy=sample``),
prints mean +- std of the (unclipped) return, writes ``returns.csv`` and GIF
videos of the first ``eval.videos`` episodes into this evaluation's own folder,
``<run dir>/eval/<date>_<time>/`` (Hydra's job folder, beside its ``.hydra/``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from tensordict import TensorDict

import registry
from recipes.checkpoint import load_checkpoint
from recipes.diskspace import write_atomically, writing
from registry import ConfigError

log = logging.getLogger(__name__)
POLICIES = ("mode", "sample")


def run_episode(module, env, seed: int, mode: bool, record: bool) -> tuple[float, int, list]:
    """One episode of a single (non-vector) env; returns (return, length, frames).

    The module's acting state is saved and restored, so this can run in the middle of training.
    """
    saved, module._agent_state = module._agent_state, None
    try:
        return _episode(module, env, seed, mode, record)
    finally:
        module._agent_state = saved


def frame(env, obs: dict) -> np.ndarray | None:
    """What the agent's episode looks like now, HWC uint8: its image observation, else the env's render.

    None when there is neither (an env without ``render_mode="rgb_array"``).
    """
    if "image" in obs:
        image = np.moveaxis(obs["image"], 0, -1)
        return image.squeeze(-1) if image.shape[-1] == 1 else image
    if env.render_mode == "rgb_array":
        return np.asarray(env.render())
    return None


def write_gif(path: Path, frames: list) -> None:
    """An evaluation episode's frames as a GIF at 30 frames per second."""
    with writing("video", path, sum(f.nbytes for f in frames), remove=True):
        imageio.mimsave(path, frames, duration=1 / 30)


def _episode(module, env, seed: int, mode: bool, record: bool) -> tuple[float, int, list]:
    obs, _ = env.reset(seed=seed)
    total, length, frames = 0.0, 0, []
    while True:
        if record and (image := frame(env, obs)) is not None:
            frames.append(image)
        td = TensorDict({k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}, batch_size=[1])
        action = module.policy(td, mode=mode)[0].cpu()
        env_action = int(action.argmax()) if module.env_info.discrete else action.numpy()
        obs, reward, terminated, truncated, _ = env.step(env_action)
        total += float(reward)
        length += 1
        if terminated or truncated:
            return total, length, frames


def load_agent(run_dir: Path, checkpoint: str, env_seed: int, command: str) -> tuple:
    """(run config, env, agent) of a run directory: its saved config, one env seeded ``seed + env_seed``
    and the recipe's module restored from ``checkpoints/<checkpoint>``, in eval mode.

    ``command`` names the caller in the error for a directory that is not a run.
    """
    from components.envs import env_info
    from recipes.train import saved_config, validate

    run, components = validate(saved_config(run_dir, command))
    state = load_checkpoint(run_dir / "checkpoints" / checkpoint)
    env = registry.build("env", components["env"], path="env", seed=run.seed + env_seed)
    module = registry.get("recipe", run.recipe).target(run.model, run.behavior, components, env_info(env))
    module.load_state_dict(state["state_dict"])
    module.eval()
    return run, env, module


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``<cfg.evaluate>/checkpoints/<eval.checkpoint>`` for ``eval.episodes`` episodes."""
    run_dir = Path(cfg.evaluate)
    eval_cfg = cfg.eval
    if eval_cfg.policy not in POLICIES:
        raise ConfigError(f"eval.policy: unknown {eval_cfg.policy!r}; valid: {', '.join(POLICIES)}")
    run, env, module = load_agent(run_dir, eval_cfg.checkpoint, 10_000, "evaluate")
    out = Path(cfg.run_dir)  # this evaluation's own folder: a later one writes beside it, not over it
    out.mkdir(parents=True, exist_ok=True)
    returns = []
    for i in range(eval_cfg.episodes):
        ret, length, frames = run_episode(
            module, env, run.seed + 10_000 + i, eval_cfg.policy == "mode", i < eval_cfg.videos
        )
        returns.append(ret)
        log.info("episode %d: return %.1f, length %d", i, ret, length)
        if frames:
            write_gif(out / f"episode_{i}.gif", frames)
    env.close()
    returns_np = np.asarray(returns)
    lines = ["episode,return"] + [f"{i},{r}" for i, r in enumerate(returns)]
    write_atomically("log", out / "returns.csv", "\n".join(lines) + "\n")
    summary = {"episodes": len(returns), "mean": float(returns_np.mean()), "std": float(returns_np.std())}
    print(f"return over {len(returns)} episodes ({eval_cfg.policy}): {summary['mean']:.1f} +- {summary['std']:.1f}")
    return summary


class PeriodicEval(Callback):
    """Every ``every`` agent steps (all ranks), rank 0 runs ``episodes`` evaluation episodes (policy mode)
    on a separate env.

    Logs ``eval/return`` against frames and appends a row to ``<run dir>/eval/learning.csv``:
    frames, agent_steps, updates, eval_return (the mean over the episodes), train_return, wall_s (seconds
    of training, summed over the resumes of a run). Each episode's own return goes to ``eval/episodes.csv``
    (frames, agent_steps, episode, return), so the spread is kept too. The first ``videos`` episodes are
    written as ``eval/episode_<frames>_<i>.gif``.
    """

    def __init__(self, env_cfg: dict, every: int, episodes: int, run_dir: Path, seed: int, videos: int = 0):
        self.env_cfg, self.every, self.episodes, self.seed, self.videos = env_cfg, every, episodes, seed, videos
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
            ret, _, frames = run_episode(pl_module, self._env, self.seed + 20_000 + i, True, i < self.videos)
            returns.append(ret)
            if frames:
                write_gif(self.path.parent / f"episode_{exp.frames:012d}_{i}.gif", frames)
        pl_module.train(was_training)
        mean = float(np.mean(returns))
        with open(self.episodes_path, "a") as f:
            f.writelines(f"{exp.frames},{exp.global_steps},{i},{ret}\n" for i, ret in enumerate(returns))
        with open(self.path, "a") as f:
            f.write(
                f"{exp.frames},{exp.global_steps},{pl_module.updates_made},{mean},{exp.last_return},"
                f"{time.time() - self._start:.1f}\n"
            )
        if trainer.logger:
            trainer.logger.log_metrics({"eval/return": mean}, step=exp.frames)

    def on_train_end(self, trainer, pl_module):
        if self._env is not None:
            self._env.close()
