"""Replay: contiguous windows per env, the circular seam, episode marking, sampler distributions, state."""

from __future__ import annotations

import logging
import math
from collections import Counter

import pytest
import torch
from tensordict import TensorDict

import registry
from components.replay import EpisodesConfig, ReplayConfig, episodes, prioritize_ends, uniform
from components.replay_buffer import EpisodeSampler, stream
from registry import ConfigError

SAMPLERS = [uniform, episodes, prioritize_ends]


def config(make, **values) -> ReplayConfig:
    """The config ``make`` takes, with its defaults (the official sampling for the episode samplers)."""
    return (ReplayConfig if make is uniform else EpisodesConfig)(**values)


def fill(replay, steps: int, num_envs: int, episode_len: int | tuple = 7) -> None:
    """Write ``steps`` vector steps; env e stores t = 1000 * e + step, episodes of ``episode_len``."""
    lens = episode_len if isinstance(episode_len, tuple) else (episode_len,) * num_envs
    for t in range(steps):
        replay.add(
            TensorDict(
                {
                    "t": torch.tensor([1000 * e + t for e in range(num_envs)]),
                    "is_first": torch.tensor([t % lens[e] == 0 for e in range(num_envs)]),
                    "is_last": torch.tensor([t % lens[e] == lens[e] - 1 for e in range(num_envs)]),
                    "reward": torch.zeros(num_envs),
                },
                batch_size=[num_envs],
            )
        )


@pytest.mark.parametrize("make", SAMPLERS)
def test_windows_are_contiguous_within_one_env(make):
    replay = make(config(make, capacity=200), num_envs=2, length=6, seed=1)
    fill(replay, 60, 2)
    batch = replay.sample(64)
    assert batch.batch_size == torch.Size([64, 6])
    t = batch["t"]
    assert torch.all(t[:, 1:] - t[:, :-1] == 1)  # consecutive steps of a single env's stream
    assert torch.all(t[:, 0] // 1000 == t[:, -1] // 1000)


@pytest.mark.parametrize("make", SAMPLERS)
def test_windows_never_cross_the_circular_seam(make):
    replay = make(config(make, capacity=20), num_envs=1, length=5, seed=0)
    fill(replay, 49, 1)  # 20 rows kept: steps 29..48, the oldest episode cut to 29..34, the newest complete
    t = torch.cat([replay.sample(32)["t"] for _ in range(50)])
    assert t.min() == 29 and t.max() == 48  # the oldest and the newest kept steps are both reachable
    assert torch.all(t[:, 1:] - t[:, :-1] == 1)
    assert len(replay) == 20 and replay.steps == 20


@pytest.mark.parametrize("make", SAMPLERS)
def test_windows_never_include_unwritten_slots(make):
    replay = make(config(make, capacity=3000), num_envs=3, length=5, seed=2)
    fill(replay, 12, 3)  # 12 of 1000 rows written
    t = replay.sample(2000)["t"]
    assert torch.all(t % 1000 <= 11)
    assert set((t[:, 0] % 1000).tolist()) <= set(range(12 - 5 + 1))
    assert set((t[:, 0] // 1000).tolist()) == {0, 1, 2}  # every env's stream is sampled


def test_episode_boundaries_inside_a_window_are_marked_by_is_first():
    replay = uniform(ReplayConfig(capacity=100), num_envs=1, length=10, seed=0)
    fill(replay, 40, 1, episode_len=3)  # episodes shorter than a window are still sampled
    batch = replay.sample(200)
    t = batch["t"]
    assert torch.equal(batch["is_first"], t % 3 == 0)
    # every step after an episode's last step starts a new episode
    after_last = batch["is_last"][:, :-1]
    assert torch.all(batch["is_first"][:, 1:][after_last])
    assert torch.all(batch["is_first"].sum(-1) >= 3)  # each window chains several short episodes


def _start_counts(make, draws: int, length: int, episode_len: int, steps: int) -> Counter:
    replay = make(config(make, capacity=1000), num_envs=1, length=length, seed=3)
    fill(replay, steps, 1, episode_len=episode_len)
    counts = Counter()
    for _ in range(draws // 500):
        counts.update(replay.sample(500)["t"][:, 0].tolist())
    return counts


def test_uniform_start_distribution_is_flat():
    length, steps, draws = 5, 40, 40_000
    counts = _start_counts(uniform, draws, length, episode_len=8, steps=steps)
    starts = steps - length + 1
    assert set(counts) == set(range(starts))
    expected = draws / starts
    tolerance = 5 * math.sqrt(expected)  # 5 sigma of a binomial count
    assert all(abs(c - expected) < tolerance for c in counts.values())


def test_episodes_are_drawn_uniformly_whatever_their_length():
    """Env 0 stores 20 episodes of 5 steps, env 1 two of 50: each of the 22 is drawn equally often
    (a step-uniform sampler would give env 0's short episodes half the draws, not 20/22)."""
    replay = episodes(EpisodesConfig(capacity=200), num_envs=2, length=4, seed=5)
    fill(replay, 100, 2, episode_len=(5, 50))
    draws = 44_000
    counts = Counter()
    for _ in range(draws // 1000):
        t = replay.sample(1000)["t"][:, 0]
        env, step = t // 1000, t % 1000
        counts.update(zip(env.tolist(), torch.where(env == 0, step // 5, step // 50).tolist()))
    assert len(counts) == 22
    expected = draws / 22
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts.values()), counts


def test_prioritize_ends_draws_each_episodes_last_window_length_times_as_often():
    length, episode_len, steps, draws = 4, 20, 40, 40_000
    counts = _start_counts(prioritize_ends, draws, length, episode_len, steps)
    last = [episode_len - length, 2 * episode_len - length]  # 16 and 36
    interior = [a for a in range(steps) if a % episode_len <= episode_len - length - 1]
    assert set(counts) == set(interior) | set(last)  # windows stay inside their episode
    unit = draws / (2 * episode_len)  # each episode gets half the draws, spread over 20 draws of u
    for a in interior:
        assert abs(counts[a] - unit) < 5 * math.sqrt(unit), (a, counts[a], unit)
    for a in last:
        assert abs(counts[a] - length * unit) < 5 * math.sqrt(length * unit), (a, counts[a])


def test_with_short_chain_episodes_shorter_than_a_window_start_it_and_run_on():
    replay = episodes(EpisodesConfig(capacity=100, short="chain", ongoing=True), num_envs=1, length=10, seed=1)
    fill(replay, 40, 1, episode_len=3)
    t = replay.sample(500)["t"]
    starts = set(t[:, 0].tolist())
    assert starts <= {0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30} and len(starts) == 11  # only episode starts
    assert torch.all(t[:, 1:] - t[:, :-1] == 1) and t.max() <= 39  # the last episodes are clamped to fit


@pytest.mark.parametrize("make", [episodes, prioritize_ends])
def test_every_window_starts_with_is_first_and_the_storage_keeps_its_flags(make):
    replay = make(EpisodesConfig(capacity=100), num_envs=2, length=4, seed=0)
    fill(replay, 40, 2)
    stored = replay.buffer.storage._storage["is_first"][:40].clone()
    batch = replay.sample(500)
    assert torch.all(batch["is_first"][:, 0])  # the RSSM starts every window from a zero state and action
    assert not batch["is_first"][:, 1:].any()  # a window lies inside one episode
    assert torch.any(batch["t"][:, 0] % 1000 % 7 != 0)  # mid-episode starts were drawn, and flagged
    assert torch.equal(replay.buffer.storage._storage["is_first"][:40], stored)

    kept = make(EpisodesConfig(capacity=100, reset_start=False), num_envs=2, length=4, seed=0)
    fill(kept, 40, 2)
    batch = kept.sample(500)
    assert torch.equal(batch["is_first"], batch["t"] % 1000 % 7 == 0)  # the option keeps the stored flags


@pytest.mark.parametrize("make", [episodes, prioritize_ends])
def test_no_window_comes_from_an_unfinished_episode(make):
    """Env 0: episodes of 7 steps, env 1 of 5. After 33 steps env 0's newest episode (28..32) is
    unfinished, env 1's (30..34) too; both are long enough for a window of 4."""
    replay = make(EpisodesConfig(capacity=200), num_envs=2, length=4, seed=0)
    fill(replay, 33, 2, episode_len=(7, 5))
    t = torch.cat([replay.sample(500)["t"] for _ in range(4)])
    env, step = t // 1000, t % 1000
    assert step[env == 0].max() == 27 and step[env == 1].max() == 29  # the last complete episodes' ends
    for _ in range(2):  # env 1's episode 30..34 ends (is_last at 34); env 0's goes on
        replay.add(
            TensorDict(
                {
                    "t": torch.tensor([replay.steps, 1000 + replay.steps]),
                    "is_first": torch.tensor([False, False]),
                    "is_last": torch.tensor([False, replay.steps == 34]),
                    "reward": torch.zeros(2),
                },
                batch_size=[2],
            )
        )
    t = torch.cat([replay.sample(500)["t"] for _ in range(4)])
    env, step = t // 1000, t % 1000
    assert step[env == 0].max() == 27 and step[env == 1].max() == 34

    ongoing = make(EpisodesConfig(capacity=200, ongoing=True), num_envs=2, length=4, seed=0)
    fill(ongoing, 33, 2, episode_len=(7, 5))
    t = torch.cat([ongoing.sample(500)["t"] for _ in range(4)])
    assert (t % 1000).max() == 32  # the option draws the unfinished episodes


@pytest.mark.parametrize("make", [episodes, prioritize_ends])
def test_episodes_no_longer_than_a_window_are_never_sampled(make):
    """Env 0 stores episodes of 4 steps: one window, but the official replay needs more than
    ``length`` stored steps (its ``minlen`` counts the steps after the reset one). Env 1's are 12."""
    replay = make(EpisodesConfig(capacity=200), num_envs=2, length=4, seed=0)
    fill(replay, 36, 2, episode_len=(4, 12))
    t = torch.cat([replay.sample(500)["t"] for _ in range(4)])
    assert torch.all(t // 1000 == 1)  # env 0's episodes are skipped whatever their number
    chained = make(EpisodesConfig(capacity=200, short="chain"), num_envs=2, length=4, seed=0)
    fill(chained, 36, 2, episode_len=(4, 12))
    assert torch.any(chained.sample(500)["t"] // 1000 == 0)


def test_with_no_episode_to_draw_from_sampling_is_a_clear_error_and_ready_says_so():
    replay = episodes(EpisodesConfig(capacity=200), num_envs=1, length=8, seed=0)
    assert not replay.ready()
    fill(replay, 20, 1, episode_len=6)  # three complete episodes of 6 steps, none longer than 8
    assert not replay.ready()
    with pytest.raises(RuntimeError, match=r"no complete episode of more than 8 steps.*the longest of 6 steps"):
        replay.sample(2)
    fill(replay, 20, 1, episode_len=10)  # steps 0..19 again: episodes 0..9 and 10..19, both complete
    assert replay.ready() and replay.sample(2).batch_size == (2, 8)


def test_episode_sampler_options_are_checked():
    with pytest.raises(ConfigError, match=r"replay.short: unknown 'drop'; valid: skip, chain"):
        registry.build("replay", {"name": "episodes", "short": "drop"}, num_envs=1, length=4)
    with pytest.raises(ConfigError, match=r"replay.ongoing.*valid keys: capacity, storage, reset_start\)"):
        registry.build("replay", {"name": "uniform", "ongoing": True}, num_envs=1, length=4)


def test_uniform_windows_start_with_is_first_when_asked():
    replay = uniform(ReplayConfig(capacity=100, reset_start=True), num_envs=1, length=5, seed=0)
    fill(replay, 40, 1)
    batch = replay.sample(200)
    assert batch["is_first"][:, 0].all()
    assert torch.equal(batch["is_first"][:, 1:], batch["t"][:, 1:] % 7 == 0)  # later starts as stored


@pytest.mark.parametrize("make", SAMPLERS)
def test_same_seed_same_samples(make):
    def build(seed):
        r = make(config(make, capacity=100), num_envs=2, length=4, seed=seed)
        fill(r, 30, 2)
        return r

    a, b, c = build(7), build(7), build(8)
    assert all(torch.equal(a.sample(16)["t"], b.sample(16)["t"]) for _ in range(5))
    assert not torch.equal(a.sample(64)["t"], c.sample(64)["t"])


@pytest.mark.parametrize("make", SAMPLERS)
def test_state_round_trip_resumes_the_sample_sequence(make):
    a = make(config(make, capacity=100), num_envs=2, length=4, seed=7)
    b = make(config(make, capacity=100), num_envs=2, length=4, seed=123)
    fill(a, 30, 2), fill(b, 30, 2)
    a.sample(16)
    state = a.state_dict()
    expected = [a.sample(16)["t"] for _ in range(3)]
    b.load_state_dict(state)
    assert all(torch.equal(b.sample(16)["t"], e) for e in expected)
    assert sum(v.numel() for v in state["sampler"].values()) < 10_000  # no stored data in the state


def test_disk_storage_is_memory_mapped_in_the_directory(tmp_path):
    replay = uniform(ReplayConfig(capacity=64, storage="disk"), num_envs=1, length=4, directory=str(tmp_path))
    fill(replay, 30, 1)
    assert any(p.suffix == ".memmap" for p in tmp_path.rglob("*")), list(tmp_path.rglob("*"))
    batch = replay.sample(8)
    assert torch.all(batch["t"][:, 1:] - batch["t"][:, :-1] == 1)


@pytest.mark.parametrize("make", SAMPLERS)
def test_disk_replay_reopens_in_place_from_its_state(tmp_path, make):
    cfg = config(make, capacity=64, storage="disk")
    replay = make(cfg, num_envs=2, length=4, directory=str(tmp_path), seed=0)
    fill(replay, 30, 2)
    state = replay.state_dict()
    expected = replay.sample(8)["t"]
    reopened = make(cfg, num_envs=2, length=4, directory=str(tmp_path), seed=5)
    assert reopened.load_state_dict(state) is True
    assert reopened.steps == 30 and torch.equal(reopened.sample(8)["t"], expected)
    fill(reopened, 1, 2)  # writing continues after the last stored step
    assert reopened.steps == 31


def test_disk_replay_reopens_after_wrapping_around(tmp_path):
    cfg = ReplayConfig(capacity=20, storage="disk")
    replay = uniform(cfg, num_envs=1, length=5, directory=str(tmp_path))
    fill(replay, 47, 1)  # rows hold steps 27..46; the oldest (27) is in row 7
    reopened = uniform(cfg, num_envs=1, length=5, directory=str(tmp_path), seed=1)
    assert reopened.load_state_dict(replay.state_dict())
    t = torch.cat([reopened.sample(64)["t"] for _ in range(20)])
    assert t.min() == 27 and t.max() == 46 and torch.all(t[:, 1:] - t[:, :-1] == 1)
    reopened.add(
        TensorDict(
            {
                "t": torch.tensor([47]),
                "is_first": torch.tensor([False]),
                "is_last": torch.tensor([False]),
                "reward": torch.zeros(1),
            },
            batch_size=[1],
        )
    )
    t = torch.cat([reopened.sample(64)["t"] for _ in range(20)])
    assert t.min() == 28 and t.max() == 47  # step 47 overwrote the oldest, step 27


def stored_t(replay) -> list[int]:
    """The ``t`` of every storage row, row by row (not oldest first)."""
    return replay.buffer.storage._storage.get("t")[:, 0].tolist()


def test_a_disk_replay_resumed_from_a_checkpoint_gets_back_the_rows_overwritten_after_it(tmp_path, caplog):
    """The ring is full: each step after a checkpoint overwrites a row the checkpoint holds (UndoLog)."""
    cfg = ReplayConfig(capacity=8, storage="disk")

    def run(replay, ts):
        for t in ts:
            flags = {"is_first": torch.tensor([t == 0]), "is_last": torch.tensor([False])}
            replay.add(TensorDict({"t": torch.tensor([t]), **flags, "reward": torch.zeros(1)}, batch_size=[1]))

    def files(directory):
        return sorted(int(p.stem) for p in (directory / "undo").iterdir())

    replay = uniform(cfg, num_envs=1, length=2, directory=str(tmp_path / "a"))
    run(replay, range(10))  # rows 0-7 hold t = 8, 9, 2, ..., 7
    first = replay.state_dict()
    run(replay, range(10, 13))  # rows 2-4: 10, 11, 12
    second = replay.state_dict()  # say its file was cut short by a kill: the resume takes the first
    run(replay, range(13, 18))  # rows 5-7, 0, 1: 13, ..., 17; the kill comes here
    assert stored_t(replay) == [16, 17, 10, 11, 12, 13, 14, 15] and files(tmp_path / "a") == [10, 13]
    with open(tmp_path / "a" / "undo" / f"{13:012d}.bin", "ab") as f:  # a record cut short by the kill: ignored
        f.write(b"\x01" * 20)
    for _ in range(2):  # the resumed run is killed again, five steps on, before its next checkpoint
        resumed = uniform(cfg, num_envs=1, length=2, directory=str(tmp_path / "a"))
        assert resumed.load_state_dict(first)
        assert stored_t(resumed) == [8, 9, 2, 3, 4, 5, 6, 7]  # as the first checkpoint left them
        assert files(tmp_path / "a") == [10]  # the later steps' records are gone with them
        run(resumed, [30, 31, 32, 33, 34])
    resumed = uniform(cfg, num_envs=1, length=2, directory=str(tmp_path / "a"))
    with caplog.at_level(logging.WARNING):  # a checkpoint of the abandoned steps: its file went with them
        assert resumed.load_state_dict(second) is True
    assert "the rows overwritten after this checkpoint were not kept" in caplog.text
    assert stored_t(resumed) == [8, 9, 30, 31, 32, 33, 34, 7]
    caplog.clear()

    replay = uniform(cfg, num_envs=1, length=2, directory=str(tmp_path / "b"))
    run(replay, range(10))
    first = replay.state_dict()
    run(replay, range(10, 13))
    second = replay.state_dict()
    run(replay, range(13, 15))
    replay.state_dict()  # a third checkpoint: the first one's records are dropped
    run(replay, range(15, 17))
    assert files(tmp_path / "b") == [13, 15]
    assert uniform(cfg, num_envs=1, length=2, directory=str(tmp_path / "b")).load_state_dict(second)
    assert stored_t(replay) == [8, 9, 10, 11, 12, 5, 6, 7]
    replay.state_dict()  # (the same write count: no new file)
    old = uniform(cfg, num_envs=1, length=2, directory=str(tmp_path / "b"))
    with caplog.at_level(logging.WARNING):
        assert old.load_state_dict(first)
    assert "the rows overwritten after this checkpoint were not kept" in caplog.text
    assert stored_t(old) == [8, 9, 10, 11, 12, 5, 6, 7]


def test_memory_replay_says_its_data_did_not_come_back():
    replay = uniform(ReplayConfig(capacity=64), num_envs=1, length=4)
    fill(replay, 10, 1)
    fresh = uniform(ReplayConfig(capacity=64), num_envs=1, length=4)
    assert fresh.load_state_dict(replay.state_dict()) is False and fresh.steps == 0


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match=r"replay.storage: unknown 'ssd'; valid: memory, disk"):
        registry.build("replay", {"name": "uniform", "storage": "ssd"}, num_envs=1, length=4)
    with pytest.raises(ConfigError, match=r"replay.capacity.*valid keys: capacity, storage"):
        registry.build("replay", {"name": "uniform", "capacity": "big"}, num_envs=1, length=4)
    with pytest.raises(ConfigError, match="replay: unknown replay 'fifo'; valid: episodes, prioritize_ends, uniform"):
        registry.build("replay", {"name": "fifo"}, num_envs=1, length=4)
    with pytest.raises(ConfigError, match="needs a run directory"):
        registry.build("replay", {"name": "uniform", "storage": "disk"}, num_envs=1, length=4, directory=None)


def test_sampling_before_a_window_is_stored_is_a_clear_error():
    replay = uniform(ReplayConfig(capacity=100), num_envs=1, length=8)
    with pytest.raises(RuntimeError, match="holds 0 steps per env, fewer than one window of 8"):
        replay.sample(2)
    fill(replay, 5, 1)
    with pytest.raises(RuntimeError, match="holds 5 steps per env, fewer than one window of 8"):
        replay.sample(2)
    fill(replay, 3, 1)
    assert replay.sample(2).batch_size == (2, 8)


def _anon_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def test_disk_replay_keeps_host_memory_flat(tmp_path):
    """Writing 100 MB of 64x64 frames into a disk replay must not grow anonymous (heap) memory:
    the frames live in the memory-mapped files (page cache the kernel can drop)."""
    envs = 16
    replay = uniform(
        ReplayConfig(capacity=envs * 1000, storage="disk"), num_envs=envs, length=8, directory=str(tmp_path)
    )
    step = TensorDict(
        {
            "image": torch.zeros(envs, 3, 64, 64, dtype=torch.uint8),
            "action": torch.zeros(envs, 6),
            "reward": torch.zeros(envs),
            "is_first": torch.zeros(envs, dtype=torch.bool),
            "is_last": torch.zeros(envs, dtype=torch.bool),
            "is_terminal": torch.zeros(envs, dtype=torch.bool),
        },
        batch_size=[envs],
    )
    replay.add(step)
    before = _anon_rss_mb()
    for _ in range(500):  # 8k frames x 12 KB
        replay.add(step)
    assert replay.steps == 501 and len(replay) == 501 * envs
    assert _anon_rss_mb() - before < 40


def test_episode_index_kept_while_writing_equals_a_full_scan():
    """The episode starts indexed write by write (and across the circular overwrite) are those a
    scan of every stored flag finds; so are they after many writes between two samples."""
    cfg = EpisodesConfig(capacity=3 * 40, ongoing=True, short="chain")  # any episode will do: no is_last here
    replay = episodes(cfg, num_envs=3, length=4, seed=0)
    sampler, storage = replay.buffer.sampler, replay.buffer.storage
    rng = torch.Generator().manual_seed(0)
    left = [0, 0, 0]  # steps left in each env's current episode
    paths = Counter()
    for _ in range(60):
        for _ in range(int(torch.randint(1, 50, (1,), generator=rng))):  # sometimes more than the 40 rows kept
            first = [n == 0 for n in left]
            left = [int(torch.randint(1, 15, (1,), generator=rng)) if f else n - 1 for f, n in zip(first, left)]
            replay.add(TensorDict({"is_first": torch.tensor(first), "reward": torch.zeros(3)}, batch_size=[3]))
        if replay.steps < 4:
            continue
        paths["index" if sampler._begin is not None and len(sampler._pending) < replay.steps else "scan"] += 1
        replay.sample(8)
        kept = sampler.episodes(storage, *stream(storage))
        fresh = EpisodeSampler(4, 3).episodes(storage, *stream(storage))
        for got, want in zip(kept, fresh):
            assert torch.equal(got, want)
    assert storage._last_cursor_index < replay.steps - 1  # the writer has wrapped around
    assert paths["index"] > 20 and paths["scan"] > 1  # both ways of keeping the index were taken
