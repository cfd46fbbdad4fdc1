"""The adapter layer every env kind goes through: dict observations plus is_first / is_last / is_terminal."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import cv2
import gymnasium as gym
import numpy as np

from registry import ConfigError

FLAGS = ("is_first", "is_last", "is_terminal")


class Flags(gym.Wrapper):
    """Adds ``is_first`` (reset obs), ``is_last`` (terminated or truncated) and ``is_terminal`` (terminated)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        spaces = dict(env.observation_space.spaces)
        spaces.update({k: gym.spaces.Box(0, 1, (), dtype=bool) for k in FLAGS})
        self.observation_space = gym.spaces.Dict(spaces)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._flags(obs, first=True, last=False, terminal=False), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs = self._flags(obs, first=False, last=terminated or truncated, terminal=terminated)
        return obs, reward, terminated, truncated, info

    @staticmethod
    def _flags(obs: dict, first: bool, last: bool, terminal: bool) -> dict:
        return {**obs, "is_first": np.bool_(first), "is_last": np.bool_(last), "is_terminal": np.bool_(terminal)}


def to_chw(image: np.ndarray, size: int) -> np.ndarray:
    """An HWC (or HW) uint8 image resized to ``size`` x ``size`` and laid out CHW."""
    if image.shape[0] != size or image.shape[1] != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = image[..., None]
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def unknown(path: str, what: str, value: str, valid: Iterable[str], hint: str = "") -> ConfigError:
    """An error for an unknown id that lists the closest valid ones."""
    valid = sorted(valid)
    close = difflib.get_close_matches(value, valid, n=5, cutoff=0.5)
    listed = ", ".join(close) if close else ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    return ConfigError(f"{path}: unknown {what} {value!r}; {'did you mean' if close else 'valid'}: {listed}{hint}")
