"""Atari through ale-py and gymnasium's AtariPreprocessing, with the DreamerV2 settings as defaults."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

from components.envs.base import check_positive, finish, image_space, to_chw, unknown
from registry import ConfigError, register

ALL_GAMES_HINT = '; all games: python -c "import ale_py; print(sorted(ale_py.roms.get_all_rom_ids()))"'


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
    full_action_space: bool = True
    """All 18 ALE actions, as the official code at the scores' commit (0216d33); false: the game's minimal set."""


def game_ids() -> dict[str, str]:
    """snake_case game name -> ALE v5 id, for every ROM ale-py ships that has a single-player v5 env."""
    import ale_py
    from ale_py.registration import rom_id_to_name

    gym.register_envs(ale_py)
    games = {rom: f"ALE/{rom_id_to_name(rom)}-v5" for rom in ale_py.roms.get_all_rom_ids()}
    return {rom: env_id for rom, env_id in games.items() if env_id in gym.registry}


class ChannelsFirst(gym.ObservationWrapper):
    """AtariPreprocessing's HWC frame -> ``{"image": uint8 CHW}``."""

    def __init__(self, env: gym.Env, size: int, channels: int):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Dict({"image": image_space(channels, size)})

    def observation(self, obs):
        """The frame as ``{"image": CHW}``."""
        return {"image": to_chw(obs, self.size)}


@register("env", "atari", AtariConfig)
def make(cfg: AtariConfig, seed: int = 0) -> gym.Env:
    """An ALE v5 game: emulator frameskip 1, then AtariPreprocessing (repeat + max-pool, resize, no-ops)."""
    games = game_ids()
    if cfg.task not in games:
        raise unknown("env.task", "Atari game", cfg.task, games, hint=ALL_GAMES_HINT)
    if not 0.0 <= cfg.sticky <= 1.0:
        raise ConfigError(f"env.sticky: must lie in [0, 1], got {cfg.sticky}")
    if cfg.noops < 0:
        raise ConfigError(f"env.noops: must be at least 0, got {cfg.noops}")
    check_positive("env", action_repeat=cfg.action_repeat, size=cfg.size, time_limit=cfg.time_limit)
    env = gym.make(
        games[cfg.task],
        frameskip=1,  # AtariPreprocessing repeats actions and max-pools the last two frames
        repeat_action_probability=cfg.sticky,
        full_action_space=cfg.full_action_space,
        max_num_frames_per_episode=cfg.time_limit,  # ALE reports reaching it as truncation
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
    env = finish(ChannelsFirst(env, cfg.size, 1 if cfg.grayscale else 3), cfg.action_repeat)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env
