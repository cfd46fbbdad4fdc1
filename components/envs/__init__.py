"""Environments through one adapter layer: ``atari``, ``dmc`` and ``gym`` registrations plus vector envs.

Every env yields dict observations (``image`` uint8 CHW and/or float32 vectors)
with ``is_first``, ``is_last`` and ``is_terminal``; actions are ``Discrete`` or
``Box(-1, 1)``; ``metadata["action_repeat"]`` counts frames per agent step.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium
from omegaconf import DictConfig, OmegaConf

from components.envs import atari, crafter, dmc, gym  # noqa: F401  (importing them registers the env kinds)
from components.envs.base import FLAGS, Flags
from registry import build, validate

__all__ = ["EnvInfo", "FLAGS", "Flags", "env_info", "make_vector_env"]


@dataclass(frozen=True)
class EnvInfo:
    """What a model needs to know about an env: observation shapes and the action space."""

    obs_space: dict[str, tuple[int, ...]]
    action_dim: int
    discrete: bool
    action_repeat: int


def _build(cfg: Mapping, seed: int) -> gymnasium.Env:
    return build("env", cfg, path="env", seed=seed)


def _call(target: Any, typed: Any, seed: int) -> gymnasium.Env:
    return target(seed=seed) if typed is None else target(typed, seed=seed)


def make_vector_env(
    cfg: Mapping | DictConfig, num_envs: int, seed: int, asynchronous: bool = False
) -> gymnasium.vector.VectorEnv:
    """``num_envs`` copies of the env (env i seeded ``seed + i``), in subprocesses when ``asynchronous``.

    Episodes autoreset in gymnasium's default NEXT_STEP mode: the step after an
    episode ends returns the reset observation, flagged ``is_first``.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    mode = gymnasium.vector.AutoresetMode.NEXT_STEP
    first = _build(cfg, seed)  # built here, so a bad config fails in this process with a clear error
    if not asynchronous:
        fns = [lambda: first] + [partial(_build, cfg, seed + i) for i in range(1, num_envs)]
        return gymnasium.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    first.close()
    # Workers call the validated factory directly, so they import only the env's module rather
    # than every registered component (torch included); unpicklable targets go through the registry.
    entry, typed = validate("env", cfg, path="env")
    try:
        pickle.dumps((entry.target, typed))
        fns = [partial(_call, entry.target, typed, seed + i) for i in range(num_envs)]
    except Exception:
        fns = [partial(_build, cfg, seed + i) for i in range(num_envs)]
    # spawn: forking a process that holds torch threads or GL contexts is unsafe.
    return gymnasium.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=mode)


def env_info(env: gymnasium.Env | gymnasium.vector.VectorEnv) -> EnvInfo:
    """Observation shapes (without the flags), action size and kind, and action repeat of an env or vector env."""
    vector = isinstance(env, gymnasium.vector.VectorEnv)
    obs_space = env.single_observation_space if vector else env.observation_space
    action_space = env.single_action_space if vector else env.action_space
    discrete = isinstance(action_space, gymnasium.spaces.Discrete)
    repeat = (env.metadata or {}).get("action_repeat")
    if repeat is None and vector:
        repeat = env.get_attr("metadata")[0].get("action_repeat")
    return EnvInfo(
        obs_space={k: tuple(s.shape) for k, s in obs_space.spaces.items() if k not in FLAGS},
        action_dim=int(action_space.n) if discrete else int(action_space.shape[0]),
        discrete=discrete,
        action_repeat=int(repeat or 1),
    )
