"""The experience pipeline: stored-step conventions and the train-ratio interleaving."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import registry
from components.envs import env_info, make_vector_env
from runner.config import TrainConfig
from runner.experience import Experience
from runner.progress import ProgressBar


def _experience(cfg: TrainConfig, num_envs: int = 2) -> Experience:
    def make_envs():
        return make_vector_env({"name": "gym", "task": "CartPole-v1"}, num_envs, seed=0)

    replay = registry.build("replay", {"name": "uniform", "capacity": 10_000}, num_envs=num_envs, length=cfg.length)
    return Experience(make_envs, env_info(make_envs()), replay, cfg, seed=0)


def test_stored_steps_hold_the_action_that_led_to_them():
    exp = _experience(TrainConfig(length=8, prefill=8, steps=400, batch=4))
    taken, states, asked = [], [], []

    def policy(obs, state, mode):
        assert mode == "explore"  # collecting experience: the agent may add exploration noise
        assert not obs["is_last"].all()  # the official driver resets such envs before it asks
        states.append(state)
        action = torch.nn.functional.one_hot(torch.randint(2, (obs.batch_size[0],)), 2).float()
        taken.append(action)
        return action, len(taken)

    for _ in range(200):
        calls = len(taken)
        exp.step(policy)
        asked.append(len(taken) > calls)
    assert states == [None, *range(1, len(taken))]  # the acting state the policy returned comes back to it
    data = exp.replay.buffer._storage.get(torch.arange(200))  # [time, env], in write order
    first, last = data["is_first"], data["is_last"]
    assert first[0].all() and first.sum() > 2  # several episodes ended and restarted
    assert asked == (~last.all(-1)).tolist()
    assert torch.all(data["action"][first] == 0) and torch.all(data["reward"][first] == 0)
    stored = data["action"][1:][torch.tensor(asked[:-1])]  # the steps after one the policy acted in
    expected = torch.stack(taken[: len(stored)])
    acted = ~first[1:][torch.tensor(asked[:-1])]
    assert torch.equal(stored[acted], expected[acted])
    assert torch.all(data["reward"][~first] == 1.0)  # CartPole pays 1 per step
    # agent steps as the official driver counts them: a reset observation's vector step takes no action
    # for its env; an episode's length counts its steps, not the reset observation
    assert exp.agent_steps == 2 * 200 - int(last.sum())
    lengths = [length for _, _, length, _ in exp.finished]
    episodes = [
        int((~first[:, e]).long().cumsum(0)[t]) - int((~first[:, e]).long().cumsum(0)[s])
        for e in range(2)
        for s, t in zip(first[:, e].nonzero().flatten().tolist(), last[:, e].nonzero().flatten().tolist())
    ]
    assert sorted(lengths) == sorted(episodes) and min(lengths) >= 8  # CartPole falls after 8 steps at the soonest


def test_one_env_is_not_asked_for_an_action_at_the_end_of_an_episode():
    """One env: the vector step after ``is_last`` only resets it, as the official driver's reset. It is no
    agent step and no policy call, and the episode's length is its number of actions."""
    exp = _experience(TrainConfig(length=8, prefill=8, steps=400, batch=4), num_envs=1)
    calls = []
    for _ in range(100):
        exp.step(lambda obs, state, mode: (calls.append(obs["is_last"][0].item()) or exp.random_action(), None))
    data = exp.replay.buffer._storage.get(torch.arange(100))[:, 0]
    ends = int(data["is_last"].sum())
    assert ends >= 2 and calls == [False] * (100 - ends) and exp.agent_steps == 100 - ends
    assert [length for _, _, length, _ in exp.finished] == [
        int(t - s) for s, t in zip(data["is_first"].nonzero().flatten(), data["is_last"].nonzero().flatten())
    ]


def test_train_ratio_sets_replayed_steps_per_agent_step():
    cfg = TrainConfig(batch=4, length=8, train_ratio=64, prefill=40, pretrain=3, steps=840)
    exp = _experience(cfg)
    predicted = exp.total_updates  # what the progress bar shows as its total
    batches = list(exp.batches(policy=lambda obs, state, mode: (exp.random_action(), None)))
    assert predicted == len(batches)
    assert all(b.batch_size == torch.Size([4, 8]) for b in batches)
    # pretrain updates right after the prefill, then train_ratio / (B * T) = 2 per agent step
    assert len(batches) == cfg.pretrain + 2 * (exp.agent_steps - cfg.prefill)
    assert exp.agent_steps == 840 and exp.sampled == len(batches)
    # a further pass (a resumed run with a larger budget): the bar's total is what this pass makes
    exp.steps = 900
    more = list(exp.batches(policy=lambda obs, state, mode: (exp.random_action(), None)))
    bar = ProgressBar()
    bar._trainer = SimpleNamespace(lightning_module=SimpleNamespace(experience=exp))
    bar._first = len(batches)  # on_train_start reads it from the resumed agent's update count
    assert exp.start_updates == len(batches) and bar.total_train_batches == len(more) == 2 * 60
    bar.train_progress_bar = bar.init_train_tqdm()
    bar.on_train_epoch_start(SimpleNamespace(current_epoch=1))
    assert bar.train_progress_bar.desc.startswith("Training") and bar.train_progress_bar.total == 2 * 60
    bar.train_progress_bar.close()


def test_world_model_pretrain_updates_follow_the_prefill_with_the_pretrain_ones():
    cfg = TrainConfig(batch=4, length=8, train_ratio=64, prefill=40, pretrain=3, world_model_pretrain=5, steps=100)
    exp = _experience(cfg)
    steps_at_update = [
        exp.agent_steps for _ in exp.batches(policy=lambda obs, state, mode: (exp.random_action(), None))
    ]
    assert steps_at_update[:8] == [40] * 8 and steps_at_update[8] > 40
    assert len(steps_at_update) == exp.total_updates == 3 + 5 + 2 * (exp.agent_steps - cfg.prefill)


def _official_experience(cfg: TrainConfig) -> Experience:
    def make_envs():
        return make_vector_env({"name": "gym", "task": "CartPole-v1"}, 2, seed=0)

    replay = registry.build("replay", {"name": "episodes", "capacity": 20_000}, num_envs=2, length=cfg.length)
    return Experience(make_envs, env_info(make_envs()), replay, cfg, seed=0)


def test_first_batch_waits_for_a_complete_episode_longer_than_a_window():
    """Random CartPole episodes last about 22 steps: after a prefill of 8 the official replay has no
    complete episode of more than 30 steps, so collection goes on (at random) until one has ended."""
    exp = _official_experience(TrainConfig(length=30, prefill=8, steps=10, batch=4, train_ratio=60, pretrain=1))
    batches = list(exp.batches(policy=None))
    batch = batches[0]
    storage = exp.replay.buffer.storage
    ended = storage._storage["is_last"][: exp.replay.steps]
    starts = storage._storage["is_first"][: exp.replay.steps]
    assert exp.agent_steps > 2 * 30 and exp.replay.ready()
    # some env's stored stream has an episode of more than 30 steps that ended
    longest = 0
    for e in range(2):
        first, last = starts[:, e].nonzero().flatten().tolist(), ended[:, e].nonzero().flatten().tolist()
        longest = max([b - a + 1 for a in first for b in last if b >= a and not starts[a + 1 : b + 1, e].any()] + [0])
    assert longest > 30
    assert batch.batch_size == (4, 30) and batch["is_first"][:, 0].all()
    # the updates the train ratio owes the steps collected past the prefill follow the pretrain one
    owed = math.ceil(60 * (exp.agent_steps - exp.prefill) / 120)  # prefill: at least one window, 30
    assert len(batches) == exp.sampled == exp.total_updates == 1 + owed


def test_a_window_no_episode_can_fill_is_a_clear_error_not_a_hang():
    exp = _official_experience(TrainConfig(length=600, prefill=600, steps=700, batch=4))  # CartPole stops at 500
    with pytest.raises(RuntimeError, match=r"100 episodes ended after the prefill .* train.length=600.*longest"):
        next(exp.batches(policy=None))
    assert exp.episodes >= 100
