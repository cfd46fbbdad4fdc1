"""The experience pipeline: vector envs -> TorchRL replay -> ``[B, T]`` batches, interleaved by train ratio.

Each stored step holds observation ``t`` with the action that led to it and the
reward that came with it (both zero at an episode start, where ``is_first`` is
set), as the RSSM expects.

Interleaving: every update replays ``batch * length`` steps; updates are due
while ``updates * batch * length < train_ratio * (agent steps - prefill)``.
Before the first update, ``prefill`` agent steps are collected with uniform
random actions, then ``pretrain`` updates run on them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import torch
from tensordict import TensorDict

from recipes.config import TrainConfig

FLAGS = ("is_first", "is_last", "is_terminal")


class Experience:
    """Steps the environments with a policy, stores transitions and yields replayed batches."""

    def __init__(self, envs, info, replay, cfg: TrainConfig, seed: int):
        self.envs, self.info, self.replay, self.cfg = envs, info, replay, cfg
        self.num_envs = envs.num_envs
        self.rng = np.random.default_rng(seed)
        self.agent_steps = 0
        self.updates = 0
        self.episodes = 0
        self.finished: deque = deque(maxlen=1000)  # (agent_steps, return, length) not yet logged
        self.last_return = float("nan")
        obs, _ = envs.reset(seed=seed)
        self._obs = obs
        self._action = torch.zeros(self.num_envs, info.action_dim)
        self._reward = np.zeros(self.num_envs, np.float32)
        self._ep_return = np.zeros(self.num_envs, np.float64)
        self._ep_length = np.zeros(self.num_envs, np.int64)
        self._start_time = time.time()
        self._start_steps = 0

    @property
    def frames(self) -> int:
        """Environment frames as the paper counts them: agent steps x action repeat."""
        return self.agent_steps * self.info.action_repeat

    @property
    def fps(self) -> float:
        """Agent steps per second since the last reset of the clock."""
        return (self.agent_steps - self._start_steps) / max(time.time() - self._start_time, 1e-9)

    def random_action(self) -> torch.Tensor:
        """Uniform random actions (one-hot for discrete spaces)."""
        n, a = self.num_envs, self.info.action_dim
        if self.info.discrete:
            return torch.nn.functional.one_hot(torch.as_tensor(self.rng.integers(a, size=n)), a).float()
        return torch.as_tensor(self.rng.uniform(-1, 1, (n, a)), dtype=torch.float32)

    def observation(self) -> TensorDict:
        """The current observation of every env as a TensorDict ``[num_envs]``."""
        return TensorDict({k: torch.as_tensor(np.asarray(v)) for k, v in self._obs.items()}, batch_size=[self.num_envs])

    def step(self, policy: Callable[[TensorDict], torch.Tensor] | None) -> None:
        """Store the current observation, act (``policy`` or uniform random) and step every env once."""
        obs = self.observation()
        first = obs["is_first"].bool()
        record = obs.clone(False)
        record["action"] = torch.where(first[:, None], 0.0, self._action)
        record["reward"] = torch.as_tensor(np.where(first, 0.0, self._reward), dtype=torch.float32)
        self.replay.add(record)
        self._account(first.numpy(), obs["is_last"].bool().numpy())
        action = (policy(obs) if policy is not None else self.random_action()).float().cpu()
        env_action = action.argmax(-1).numpy() if self.info.discrete else action.numpy()
        self._obs, reward, _, _, _ = self.envs.step(env_action)
        self._action, self._reward = action, np.asarray(reward, np.float32)
        self.agent_steps += self.num_envs

    def _account(self, first: np.ndarray, last: np.ndarray) -> None:
        self._ep_return[first] = 0.0
        self._ep_length[first] = 0
        self._ep_return += np.where(first, 0.0, self._reward)
        self._ep_length += 1
        for i in np.flatnonzero(last):
            self.episodes += 1
            self.last_return = float(self._ep_return[i])
            self.finished.append((self.agent_steps, self.last_return, int(self._ep_length[i])))

    def updates_due(self) -> bool:
        """Whether the train ratio asks for another update at the current number of agent steps."""
        c = self.cfg
        budget = c.train_ratio * max(self.agent_steps - c.prefill, 0) + c.pretrain * c.batch * c.length
        return self.agent_steps >= c.prefill and self.updates * c.batch * c.length < budget

    def batches(self, policy: Callable[[TensorDict], torch.Tensor]) -> Iterator[TensorDict]:
        """Collect until ``cfg.steps`` agent steps, yielding one ``[B, T]`` batch per due update."""
        while self.agent_steps < self.cfg.prefill:
            self.step(None)
        self._start_time, self._start_steps = time.time(), self.agent_steps
        while self.agent_steps < self.cfg.steps or self.updates_due():
            if self.updates_due():
                self.updates += 1
                yield self.replay.sample(self.cfg.batch)
            else:
                self.step(policy)
