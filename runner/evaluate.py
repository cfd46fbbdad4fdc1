"""Evaluate a checkpoint: ``python run.py evaluate=<run dir> eval.episodes=10 eval.policy=mode``.

Runs full episodes with the actor (its mode, or samples with ``eval.policy=sample``),
prints mean +- std of the (unclipped) return, writes ``returns.csv`` and GIF
videos of the first ``eval.videos`` episodes into this evaluation's own folder,
``<run dir>/eval/<date>_<time>/`` (Hydra's job folder, beside its ``.hydra/``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf

import recipes.dreamer  # noqa: F401  (registers the built-in agent, which load_agent builds)
import registry
from components.diskspace import write_atomically
from registry import ConfigError
from runner import lock
from runner.checkpoint import load_checkpoint
from runner.config import saved_config, validate
from runner.episodes import run_episode, write_gif

log = logging.getLogger(__name__)
_MISSING = object()


def load_run(run_dir: Path, checkpoint: str, command: str, overrides: Sequence[str] = ()) -> tuple:
    """(run config, component sections, checkpoint) of a run directory: its saved config, validated,
    and ``checkpoints/<checkpoint>`` loaded; ``evaluate=``, :func:`load_agent` and the tools that open
    a checkpoint start from it.

    ``overrides`` (``key=value``) change keys the saved config has: a key it lacks is a
    ``ConfigError`` naming the file. ``command`` names the caller in the error for a directory
    that is not a run.
    """
    cfg = saved_config(run_dir, command)
    for override in overrides:
        key, _, value = override.partition("=")
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise ConfigError(f"{command}: {key!r} is not a key of {run_dir / 'config.yaml'}")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    run, components = validate(cfg)
    return run, components, load_checkpoint(run_dir / "checkpoints" / checkpoint)


def load_agent(run_dir: Path, checkpoint: str, env_seed: int, command: str) -> tuple:
    """(run config, env, agent) of a run directory: :func:`load_run`, one env seeded ``seed + env_seed``
    and the run's agent restored from the checkpoint, in eval mode."""
    from components.envs import env_info

    run, components, state = load_run(run_dir, checkpoint, command)
    env = registry.build("env", components["env"], path="env", seed=run.seed + env_seed)
    agent = registry.get("agent", run.agent).target(run, components, env_info(env))
    agent.load_state_dict(state["state_dict"])
    agent.eval()
    return run, env, agent


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``<cfg.evaluate>/checkpoints/<eval.checkpoint>`` for ``eval.episodes`` episodes."""
    run_dir = Path(cfg.evaluate)
    eval_cfg = cfg.eval
    run, env, module = load_agent(run_dir, eval_cfg.checkpoint, 10_000, "evaluate")
    out = Path(cfg.run_dir)  # this evaluation's own folder: a later one writes beside it, not over it
    # It reads a checkpoint (written atomically) and writes only here, so it may run beside the training;
    # the lock refuses a second evaluation sent to the same folder.
    with lock.hold(out, "evaluate"):
        return _evaluate(run, env, module, out, eval_cfg)


def _evaluate(run, env, module, out: Path, eval_cfg) -> dict:
    returns = []
    for i in range(eval_cfg.episodes):
        ret, length, frames = run_episode(module, env, run.seed + 10_000 + i, eval_cfg.policy, i < eval_cfg.videos)
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
