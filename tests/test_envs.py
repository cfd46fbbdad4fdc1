"""The env adapter layer: Atari preprocessing, DMC from pixels, gymnasium ids, vector envs, errors."""

from __future__ import annotations

import numpy as np
import pytest

import registry
from components.envs import env_info, make_vector_env
from registry import ConfigError


def make(cfg: dict, seed: int = 0):
    return registry.build("env", cfg, path="env", seed=seed)


def test_atari_preprocessing_shapes_and_settings():
    env = make({"name": "atari", "task": "pong"})
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (1, 64, 64) and obs["image"].dtype == np.uint8
    assert obs["is_first"] and not obs["is_last"] and not obs["is_terminal"]
    ale_env = env.unwrapped
    assert ale_env._frameskip == 1  # the emulator repeats nothing itself: AtariPreprocessing does
    assert ale_env.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.action_space.n == 6  # Pong's minimal action set
    colour = make({"name": "atari", "task": "pong", "grayscale": False, "full_action_space": True})
    assert colour.reset(seed=0)[0]["image"].shape == (3, 64, 64) and colour.action_space.n == 18


def test_atari_action_repeat_advances_four_frames_per_step():
    env = make({"name": "atari", "task": "pong", "noops": 0})
    env.reset(seed=0)
    ale = env.unwrapped.ale
    before = ale.getEpisodeFrameNumber()
    for _ in range(5):
        obs, *_ = env.step(0)
        assert not obs["is_first"]
    assert ale.getEpisodeFrameNumber() - before == 20
    assert env_info(env).action_repeat == 4


def test_atari_time_limit_truncates_without_terminal():
    env = make({"name": "atari", "task": "pong", "time_limit": 200})
    env.reset(seed=0)
    for _ in range(100):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert truncated and not terminated
    assert obs["is_last"] and not obs["is_terminal"]


def test_atari_life_loss_is_not_terminal_by_default():
    env = make({"name": "atari", "task": "breakout", "noops": 0})
    env.reset(seed=0)
    lives = env.unwrapped.ale.lives()
    for _ in range(2000):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if env.unwrapped.ale.lives() < lives or terminated or truncated:
            break
    assert env.unwrapped.ale.lives() < lives  # a life was lost ...
    assert not obs["is_terminal"] and not obs["is_last"]  # ... and the episode goes on


def test_dmc_pixels_action_repeat_and_time_limit():
    env = make({"name": "dmc", "task": "cartpole_balance", "time_limit": 10})
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (3, 64, 64) and obs["image"].dtype == np.uint8 and obs["image"].std() > 0
    physics = env.unwrapped._env.physics
    t0 = physics.data.time
    obs, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    assert physics.data.time - t0 == pytest.approx(2 * env.unwrapped._env.control_timestep())
    for _ in range(4):
        obs, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    assert truncated and not terminated and obs["is_last"] and not obs["is_terminal"]  # 5 steps x 2 = 10


def test_dmc_proprio_keys():
    env = make({"name": "dmc", "task": "walker_walk", "pixels": False, "proprio": True})
    info = env_info(env)
    assert info.obs_space == {"height": (1,), "orientations": (14,), "velocity": (9,)}
    assert not info.discrete and info.action_dim == 6 and info.action_repeat == 2


def test_gym_vector_task_terminates():
    env = make({"name": "gym", "task": "CartPole-v1"})
    info = env_info(env)
    assert info.obs_space == {"vector": (4,)} and info.discrete and info.action_dim == 2
    env.reset(seed=0)
    for _ in range(500):
        obs, _, terminated, truncated, _ = env.step(0)  # always push left: the pole falls
        if terminated or truncated:
            break
    assert terminated and obs["is_terminal"] and obs["is_last"] and obs["vector"].dtype == np.float32


def test_gym_continuous_actions_are_rescaled_to_unit_box():
    env = make({"name": "gym", "task": "Pendulum-v1"})
    assert env.action_space.low.tolist() == [-1.0] and env.action_space.high.tolist() == [1.0]


def test_vector_env_autoresets_with_is_first():
    envs = make_vector_env({"name": "gym", "task": "CartPole-v1"}, num_envs=2, seed=0)
    obs, _ = envs.reset(seed=0)
    assert obs["is_first"].all() and obs["vector"].shape == (2, 4)
    ended = False
    for _ in range(500):
        obs, *_ = envs.step(np.zeros(2, np.int64))
        if ended:
            assert obs["is_first"][0]  # the step after an episode end is the reset observation
            break
        ended = bool(obs["is_last"][0])
    assert ended


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "atari", "task": "pongg"}, r"env.task: unknown Atari game 'pongg'; did you mean: pong"),
        ({"name": "dmc", "task": "cartpole_balanse"}, r"env.task: unknown DMC task 'cartpole_balanse'; did you mean: cartpole_balance"),
        ({"name": "gym", "task": "CartPol-v1"}, r"env.task: unknown gymnasium id 'CartPol-v1'; did you mean: CartPole-v1"),
        ({"name": "atarii"}, r"unknown env 'atarii'; valid env names: atari, dmc, gym"),
    ],
)
def test_unknown_ids_list_valid_alternatives(cfg, message):
    with pytest.raises(ConfigError, match=message):
        make(cfg)


def test_async_vector_env_runs_envs_in_subprocesses():
    envs = make_vector_env({"name": "gym", "task": "CartPole-v1"}, num_envs=2, seed=0, asynchronous=True)
    try:
        obs, _ = envs.reset(seed=0)
        obs, reward, *_ = envs.step(np.zeros(2, np.int64))
        assert obs["vector"].shape == (2, 4) and reward.tolist() == [1.0, 1.0]
        assert env_info(envs).obs_space == {"vector": (4,)}
    finally:
        envs.close()
