"""DeepMind Control Suite from pixels (and optionally proprioception) as a gymnasium env."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from components.envs.base import check_positive, finish, image_space, unknown
from registry import ConfigError, register

GL_BACKENDS = ("egl", "osmesa")
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 libosmesa6"
_PROBE = (
    "import os, sys; os.environ['MUJOCO_GL'] = sys.argv[1]; os.environ.setdefault('PYOPENGL_PLATFORM', sys.argv[1]); "
    "import mujoco; c = mujoco.GLContext(64, 64); c.make_current(); c.free()"
)


def select_gl_backend(required: bool = True) -> str | None:
    """Set ``MUJOCO_GL`` to the first headless backend that works (probed in subprocesses), unless already set.

    Must run before dm_control (whose renderer reads MUJOCO_GL once, when imported) and
    ideally before mujoco are imported; the choice goes into
    ``os.environ`` so that child processes inherit it. Raises RuntimeError naming
    the Debian packages to install when no backend works and ``required``.
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    failures = []
    for backend in GL_BACKENDS:
        env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
        try:
            probe = subprocess.run(
                [sys.executable, "-c", _PROBE, backend], env=env, capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            failures.append(f"{backend}: timed out")
            continue
        if probe.returncode == 0:
            if "dm_control._render" in sys.modules:  # it fixes its backend when imported
                warnings.warn(
                    f"dm_control was imported before MUJOCO_GL was chosen; set MUJOCO_GL={backend} in the "
                    "environment so that this process renders with it too",
                    stacklevel=2,
                )
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        last = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        failures.append(f"{backend}: {last}")
    if not required:
        return None
    raise RuntimeError(
        f"no headless OpenGL backend for MuJoCo works ({'; '.join(failures)}); install the Debian packages: "
        f"apt-get install {GL_PACKAGES}  (or set MUJOCO_GL yourself)"
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
    fast_render: bool = False
    """Render without shadows, reflections and multisampling: faster, but at 64x64 the cartpole's rail
    and shadow vanish; the official code renders at MuJoCo's default quality (false)."""


def split_task(task: str) -> tuple[str, str]:
    """``"ball_in_cup_catch"`` -> ``("ball_in_cup", "catch")``, checked against ``suite.ALL_TASKS``."""
    from dm_control import suite

    tasks = {f"{domain}_{name}": (domain, name) for domain, name in suite.ALL_TASKS}
    if task not in tasks:
        raise unknown("env.task", "DMC task", task, tasks)
    return tasks[task]


class DMC(gym.Env):
    """A dm_control suite task: renders as ``image`` (CHW), proprio vectors by name, native action bounds."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, cfg: DMCConfig, seed: int):
        from dm_control import suite

        domain, task = split_task(cfg.task)
        self.cfg = cfg
        # No time limit inside dm_control: TimeLimit outside counts it, as a truncation.
        self.dmc = suite.load(domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
        self.camera = cfg.camera if cfg.camera >= 0 else (2 if domain == "quadruped" else 0)
        if self.camera >= self.dmc.physics.model.ncam:
            raise ConfigError(
                f"env.camera: {cfg.task} has cameras 0..{self.dmc.physics.model.ncam - 1}, got {cfg.camera}"
            )
        if cfg.fast_render:
            self._fast_render()
        # render() (evaluation videos of proprio-only tasks) needs the GL backend make() looked for
        self.render_mode = "rgb_array" if os.environ.get("MUJOCO_GL") else None
        spec = self.dmc.action_spec()
        self._low, self._high = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)
        self.action_space = gym.spaces.Box(self._low, self._high, spec.shape, np.float32)
        spaces = {}
        if cfg.pixels:
            spaces["image"] = image_space(3, cfg.size)
        if cfg.proprio:
            for key, value in self.dmc.observation_spec().items():
                spaces[key] = gym.spaces.Box(-np.inf, np.inf, (int(np.prod(value.shape)),), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)

    def _fast_render(self) -> None:
        """No shadows, reflections or multisampling (``env.fast_render``): cheaper renders, fewer details."""
        model = self.dmc.physics.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0

    def render(self) -> np.ndarray:
        """The task's camera view, ``size`` x ``size`` RGB (HWC uint8)."""
        return self.dmc.physics.render(self.cfg.size, self.cfg.size, camera_id=self.camera)

    def _obs(self, time_step) -> dict:
        obs = {}
        if self.cfg.pixels:
            obs["image"] = np.ascontiguousarray(self.render().transpose(2, 0, 1))
        if self.cfg.proprio:
            for key, value in time_step.observation.items():
                obs[key] = np.asarray(value, np.float32).reshape(-1)
        return obs

    def reset(self, *, seed=None, options=None):
        """Start an episode; a ``seed`` reseeds the task's random state."""
        super().reset(seed=seed)
        if seed is not None:
            self.dmc.task.random.seed(seed)
        time_step = self.dmc.reset()
        if self.cfg.fast_render:
            self._fast_render()  # cheap; covers tasks that rebuild their model on reset
        return self._obs(time_step), {}

    def step(self, action):
        """Apply ``action`` for ``action_repeat`` control steps, summing rewards."""
        action = np.clip(np.asarray(action, np.float32), self._low, self._high)
        reward = 0.0
        for _ in range(self.cfg.action_repeat):
            time_step = self.dmc.step(action)
            reward += time_step.reward or 0.0
            if time_step.last():
                break
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = bool(time_step.last() and not terminated)
        return self._obs(time_step), reward, terminated, truncated, {}

    def close(self):
        """Free the physics and its render contexts."""
        self.dmc.close()


@register("env", "dmc", DMCConfig)
def make(cfg: DMCConfig, seed: int = 0) -> gym.Env:
    """A DMC task wrapped for dreamerkit: actions in [-1, 1], time limit as truncation (picks MUJOCO_GL first)."""
    check_positive("env", action_repeat=cfg.action_repeat, size=cfg.size, time_limit=cfg.time_limit)
    if not (cfg.pixels or cfg.proprio):
        raise ConfigError("env.pixels / env.proprio: both are false, so there is nothing to observe; set one true")
    select_gl_backend(required=cfg.pixels)  # before dm_control (and so mujoco) is imported
    env: gym.Env = DMC(cfg, seed)
    if not (np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)):
        env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    env = gym.wrappers.TimeLimit(env, max_episode_steps=math.ceil(cfg.time_limit / cfg.action_repeat))
    env = finish(env, cfg.action_repeat)
    env.action_space.seed(seed)
    return env
