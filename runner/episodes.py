"""Evaluation episodes: run an agent's policy on a single env, keep its frames, write them as a GIF."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import imageio.v2 as imageio
import numpy as np
import torch
from tensordict import TensorDict

from components.diskspace import writing


def run_episode(agent, env, seed: int, mode: str, record: bool) -> tuple[float, int, list]:
    """One episode of a single (non-vector) env with ``agent.policy`` in ``mode`` ("mode" or "sample").

    Returns (return, length, frames). The acting state is this episode's own, so this can run in
    the middle of training.
    """
    discrete = isinstance(env.action_space, gymnasium.spaces.Discrete)
    obs, _ = env.reset(seed=seed)
    total, length, frames, state = 0.0, 0, [], None
    while True:
        if record and (image := frame(env, obs)) is not None:
            frames.append(image)
        td = TensorDict({k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}, batch_size=[1])
        action, state = agent.policy(td, state, mode)
        action = action[0].cpu()
        obs, reward, terminated, truncated, _ = env.step(int(action.argmax()) if discrete else action.numpy())
        total += float(reward)
        length += 1
        if terminated or truncated:
            return total, length, frames


def frame(env, obs: dict) -> np.ndarray | None:
    """What the agent's episode looks like now, HWC uint8: its image observation, else the env's render.

    None when there is neither (an env without ``render_mode="rgb_array"``).
    """
    if "image" in obs:
        image = np.moveaxis(obs["image"], 0, -1)
        return image.squeeze(-1) if image.shape[-1] == 1 else image
    if env.render_mode == "rgb_array":
        return np.asarray(env.render())
    return None


def write_gif(path: Path, frames: list) -> None:
    """An evaluation episode's frames as a GIF at 30 frames per second (removed if the disk fills)."""
    with writing("video", path, sum(f.nbytes for f in frames), remove=True):
        imageio.mimsave(path, frames, duration=1 / 30)
