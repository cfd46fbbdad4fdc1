"""DeepMind Control Suite from pixels (and optionally proprioception) as a gymnasium env."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from components.envs.base import Flags, unknown
from registry import register

GL_BACKENDS = ("egl", "osmesa")
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 libosmesa6"
_PROBE = "import mujoco; c = mujoco.GLContext(64, 64); c.make_current(); c.free()"


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` to the first backend that renders (probed in a subprocess), unless it is set."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    for backend in GL_BACKENDS:
        env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60)
        if probe.returncode == 0:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise RuntimeError(
        f"no headless OpenGL backend for MuJoCo works (tried {', '.join(GL_BACKENDS)}); "
        f"install the Debian packages: apt-get install {GL_PACKAGES} (or run .ci/install)"
    )


@dataclass
class DMCConfig:
    """``domain_task`` (e.g. cartpole_swingup, ball_in_cup_catch); time limit in env steps."""

    task: str = "cartpole_balance"
    action_repeat: int = 2
    size: int = 64
    camera: int = -1
    pixels: bool = True
    proprio: bool = False
    time_limit: int = 1000


class DMC(gym.Env):
    """A dm_control suite task: 64x64 renders as ``image`` (CHW), proprio vectors by name, actions in [-1, 1]."""

    metadata = {"render_modes": []}

    def __init__(self, cfg: DMCConfig, seed: int):
        from dm_control import suite

        tasks = {f"{d}_{t}": (d, t) for d, t in suite.ALL_TASKS}
        if cfg.task not in tasks:
            raise unknown("env.task", "DMC task", cfg.task, tasks)
        if not (cfg.pixels or cfg.proprio):
            raise unknown("env.pixels/proprio", "observation choice", "none", ["pixels=true", "proprio=true"])
        domain, task = tasks[cfg.task]
        self.cfg = cfg
        self.camera = cfg.camera if cfg.camera >= 0 else (2 if domain == "quadruped" else 0)
        self._env = suite.load(domain, task, task_kwargs={"random": seed})
        self._fast_render()
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum, spec.maximum
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        spaces = {}
        if cfg.pixels:
            spaces["image"] = gym.spaces.Box(0, 255, (3, cfg.size, cfg.size), np.uint8)
        if cfg.proprio:
            for key, value in self._env.observation_spec().items():
                spaces[key] = gym.spaces.Box(-np.inf, np.inf, (int(np.prod(value.shape)),), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self._steps = 0

    def _fast_render(self) -> None:
        """No shadows, reflections or multisampling: several times faster 64x64 renders."""
        model = self._env.physics.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0

    def _obs(self, time_step) -> dict:
        obs = {}
        if self.cfg.pixels:
            frame = self._env.physics.render(self.cfg.size, self.cfg.size, camera_id=self.camera)
            obs["image"] = np.ascontiguousarray(frame.transpose(2, 0, 1))
        if self.cfg.proprio:
            for key, value in time_step.observation.items():
                obs[key] = np.asarray(value, np.float32).reshape(-1)
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._steps = 0
        return self._obs(self._env.reset()), {}

    def step(self, action):
        action = self._low + (np.asarray(action, np.float64) + 1.0) / 2.0 * (self._high - self._low)
        reward = 0.0
        for _ in range(self.cfg.action_repeat):
            time_step = self._env.step(action)
            reward += time_step.reward or 0.0
            self._steps += 1
            if time_step.last() or self._steps >= self.cfg.time_limit:
                break
        terminated = time_step.last() and time_step.discount == 0.0
        truncated = not terminated and (time_step.last() or self._steps >= self.cfg.time_limit)
        return self._obs(time_step), reward, terminated, truncated, {}

    def close(self):
        self._env.close()


@register("env", "dmc", DMCConfig)
def make(cfg: DMCConfig, seed: int = 0) -> gym.Env:
    """A DMC task wrapped for dreamerkit (picks a working MUJOCO_GL first)."""
    if cfg.pixels:
        select_gl_backend()
    env = Flags(DMC(cfg, seed))
    env.metadata = {**env.metadata, "action_repeat": cfg.action_repeat}
    env.action_space.seed(seed)
    return env
