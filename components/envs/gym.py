"""Any gymnasium environment id: vector observations as ``vector``, images (native or rendered) as ``image``."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from components.envs.base import check_positive, finish, image_space, to_chw
from registry import ConfigError, register, unknown


@dataclass
class GymConfig:
    """A gymnasium id; ``pixels`` renders rgb frames as the observation instead of the state."""

    task: str = "CartPole-v1"
    """A registered gymnasium id."""
    action_repeat: int = 1
    """Env steps per agent step (rewards summed)."""
    size: int = 64
    """Height and width of image observations."""
    pixels: bool = False
    """Observe rendered rgb frames instead of the state vector."""

    def check(self) -> None:
        check_positive(action_repeat=self.action_repeat, size=self.size)
        if self.task not in gym.registry:
            raise unknown("task", self.task, gym.registry.keys(), what="gymnasium id")


def is_image(space: gym.spaces.Space) -> bool:
    """Whether ``space`` is an image: a uint8 Box of shape HW or HWC."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


class DictObs(gym.ObservationWrapper):
    """Box observations -> ``{"vector": float32}`` or ``{"image": uint8 CHW}``; ``pixels`` uses renders."""

    def __init__(self, env: gym.Env, size: int, pixels: bool):
        super().__init__(env)
        self.size, self.pixels = size, pixels
        space = env.observation_space
        if not pixels and not isinstance(space, gym.spaces.Box):
            raise ConfigError(
                f"env.task: {env.spec.id} has {space} observations; "
                "the gym adapter takes a Box (or set env.pixels=true)"
            )
        self.image = pixels or is_image(space)
        if pixels:
            channels = 3
        elif self.image:
            channels = space.shape[-1] if len(space.shape) == 3 else 1
        if self.image:
            self.observation_space = gym.spaces.Dict({"image": image_space(channels, size)})
        else:
            flat = int(np.prod(space.shape))
            self.observation_space = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (flat,), np.float32)})

    def observation(self, obs):
        """The observation (or the current render) as ``{"image": CHW}`` or ``{"vector": float32}``."""
        if self.pixels:
            return {"image": to_chw(self.env.render(), self.size)}
        if self.image:
            return {"image": to_chw(obs, self.size)}
        return {"vector": np.asarray(obs, np.float32).reshape(-1)}


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards, stopping at an episode end."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        """Step ``repeat`` times (fewer if the episode ends), returning the last step with the summed reward."""
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


@register("env", "gym", GymConfig)
def make(cfg: GymConfig, seed: int = 0) -> gym.Env:
    """A gymnasium env with dict observations and ``Discrete`` or ``Box(-1, 1)`` actions."""
    env = gym.make(cfg.task, render_mode="rgb_array")  # renders only when asked: pixels, evaluation videos
    space = env.action_space
    if isinstance(space, gym.spaces.Box):
        if len(space.shape) != 1 or not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ConfigError(
                f"env.task: {cfg.task} has action space {space}; the gym adapter takes bounded 1-d Box actions"
            )
        if not (np.all(space.low == -1) and np.all(space.high == 1) and space.dtype == np.float32):
            env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
        # Unbounded actor samples (bounded_normal) are executed clipped; gymnasium's ClipAction would
        # widen the declared space to +-inf, so the clip is a TransformAction that keeps Box(-1, 1).
        env = gym.wrappers.TransformAction(env, lambda a: np.clip(a, -1.0, 1.0), env.action_space)
    elif not (isinstance(space, gym.spaces.Discrete) and space.start == 0):
        raise ConfigError(
            f"env.task: {cfg.task} has action space {space}; the gym adapter takes Discrete or Box actions"
        )
    if cfg.action_repeat > 1:
        env = ActionRepeat(env, cfg.action_repeat)
    env = finish(DictObs(env, cfg.size, cfg.pixels), cfg.action_repeat)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env
