"""The adapter layer every env kind goes through: dict observations plus is_first / is_last / is_terminal."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np

from registry import ConfigError

FLAGS = ("is_first", "is_last", "is_terminal")


class Flags(gym.Wrapper):
    """Adds ``is_first`` (reset obs), ``is_last`` (terminated or truncated) and ``is_terminal`` (terminated)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise TypeError(f"Flags wraps envs with Dict observations, got {env.observation_space}")
        spaces = dict(env.observation_space.spaces)
        spaces.update({k: gym.spaces.Box(0, 1, (), dtype=np.bool_) for k in FLAGS})
        self.observation_space = gym.spaces.Dict(spaces)

    def reset(self, **kwargs):
        """Reset; the observation has ``is_first`` True and the other flags False."""
        obs, info = self.env.reset(**kwargs)
        return self._flags(obs, first=True, last=False, terminal=False), info

    def step(self, action):
        """Step; ``is_last`` on any episode end, ``is_terminal`` only on termination (not truncation)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs = self._flags(obs, first=False, last=bool(terminated or truncated), terminal=bool(terminated))
        return obs, reward, terminated, truncated, info

    @staticmethod
    def _flags(obs: dict, first: bool, last: bool, terminal: bool) -> dict:
        return {**obs, "is_first": np.bool_(first), "is_last": np.bool_(last), "is_terminal": np.bool_(terminal)}


def finish(env: gym.Env, action_repeat: int) -> gym.Env:
    """Wrap ``env`` (dict observations) with the shared flags and record its action repeat in metadata."""
    env = Flags(env)
    env.metadata = {**env.metadata, "action_repeat": int(action_repeat)}
    return env


def image_space(channels: int, size: int) -> gym.spaces.Box:
    """The ``image`` space: uint8 CHW of ``channels`` x ``size`` x ``size``."""
    return gym.spaces.Box(0, 255, (channels, size, size), np.uint8)


def to_chw(image: np.ndarray, size: int) -> np.ndarray:
    """An HWC (or HW) uint8 image resized to ``size`` x ``size`` and laid out CHW."""
    image = np.asarray(image)
    if image.shape[0] != size or image.shape[1] != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = image[..., None]
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.uint8)


def check_positive(**values: int) -> None:
    """Raise ``ConfigError("<key>: must be at least 1, ...")`` for any value below 1 (in a schema's check)."""
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
