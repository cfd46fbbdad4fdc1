"""Atari through ale-py and gymnasium's AtariPreprocessing, with the DreamerV2 settings as defaults."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from components.envs.base import Flags, to_chw, unknown
from registry import ConfigError, register


@dataclass
class AtariConfig:
    """Game in snake_case; sticky actions, action repeat with max-pool, no-ops, time limit in frames."""

    task: str = "pong"
    sticky: float = 0.25
    action_repeat: int = 4
    size: int = 64
    grayscale: bool = True
    noops: int = 30
    life_done: bool = False
    time_limit: int = 108000
    full_action_space: bool = False


def game_ids() -> dict[str, str]:
    """snake_case game name -> ALE id for every ROM ale-py ships."""
    import ale_py

    return {rom: "ALE/" + "".join(p.capitalize() for p in rom.split("_")) + "-v5" for rom in ale_py.roms.get_all_rom_ids()}


class ChannelsFirst(gym.ObservationWrapper):
    """AtariPreprocessing's HW(C) frame -> ``{"image": uint8 CHW}``."""

    def __init__(self, env: gym.Env, size: int, channels: int):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (channels, size, size), np.uint8)})

    def observation(self, obs):
        return {"image": to_chw(obs, self.size)}


@register("env", "atari", AtariConfig)
def make(cfg: AtariConfig, seed: int = 0) -> gym.Env:
    """An ALE v5 game: emulator frameskip 1, then AtariPreprocessing (repeat + max-pool, resize, no-ops)."""
    import ale_py

    gym.register_envs(ale_py)
    games = game_ids()
    if cfg.task not in games:
        raise unknown("env.task", "Atari game", cfg.task, games, hint=" (all games: python -c 'import ale_py; print(ale_py.roms.get_all_rom_ids())')")
    if not 0.0 <= cfg.sticky <= 1.0:
        raise ConfigError(f"env.sticky must lie in [0, 1], got {cfg.sticky}")
    env = gym.make(
        games[cfg.task],
        frameskip=1,
        repeat_action_probability=cfg.sticky,
        full_action_space=cfg.full_action_space,
        max_num_frames_per_episode=cfg.time_limit,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=cfg.noops,
        frame_skip=cfg.action_repeat,
        screen_size=cfg.size,
        terminal_on_life_loss=cfg.life_done,
        grayscale_obs=cfg.grayscale,
        grayscale_newaxis=True,
    )
    env = Flags(ChannelsFirst(env, cfg.size, 1 if cfg.grayscale else 3))
    env.metadata = {**env.metadata, "action_repeat": cfg.action_repeat}
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env
