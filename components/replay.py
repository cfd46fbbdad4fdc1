"""Replay on TorchRL: per-environment time streams in a TorchRL storage, sampled as ``[B, T]`` windows.

One storage row is one vector-env step, a TensorDict of batch ``[num_envs]``;
the storage is circular along time (``RoundRobinWriter``), in memory
(``LazyTensorStorage``) or memory-mapped in the run directory
(``LazyMemmapStorage``). A sample is ``batch`` windows of ``length``
consecutive steps, each from one env's stream. A window may run from one
episode into the next: the next episode's first step carries ``is_first``
and the RSSM resets there, exactly as the official DreamerV2 replay chains
short episodes into fixed-length chunks. Windows never span the seam between
the newest and the oldest stored step.

Samplers (TorchRL ``Sampler`` subclasses, so ``ReplayBuffer.sample`` returns the batch):

    uniform          window starts uniform over the stored stream
    prioritize_ends  a window containing an episode end is moved to end there, so the
                     last window of every episode is drawn ~``length`` times as often
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.writers import RoundRobinWriter

from registry import ConfigError, register

STORAGES = ("memory", "disk")


class WindowSampler(Sampler):
    """Uniform windows of ``length`` steps from one env's stream; the base of the other samplers."""

    def __init__(self, length: int, num_envs: int, seed: int = 0):
        super().__init__()
        self.length, self.num_envs = length, num_envs
        self.generator = torch.Generator().manual_seed(seed)
        self._next = 0  # storage row written next (tracked through ``extend``)

    # -- TorchRL sampler hooks -------------------------------------------------------------------
    def extend(self, index: torch.Tensor) -> None:
        self._next = int(torch.as_tensor(index).reshape(-1)[-1]) + 1

    def add(self, index: int) -> None:
        self._next = int(index) + 1

    def _empty(self) -> None:
        self._next = 0

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "next": self._next}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generator.set_state(state_dict["generator"])
        self._next = state_dict["next"]

    def dumps(self, path) -> None:
        torch.save(self.state_dict(), Path(path) / "sampler.pt")

    def loads(self, path) -> None:
        self.load_state_dict(torch.load(Path(path) / "sampler.pt"))

    # -- sampling ----------------------------------------------------------------------------------
    def sample(self, storage, batch_size: int):
        steps, capacity = len(storage), storage.max_size
        if steps < self.length:
            raise RuntimeError(f"replay holds {steps} steps per env, fewer than one window of {self.length}")
        oldest = self._next % capacity if steps == capacity else 0
        offset = torch.randint(steps - self.length + 1, (batch_size,), generator=self.generator)
        env = torch.randint(self.num_envs, (batch_size,), generator=self.generator)
        offset = self.adjust(storage, oldest, offset, env)
        time_idx = (oldest + offset[:, None] + torch.arange(self.length)) % capacity
        return (time_idx, env[:, None].expand_as(time_idx)), {}

    def adjust(self, storage, oldest: int, offset: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Move the uniform start offsets (from the oldest row); uniform keeps them."""
        return offset


class EndsSampler(WindowSampler):
    """Prioritize ends: a window holding an episode's last step is shifted to end at that step."""

    def adjust(self, storage, oldest: int, offset: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        rows = (oldest + offset[:, None] + torch.arange(self.length)) % storage.max_size
        is_last = storage[(rows, env[:, None].expand_as(rows))]["is_last"].bool()
        first_end = is_last.int().argmax(-1)  # first True, or 0 when there is none
        shifted = (offset + first_end - self.length + 1).clamp(min=0)
        return torch.where(is_last.any(-1), shifted, offset)


@dataclass
class ReplayConfig:
    """``capacity`` in agent steps (all envs together); ``storage`` memory or disk (memory-mapped)."""

    capacity: int = 2_000_000
    storage: str = "memory"


class Replay:
    """Experience storage the recipe adds vector-env steps to and samples ``[B, T]`` batches from."""

    def __init__(self, cfg: ReplayConfig, sampler: WindowSampler, num_envs: int, length: int, directory: str | None):
        if cfg.storage not in STORAGES:
            raise ConfigError(f"replay.storage: unknown {cfg.storage!r}; valid: {', '.join(STORAGES)}")
        rows = cfg.capacity // num_envs
        if rows < length:
            raise ConfigError(
                f"replay.capacity: {cfg.capacity} steps over {num_envs} envs cannot hold one window of {length}"
            )
        if cfg.storage == "disk":
            if directory is None:
                raise ConfigError("replay.storage: 'disk' needs a run directory")
            storage = LazyMemmapStorage(rows, scratch_dir=directory, existsok=True)
        else:
            storage = LazyTensorStorage(rows)
        self.buffer = ReplayBuffer(storage=storage, sampler=sampler, writer=RoundRobinWriter(), batch_size=None)
        self.num_envs, self.length, self.directory = num_envs, length, directory

    def add(self, step: TensorDict) -> None:
        """Store one vector-env step (batch ``[num_envs]``)."""
        self.buffer.extend(step.unsqueeze(0))

    def sample(self, batch: int) -> TensorDict:
        """``batch`` windows of ``length`` consecutive steps, as a TensorDict ``[batch, length]``."""
        return self.buffer.sample(batch)

    @property
    def steps(self) -> int:
        """Stored time steps per env."""
        return len(self.buffer)

    def __len__(self) -> int:
        return self.steps * self.num_envs

    def state_dict(self) -> dict[str, Any]:
        """Sampler RNG, write position and stored length, plus one zero row describing the data layout.

        The data itself is not copied: a disk replay is reopened in place on load.
        """
        storage = self.buffer._storage
        example = storage[0].clone().zero_().to_dict() if storage.initialized else None
        return {
            "sampler": self.buffer._sampler.state_dict(),
            "writer": self.buffer._writer.state_dict(),
            "steps": len(storage),
            "example": example,
        }

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore sampling and writing state; returns whether the stored data came back.

        A disk replay reopens its memory-mapped files (TorchRL has no public reopen:
        ``dumps``/``loads`` would copy every step, so we initialise the storage on the
        existing files and set its length). A memory replay cannot come back: it
        starts empty, and the caller refills it.
        """
        storage = self.buffer._storage
        if not isinstance(storage, LazyMemmapStorage) or state["example"] is None:
            return False
        example = TensorDict(state["example"], batch_size=[self.num_envs])
        storage._init(example)  # existsok=True: maps the files already in the directory
        storage._len = state["steps"]
        self.buffer._sampler.load_state_dict(state["sampler"])
        self.buffer._writer.load_state_dict(state["writer"])
        return True


@register("replay", "uniform", ReplayConfig)
def uniform(cfg: ReplayConfig, *, num_envs: int, length: int, directory: str | None = None, seed: int = 0) -> Replay:
    """Uniform windows over the stored streams."""
    return Replay(cfg, WindowSampler(length, num_envs, seed), num_envs, length, directory)


@register("replay", "prioritize_ends", ReplayConfig)
def prioritize_ends(
    cfg: ReplayConfig, *, num_envs: int, length: int, directory: str | None = None, seed: int = 0
) -> Replay:
    """Windows that contain an episode end are moved to end there (DreamerV2 Atari)."""
    return Replay(cfg, EndsSampler(length, num_envs, seed), num_envs, length, directory)
