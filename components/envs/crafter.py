"""Crafter (Hafner 2021, the ``crafter`` package): an open-world survival game from 64x64 pixels.

The agent sees a local top-down view as ``image`` and picks one of 17 actions. ``task``
``reward`` gives +1 for each of the 22 achievements the first time it is unlocked in an
episode and +-0.1 for each health point gained or lost; ``noreward`` gives none. An episode
ends at death (terminal) or after ``time_limit`` steps (truncated). At an episode's end the
step's ``info["episode_stats"]`` holds ``achievement_<name>`` = 1 if it was unlocked in the
episode, else 0; the training loop logs them as ``episode/achievement_<name>``, whose mean over
episodes is the success rate the Crafter score is computed from.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from components.envs.base import check_positive, finish, image_space
from registry import register, unknown

TASKS = ("reward", "noreward")


@dataclass
class CrafterConfig:
    """Crafter with or without its achievement reward; image size; episode length in steps."""

    task: str = "reward"
    """``reward`` (the Crafter benchmark's reward) or ``noreward``."""
    size: int = 64
    """Side of the square ``image`` observation in pixels."""
    time_limit: int = 10000
    """Steps until the episode is truncated (Crafter's default length)."""

    def check(self) -> None:
        if self.task not in TASKS:
            raise unknown("task", self.task, TASKS, what="Crafter task")
        check_positive(size=self.size, time_limit=self.time_limit)


class Crafter(gym.Env):
    """``crafter.Env`` under the gymnasium API, with dict ``image`` observations in CHW layout."""

    metadata: dict = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, cfg: CrafterConfig, seed: int = 0):
        self.cfg = cfg
        self.observation_space = gym.spaces.Dict({"image": image_space(3, cfg.size)})
        self.action_space = gym.spaces.Discrete(17)
        self._env = self._make(seed)
        self._last = None

    def _make(self, seed: int):
        import crafter

        c = self.cfg
        return crafter.Env(size=(c.size, c.size), reward=c.task == "reward", length=c.time_limit, seed=seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new world (a new seed builds a new crafter env, whose worlds follow from it)."""
        super().reset(seed=seed)
        if seed is not None:
            self._env = self._make(seed)
        self._last = self._env.reset()
        return {"image": self._chw(self._last)}, {}

    def step(self, action):
        image, reward, done, info = self._env.step(int(action))
        self._last = image
        terminated = bool(done and info["discount"] == 0)  # death; the time limit only truncates
        out = {}
        if done:
            out["episode_stats"] = {f"achievement_{k}": float(v > 0) for k, v in info["achievements"].items()}
        return {"image": self._chw(image)}, float(reward), terminated, bool(done and not terminated), out

    def render(self):
        return self._last

    @staticmethod
    def _chw(image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image.transpose(2, 0, 1))


@register("env", "crafter", CrafterConfig)
def make(cfg: CrafterConfig, seed: int = 0) -> gym.Env:
    """Crafter from 64x64 pixels, one frame per agent step."""
    return finish(Crafter(cfg, seed), action_repeat=1)
