"""Any gymnasium environment id: vector observations as ``vector``, images (native or rendered) as ``image``."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from components.envs.base import Flags, to_chw, unknown
from registry import ConfigError, register


@dataclass
class GymConfig:
    """A gymnasium id; ``pixels`` renders rgb frames as the observation instead of the state."""

    task: str = "CartPole-v1"
    action_repeat: int = 1
    size: int = 64
    pixels: bool = False


class DictObs(gym.ObservationWrapper):
    """Box observations -> ``{"vector": float32}`` or ``{"image": uint8 CHW}``; ``pixels`` uses renders."""

    def __init__(self, env: gym.Env, size: int, pixels: bool):
        super().__init__(env)
        self.size, self.pixels = size, pixels
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"env.task: {env.spec.id} has {space} observations; the gym adapter takes a Box")
        self.image = pixels or (space.dtype == np.uint8 and len(space.shape) in (2, 3))
        if self.image:
            channels = 3 if pixels or len(space.shape) == 3 and space.shape[-1] == 3 else 1
            self.observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (channels, size, size), np.uint8)})
        else:
            flat = int(np.prod(space.shape))
            self.observation_space = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (flat,), np.float32)})

    def observation(self, obs):
        if self.pixels:
            return {"image": to_chw(self.env.render(), self.size)}
        if self.image:
            return {"image": to_chw(np.asarray(obs), self.size)}
        return {"vector": np.asarray(obs, np.float32).reshape(-1)}


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards, stopping at an episode end."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


@register("env", "gym", GymConfig)
def make(cfg: GymConfig, seed: int = 0) -> gym.Env:
    """A gymnasium env with dict observations, actions in one-hot-able Discrete or [-1, 1] Box."""
    if cfg.task not in gym.registry:
        raise unknown("env.task", "gymnasium id", cfg.task, gym.registry.keys())
    env = gym.make(cfg.task, render_mode="rgb_array" if cfg.pixels else None)
    if isinstance(env.action_space, gym.spaces.Box):
        env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    if cfg.action_repeat > 1:
        env = ActionRepeat(env, cfg.action_repeat)
    env = Flags(DictObs(env, cfg.size, cfg.pixels))
    env.metadata = {**env.metadata, "action_repeat": cfg.action_repeat}
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env
