"""Evaluate a checkpoint: ``python run.py evaluate=<run dir> eval.episodes=10 eval.policy=mode``.

Runs full episodes with the actor (its mode, or samples with ``eval.policy=sample``),
prints mean +- std of the (unclipped) return, writes ``eval/returns.csv`` and GIF
videos of the first ``eval.videos`` episodes into the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict

import registry
from recipes.checkpoint import load_checkpoint
from registry import ConfigError

log = logging.getLogger(__name__)
POLICIES = ("mode", "sample")


def run_episode(module, env, seed: int, mode: bool, record: bool) -> tuple[float, int, list]:
    """One episode of a single (non-vector) env; returns (return, length, frames)."""
    module._agent_state = None
    obs, _ = env.reset(seed=seed)
    total, length, frames = 0.0, 0, []
    while True:
        if record and "image" in obs:
            frames.append(np.moveaxis(obs["image"], 0, -1).squeeze(-1) if obs["image"].shape[0] == 1 else np.moveaxis(obs["image"], 0, -1))
        td = TensorDict({k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}, batch_size=[1])
        action = module.policy(td, mode=mode)[0].cpu()
        env_action = int(action.argmax()) if module.env_info.discrete else action.numpy()
        obs, reward, terminated, truncated, _ = env.step(env_action)
        total += float(reward)
        length += 1
        if terminated or truncated:
            return total, length, frames


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``<cfg.evaluate>/checkpoints/<eval.checkpoint>`` for ``eval.episodes`` episodes."""
    from recipes.train import validate

    run_dir = Path(cfg.evaluate)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"evaluate: {run_dir} is not a run directory (no config.yaml)")
    eval_cfg = cfg.eval
    if eval_cfg.policy not in POLICIES:
        raise ConfigError(f"eval.policy: unknown {eval_cfg.policy!r}; valid: {', '.join(POLICIES)}")
    run_cfg = OmegaConf.load(saved)
    run, components = validate(run_cfg)
    checkpoint = load_checkpoint(run_dir / "checkpoints" / eval_cfg.checkpoint)
    env = registry.build("env", components["env"], path="env", seed=run.seed + 10_000)
    from components.envs import env_info

    module = registry.get("recipe", run.recipe).target(run.model, run.behavior, components, env_info(env))
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    returns = []
    for i in range(eval_cfg.episodes):
        ret, length, frames = run_episode(module, env, run.seed + 10_000 + i, eval_cfg.policy == "mode", i < eval_cfg.videos)
        returns.append(ret)
        log.info("episode %d: return %.1f, length %d", i, ret, length)
        if frames:
            imageio.mimsave(out / f"episode_{i}.gif", frames, duration=1 / 30)
    env.close()
    returns_np = np.asarray(returns)
    lines = ["episode,return"] + [f"{i},{r}" for i, r in enumerate(returns)]
    (out / "returns.csv").write_text("\n".join(lines) + "\n")
    summary = {"episodes": len(returns), "mean": float(returns_np.mean()), "std": float(returns_np.std())}
    print(f"return over {len(returns)} episodes ({eval_cfg.policy}): {summary['mean']:.1f} +- {summary['std']:.1f}")
    return summary
