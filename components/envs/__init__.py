"""Environments through one adapter layer: ``atari``, ``dmc`` and ``gym`` registrations plus vector envs.

Every env yields dict observations (``image`` uint8 CHW and/or float32 vectors)
with ``is_first``, ``is_last`` and ``is_terminal``; actions are ``Discrete`` or
``Box(-1, 1)``; ``metadata["action_repeat"]`` counts frames per agent step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gymnasium

from components.envs import atari, dmc, gym  # noqa: F401  (importing them registers the env kinds)
from components.envs.base import FLAGS
from registry import build


@dataclass(frozen=True)
class EnvInfo:
    """What a model needs to know about an env: observation shapes and the action space."""

    obs_space: dict
    action_dim: int
    discrete: bool
    action_repeat: int


def _make(cfg, seed: int) -> gymnasium.Env:
    return build("env", cfg, path="env", seed=seed)


def make_vector_env(cfg, num_envs: int, seed: int, asynchronous: bool = False) -> gymnasium.vector.VectorEnv:
    """``num_envs`` copies of the env (seeds ``seed + i``), in subprocesses when ``asynchronous``."""
    first = _make(cfg, seed)  # built here, so a bad config fails in this process with a clear error
    if asynchronous:
        first.close()
        fns = [partial(_make, cfg, seed + i) for i in range(num_envs)]
        return gymnasium.vector.AsyncVectorEnv(fns, context="spawn")
    fns = [lambda: first] + [partial(_make, cfg, seed + i) for i in range(1, num_envs)]
    return gymnasium.vector.SyncVectorEnv(fns)


def env_info(env: gymnasium.Env | gymnasium.vector.VectorEnv) -> EnvInfo:
    """Observation shapes (without the flags), action size and kind, action repeat of an env."""
    single = isinstance(env, gymnasium.vector.VectorEnv)
    obs_space = env.single_observation_space if single else env.observation_space
    action_space = env.single_action_space if single else env.action_space
    discrete = isinstance(action_space, gymnasium.spaces.Discrete)
    repeat = env.metadata.get("action_repeat")
    if repeat is None and single:
        repeat = env.get_attr("metadata")[0].get("action_repeat", 1) if hasattr(env, "get_attr") else 1
    return EnvInfo(
        obs_space={k: tuple(s.shape) for k, s in obs_space.spaces.items() if k not in FLAGS},
        action_dim=int(action_space.n) if discrete else int(action_space.shape[0]),
        discrete=discrete,
        action_repeat=int(repeat or 1),
    )
