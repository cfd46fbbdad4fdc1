"""The experience pipeline: vector envs -> TorchRL replay -> ``[B, T]`` batches, interleaved by train ratio.

Each stored step holds observation ``t`` with the action that led to it and the
reward that came with it (both zero at an episode start, where ``is_first`` is
set), as the RSSM expects.

Agent steps are counted as the official driver counts them: an env at ``is_last``
is reset by the next vector step (gymnasium's NEXT_STEP autoreset), which takes no
action and is no agent step, and the policy is not asked for an action then when
every env is at ``is_last`` (with several envs it acts for the others, and the
action of the resetting one is ignored). An episode's length counts its steps, not
its reset observation.

Interleaving: every update replays ``batch * length`` steps; updates are due (``sampled``: batches handed out)
while ``sampled * batch * length < train_ratio * (agent steps - prefill) + pretrain * batch * length``,
where ``pretrain`` counts ``train.pretrain + train.world_model_pretrain``.
Before the first update, ``prefill`` agent steps are collected with uniform
random actions, and more until the replay can draw a window (the official
replay draws only complete episodes longer than a window; its prefill, too, runs
until an episode has ended). The pretrain updates follow at once (the agent
decides which of them train the world model alone), with the updates the train
ratio owes any steps collected past the prefill.

In data-parallel training every rank runs this pipeline on its own environments
and replay shard; ``train.steps`` and ``train.prefill`` are global budgets split
over the ``world_size`` ranks, so the train ratio holds globally.

An environment that raises is rebuilt (``make_envs``) and its episode restarts;
``max_env_restarts`` failures in a row end the run.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import torch
from tensordict import TensorDict
from torch.profiler import record_function
from tqdm import tqdm

from runner.config import TrainConfig

log = logging.getLogger(__name__)

WAIT_EPISODES = 100
"""Episodes that may end after the prefill without the replay being able to draw a window."""


class Experience:
    """Steps the environments with a policy, stores transitions and yields replayed batches."""

    def __init__(
        self,
        make_envs: Callable,
        info,
        replay,
        cfg: TrainConfig,
        seed: int,
        max_env_restarts: int = 10,
        world_size: int = 1,
        show_progress: bool = False,
    ):
        self.make_envs, self.info, self.replay, self.cfg, self.seed = make_envs, info, replay, cfg, seed
        self.max_env_restarts, self.world_size = max_env_restarts, world_size
        self.show_progress = show_progress  # a bar for the random prefill (rank 0 shows it)
        self.steps = math.ceil(cfg.steps / world_size)  # this rank's share of the budgets
        self.prefill = max(math.ceil(cfg.prefill / world_size), cfg.length)
        self._drawable_at = 0  # agent steps when the replay could first draw a window (in batches())
        self.envs = make_envs()
        self.num_envs = self.envs.num_envs
        self.rng = np.random.default_rng(seed)
        self.agent_steps = 0
        self.sampled = 0  # batches handed out; the agent's ``updates`` trails it by the one Lightning prefetches
        self.start_updates = 0  # batches before this pass of batches(): those of the checkpoint when resumed
        self.episodes = 0
        self.env_restarts = 0
        self._restarts_in_a_row = 0
        self.finished: deque = deque(maxlen=1000)  # (agent_steps, return, length, stats) not yet logged
        self.last_return = float("nan")
        self.longest_episode = 0  # agent steps of the longest episode seen, for the error below
        self._reset_envs(seed)
        self._start_time, self._start_steps = time.time(), 0

    def _reset_envs(self, seed: int) -> None:
        self._obs, _ = self.envs.reset(seed=seed)
        self._policy_state = None  # the agent's acting state, which its policy returns with each action
        self._action = torch.zeros(self.num_envs, self.info.action_dim)
        self._reward = np.zeros(self.num_envs, np.float32)
        self._ep_return = np.zeros(self.num_envs, np.float64)
        self._ep_length = np.zeros(self.num_envs, np.int64)
        self._ep_stats: dict[int, dict] = {}  # an env's info["episode_stats"] (e.g. Crafter's achievements)

    @property
    def global_steps(self) -> int:
        """Agent steps of all ranks (each rank steps its envs on the same schedule)."""
        return self.agent_steps * self.world_size

    @property
    def frames(self) -> int:
        """Environment frames of all ranks as the paper counts them: agent steps x action repeat."""
        return self.global_steps * self.info.action_repeat

    @property
    def fps(self) -> float:
        """Agent steps per second since training (or the resumed run) started."""
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

    def step(self, policy: Callable | None) -> None:
        """Store the current observation, act (``policy`` or uniform random) and step every env once."""
        obs = self.observation()
        first = obs["is_first"].bool()
        record = obs.clone(False)
        record["action"] = torch.where(first[:, None], 0.0, self._action)
        record["reward"] = torch.as_tensor(np.where(first, 0.0, self._reward), dtype=torch.float32)
        self.replay.add(record)
        last = obs["is_last"].bool().numpy()
        self._account(first.numpy(), last)
        if last.all():  # every env resets on this step: no action is taken
            action = torch.zeros(self.num_envs, self.info.action_dim)
        elif policy is None:
            action = self.random_action()
        else:
            action, self._policy_state = policy(obs, self._policy_state, "explore")
        action = action.float().cpu()
        env_action = action.argmax(-1).numpy() if self.info.discrete else action.numpy()
        self.agent_steps += self.num_envs - int(last.sum())
        try:
            self._obs, reward, _, _, infos = self.envs.step(env_action)
        except Exception as err:  # a crashed env (or worker process) must not end a days-long run
            self._restart(err)
            return
        self._restarts_in_a_row = 0
        self._action, self._reward = action, np.asarray(reward, np.float32)
        if "episode_stats" in infos:  # reported with the episode's last step, logged when that step is stored
            stats = infos["episode_stats"]
            for i in np.flatnonzero(infos["_episode_stats"]):
                self._ep_stats[i] = {k: float(v[i]) for k, v in stats.items() if not k.startswith("_")}

    def _restart(self, err: Exception) -> None:
        self.env_restarts += 1
        self._restarts_in_a_row += 1
        if self._restarts_in_a_row > self.max_env_restarts:
            raise RuntimeError(
                f"environments failed {self._restarts_in_a_row} times in a row; last error: {err!r}"
            ) from err
        log.warning("environment failed (%r); restarting it (restart %d)", err, self.env_restarts)
        try:
            with warnings.catch_warnings():  # "close while waiting for a pending step": the warning above says why
                warnings.simplefilter("ignore")
                self.envs.close(terminate=True)  # a vector env: end its worker processes without waiting on them
        except Exception:  # a dead worker's pipe fails the close; its replacement is what matters
            self.envs.closed = True  # else gymnasium retries the close, and warns, when it is collected
        self.envs = self.make_envs()
        self._reset_envs(self.seed + self.env_restarts)

    def _account(self, first: np.ndarray, last: np.ndarray) -> None:
        self._ep_return[first] = 0.0
        self._ep_length[first] = 0
        self._ep_return += np.where(first, 0.0, self._reward)
        self._ep_length += ~first  # the reset observation is no step
        for i in np.flatnonzero(last):
            self.episodes += 1
            self.last_return = float(self._ep_return[i])
            self.longest_episode = max(self.longest_episode, int(self._ep_length[i]))
            stats = self._ep_stats.pop(i, {})
            self.finished.append((self.agent_steps, self.last_return, int(self._ep_length[i]), stats))

    def updates_due(self) -> bool:
        """Whether the train ratio asks for another update at the current number of agent steps."""
        c = self.cfg
        return self.agent_steps >= self.prefill and self.sampled * c.batch * c.length < self._replay_budget(
            self.agent_steps
        )

    @property
    def budget_end(self) -> int:
        """Agent steps the train ratio owes updates for: this rank's share of ``train.steps``, or more
        when the prefill or the wait for a drawable window went past it."""
        return max(self.steps, self.prefill, self._drawable_at)

    @property
    def total_updates(self) -> int:
        """The number of updates this rank will have made when its share of ``cfg.steps`` is collected."""
        c = self.cfg
        return math.ceil(self._replay_budget(self.budget_end) / (c.batch * c.length))

    def _replay_budget(self, agent_steps: int) -> float:
        """Replayed steps the train ratio allows at ``agent_steps`` (pretrain updates included).

        Steps past ``budget_end`` (those of the last vector step past ``train.steps``) owe no updates,
        so ranks whose envs reset at other moments still make the same number of updates.
        """
        c = self.cfg
        agent_steps = min(agent_steps, self.budget_end)
        return (
            c.train_ratio * max(agent_steps - self.prefill, 0)
            + (c.pretrain + c.world_model_pretrain) * c.batch * c.length
        )

    def batches(self, policy: Callable) -> Iterator[TensorDict]:
        """Collect until this rank's share of ``cfg.steps``, yielding one ``[B, T]`` batch per due update.

        ``policy(obs [N], state, "explore") -> (action [N, A], state)`` is the agent's; the
        acting state is kept here between steps (and dropped when the envs restart).
        """
        self._prefill()
        self._collect_until_drawable(policy if self.sampled else None)  # resumed: a memory replay refills
        self._drawable_at = self.agent_steps  # the wait for a window owes updates too
        self._start_time, self._start_steps = time.time(), self.agent_steps
        self.start_updates = self.sampled
        while self.agent_steps < self.steps or self.updates_due():
            if self.updates_due():
                self.sampled += 1
                with record_function("replay.sample"):
                    batch = self.replay.sample(self.cfg.batch)
                yield batch
            else:
                with record_function("collect"):
                    self.step(policy)

    def _prefill(self) -> None:
        """Uniform random actions up to ``prefill`` agent steps, behind a bar of its own.

        The prefill runs inside the trainer's first batch fetch, where the training bar still
        reads 0 updates: without its own bar, minutes of Atari prefill look like a hang.
        """
        if self.agent_steps >= self.prefill:
            return
        start, began = self.agent_steps, time.time()
        bar = tqdm(
            total=self.prefill * self.world_size,
            initial=self.global_steps,
            desc="Prefill (random actions)",
            unit=" agent steps",
            leave=False,
            disable=not self.show_progress,
            dynamic_ncols=True,
        )
        with bar:
            while self.agent_steps < self.prefill:
                self.step(None)
                bar.update(self.num_envs * self.world_size)
        log.info(
            "prefill: %s random agent steps in %.0f s",
            f"{(self.agent_steps - start) * self.world_size:,}",
            time.time() - began,
        )

    def _collect_until_drawable(self, policy: Callable | None) -> None:
        """Step until the replay can draw a window; a clear error if episodes keep ending too short."""
        if self.replay.ready():
            return
        log.info("collecting until the replay holds an episode to draw a window of %d steps from", self.cfg.length)
        start = self.episodes
        while not self.replay.ready():
            if self.episodes - start >= WAIT_EPISODES:
                raise RuntimeError(
                    f"{WAIT_EPISODES} episodes ended after the prefill and the replay still cannot draw a window "
                    f"of train.length={self.cfg.length} steps (longest episode: {self.longest_episode} steps; "
                    "the replay draws only complete episodes longer than a window): lower train.length, or let "
                    "windows run across episodes with replay.short=chain replay.ongoing=true"
                )
            self.step(policy)

    def close(self) -> None:
        """Close the environments."""
        self.envs.close()

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters, the random-action RNG and the replay's position (its data stays in the storage)."""
        return {
            "agent_steps": self.agent_steps,
            "updates": self.sampled,
            "episodes": self.episodes,
            "env_restarts": self.env_restarts,
            "last_return": self.last_return,
            "rng": self.rng.bit_generator.state,
            "replay": self.replay.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the counters; reopen the replay (a memory replay starts empty and is refilled)."""
        for key in ("agent_steps", "episodes", "env_restarts", "last_return"):
            setattr(self, key, state[key])
        self.sampled = state["updates"]
        self.rng.bit_generator.state = state["rng"]
        if not self.replay.load_state_dict(state["replay"]) and state["replay"]["steps"]:
            log.warning(
                "the replay was kept in memory, so it starts empty: it refills before training goes on "
                "(use replay.storage=disk to keep it across restarts)"
            )
