"""The replay kind: its options' config schemas and the registered factories.

The storage and samplers (``Replay``, ``UniformSampler``, ``EpisodeSampler``) live in
:mod:`components.replay_buffer`, which imports TorchRL; this module does not, so validating a
config (run.py, before anything is built) costs no TorchRL import. The factories import it when
a replay is built. See :mod:`components.replay_buffer` for what each sampler draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry import ConfigError, register, unknown

if TYPE_CHECKING:
    from components.replay_buffer import EpisodeSampler, Replay

STORAGES = ("memory", "disk")
SHORT = ("skip", "chain")


@dataclass
class ReplayConfig:
    """``capacity`` in agent steps (all envs together); ``storage`` memory or disk (memory-mapped)."""

    capacity: int = 2_000_000
    """Stored agent steps, all envs together; the oldest are overwritten."""
    storage: str = "memory"
    """``memory`` or ``disk`` (memory-mapped in the run directory)."""
    reset_start: bool = False
    """Flag every window's first step ``is_first``, so the RSSM starts it from a zero state and action."""

    def check(self) -> None:
        if self.storage not in STORAGES:
            raise unknown("storage", self.storage, STORAGES)
        if self.capacity < 1:
            raise ConfigError(f"capacity: must be >= 1, got {self.capacity}")


@dataclass
class EpisodesConfig(ReplayConfig):
    """The episode samplers' choices; the defaults are the official DreamerV2 replay."""

    ongoing: bool = False
    """Also draw each env's unfinished newest episode (official ``ongoing: False``: complete episodes only)."""
    short: str = "skip"
    """Episodes of at most ``train.length`` steps: ``skip`` (official) or ``chain`` into the next ones."""
    reset_start: bool = True
    """Flag every window's first step ``is_first``, so a mid-episode window starts from a zero state and
    action (official HEAD); false keeps the stored previous action there (the state starts from zeros
    anyway), as 0216d33 and DreamerV1 did."""

    def check(self) -> None:
        super().check()
        if self.short not in SHORT:
            raise unknown("short", self.short, SHORT)


@register("replay", "uniform", ReplayConfig)
def uniform(cfg: ReplayConfig, *, num_envs: int, length: int, directory: str | None = None, seed: int = 0) -> Replay:
    """Uniform windows over the stored streams."""
    from components.replay_buffer import Replay, UniformSampler

    return Replay(
        cfg.capacity, cfg.storage, UniformSampler(length, num_envs, seed, cfg.reset_start), num_envs, length, directory
    )


def _episode_sampler(cfg: EpisodesConfig, length: int, num_envs: int, seed: int, ends: bool) -> EpisodeSampler:
    from components.replay_buffer import EpisodeSampler

    return EpisodeSampler(length, num_envs, seed, ends, cfg.ongoing, cfg.short, cfg.reset_start)


@register("replay", "episodes", EpisodesConfig)
def episodes(cfg: EpisodesConfig, *, num_envs: int, length: int, directory: str | None = None, seed: int = 0) -> Replay:
    """Episodes drawn uniformly, then a window inside each (the official DreamerV2 replay)."""
    from components.replay_buffer import Replay

    return Replay(
        cfg.capacity, cfg.storage, _episode_sampler(cfg, length, num_envs, seed, False), num_envs, length, directory
    )


@register("replay", "prioritize_ends", EpisodesConfig)
def prioritize_ends(
    cfg: EpisodesConfig, *, num_envs: int, length: int, directory: str | None = None, seed: int = 0
) -> Replay:
    """``episodes`` with each episode's last window drawn ``length`` times as often (DreamerV2 Atari)."""
    from components.replay_buffer import Replay

    return Replay(
        cfg.capacity, cfg.storage, _episode_sampler(cfg, length, num_envs, seed, True), num_envs, length, directory
    )
