"""The env adapter layer: Atari preprocessing, DMC from pixels, gymnasium ids, vector envs, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import registry
from components.envs import EnvInfo, env_info, make_vector_env
from components.envs import dmc as dmc_module
from registry import ConfigError

FLAG_SPACE = ("is_first", "is_last", "is_terminal")


def make(cfg: dict, seed: int = 0):
    """Build one env from ``cfg`` through the registry."""
    return registry.build("env", cfg, path="env", seed=seed)


def check_obs(env, obs, first: bool):
    """The observation matches the env's Dict space and carries numpy bool flags."""
    assert set(obs) == set(env.observation_space.spaces)
    for key, space in env.observation_space.spaces.items():
        assert np.shape(obs[key]) == space.shape and np.asarray(obs[key]).dtype == space.dtype, key
    assert all(isinstance(obs[k], np.bool_) for k in FLAG_SPACE)
    assert bool(obs["is_first"]) is first


# ---- Atari -------------------------------------------------------------------------------------


def test_atari_preprocessing_shapes_and_settings():
    env = make({"name": "atari", "task": "pong"})
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (1, 64, 64) and obs["image"].dtype == np.uint8
    check_obs(env, obs, first=True)
    assert not obs["is_last"] and not obs["is_terminal"]
    ale_env = env.unwrapped
    assert ale_env._frameskip == 1  # the emulator repeats nothing itself: AtariPreprocessing does
    assert ale_env.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.action_space.n == 18  # the full action set, as the official code at the scores' commit
    assert env.metadata["action_repeat"] == 4
    colour = make(
        {"name": "atari", "task": "space_invaders", "grayscale": False, "full_action_space": False, "sticky": 0.0}
    )
    obs, _ = colour.reset(seed=0)
    assert obs["image"].shape == (3, 64, 64) and obs["image"].dtype == np.uint8
    assert colour.action_space.n == 6 == len(colour.unwrapped.ale.getMinimalActionSet())  # the game's minimal set
    assert colour.unwrapped.spec.id == "ALE/SpaceInvaders-v5"
    assert colour.unwrapped.ale.getFloat("repeat_action_probability") == 0.0


def test_atari_action_repeat_advances_four_frames_per_step_and_is_first_only_on_reset():
    env = make({"name": "atari", "task": "pong", "noops": 0})
    obs, _ = env.reset(seed=0)
    assert obs["is_first"]
    ale = env.unwrapped.ale
    before = ale.getEpisodeFrameNumber()
    for _ in range(5):
        obs, *_ = env.step(0)
        check_obs(env, obs, first=False)
    assert ale.getEpisodeFrameNumber() - before == 20
    info = EnvInfo(obs_space={"image": (1, 64, 64)}, action_dim=18, discrete=True, action_repeat=4)  # full action set
    assert env_info(env) == info


def test_atari_time_limit_truncates_without_terminal():
    env = make({"name": "atari", "task": "pong", "time_limit": 200, "noops": 0})  # 200 frames = 50 agent steps
    env.reset(seed=0)
    for steps in range(1, 100):  # noqa: B007 (the count is checked after the loop)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert steps == 50 and truncated and not terminated
    assert obs["is_last"] and not obs["is_terminal"]


def _run_until_life_lost(env):
    env.reset(seed=0)
    lives = env.unwrapped.ale.lives()
    for _ in range(2000):
        obs, _, terminated, truncated, _ = env.step(1)  # FIRE, otherwise Breakout never launches a ball
        if env.unwrapped.ale.lives() < lives or terminated or truncated:
            break
    assert env.unwrapped.ale.lives() < lives
    return obs, terminated


def test_atari_life_loss_is_not_terminal_by_default_but_is_with_life_done():
    obs, terminated = _run_until_life_lost(make({"name": "atari", "task": "breakout", "noops": 0}))
    assert not terminated and not obs["is_terminal"] and not obs["is_last"]  # the episode goes on
    obs, terminated = _run_until_life_lost(make({"name": "atari", "task": "breakout", "noops": 0, "life_done": True}))
    assert terminated and obs["is_terminal"] and obs["is_last"]


# ---- DMC ---------------------------------------------------------------------------------------


def test_dmc_pixels_action_repeat_and_time_limit():
    env = make({"name": "dmc", "task": "cartpole_balance", "time_limit": 10})
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (3, 64, 64) and obs["image"].dtype == np.uint8 and obs["image"].std() > 0
    check_obs(env, obs, first=True)
    assert os.environ.get("MUJOCO_GL")  # chosen (or given) before dm_control was imported
    dmc = env.unwrapped.dmc
    t0 = dmc.physics.data.time
    obs, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    check_obs(env, obs, first=False)
    assert dmc.physics.data.time - t0 == pytest.approx(2 * dmc.control_timestep())
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        assert not (terminated or truncated or obs["is_last"])
    obs, reward, terminated, truncated, _ = env.step(np.zeros(1, np.float32))  # 5 agent steps x 2 = 10
    assert truncated and not terminated and obs["is_last"] and not obs["is_terminal"]
    assert env_info(env) == EnvInfo(obs_space={"image": (3, 64, 64)}, action_dim=1, discrete=False, action_repeat=2)


def test_dmc_renders_at_default_quality_unless_fast_render_is_asked_for():
    """The official frames have MuJoCo's multisampling, shadows and reflections; ``fast_render`` drops them."""
    default = make({"name": "dmc", "task": "cartpole_balance"})
    fast = make({"name": "dmc", "task": "cartpole_balance", "fast_render": True})
    quality = default.unwrapped.dmc.physics.model.vis.quality
    assert quality.offsamples > 0 and quality.shadowsize > 0
    assert default.unwrapped.dmc.physics.model.light_castshadow.any()
    quality = fast.unwrapped.dmc.physics.model.vis.quality
    assert quality.offsamples == 0 and quality.shadowsize == 0
    assert not fast.unwrapped.dmc.physics.model.light_castshadow.any()
    pretty, plain = default.reset(seed=0)[0]["image"], fast.reset(seed=0)[0]["image"]
    assert default.unwrapped.dmc.physics.data.qpos.tolist() == fast.unwrapped.dmc.physics.data.qpos.tolist()
    assert np.abs(pretty.astype(int) - plain.astype(int)).mean() > 1  # the same state, drawn differently
    default.close(), fast.close()


def test_dmc_proprio_keys_and_unit_actions():
    env = make({"name": "dmc", "task": "walker_walk", "pixels": False, "proprio": True})
    info = env_info(env)
    assert info.obs_space == {"height": (1,), "orientations": (14,), "velocity": (9,)}
    assert not info.discrete and info.action_dim == 6 and info.action_repeat == 2
    obs, _ = env.reset(seed=0)
    check_obs(env, obs, first=True)
    assert all(obs[k].dtype == np.float32 for k in info.obs_space)
    # ball_in_cup's domain has underscores; quadruped's native bounds are not [-1, 1] and its camera is 2
    cup = make({"name": "dmc", "task": "ball_in_cup_catch", "pixels": False, "proprio": True})
    assert cup.action_space.low.tolist() == [-1.0, -1.0] and cup.action_space.dtype == np.float32
    quad = make({"name": "dmc", "task": "quadruped_walk", "pixels": False, "proprio": True})
    assert quad.action_space.low.min() == -1.0 and quad.action_space.high.max() == 1.0
    assert quad.unwrapped.camera == 2 and cup.unwrapped.camera == 0


@pytest.mark.parametrize(
    "cfg, shape",
    [
        ({"name": "atari", "task": "pong"}, (64, 64)),  # the image observation
        ({"name": "gym", "task": "CartPole-v1"}, (400, 600, 3)),  # a vector env's render
        ({"name": "dmc", "task": "cartpole_balance", "pixels": False, "proprio": True}, (64, 64, 3)),
    ],
    ids=["atari", "gym-vector", "dmc-proprio"],
)
def test_evaluation_videos_have_frames_for_image_and_vector_envs(cfg, shape):
    from runner.episodes import frame

    env = make(cfg)
    obs, _ = env.reset(seed=0)
    image = frame(env, obs)
    assert image.shape == shape and image.dtype == np.uint8 and image.std() > 0  # a picture, not a blank
    env.close()


def test_gl_backend_selection_sets_a_working_backend():
    code = (
        "from components.envs.dmc import select_gl_backend; import os; "
        "b = select_gl_backend(); print(b, os.environ['MUJOCO_GL'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    backend, chosen = out.stdout.split()
    assert backend == chosen and backend in dmc_module.GL_BACKENDS


def test_gl_backend_selection_names_packages_when_nothing_works(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(dmc_module, "GL_BACKENDS", ("no_such_backend",))
    with pytest.raises(RuntimeError, match="libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 libosmesa6"):
        dmc_module.select_gl_backend()
    assert "MUJOCO_GL" not in os.environ
    assert dmc_module.select_gl_backend(required=False) is None


# ---- gym ---------------------------------------------------------------------------------------


def test_gym_vector_task_terminates():
    env = make({"name": "gym", "task": "CartPole-v1"})
    info = env_info(env)
    assert info == EnvInfo(obs_space={"vector": (4,)}, action_dim=2, discrete=True, action_repeat=1)
    obs, _ = env.reset(seed=0)
    check_obs(env, obs, first=True)
    for _ in range(500):
        obs, _, terminated, truncated, _ = env.step(0)  # always push left: the pole falls
        if terminated or truncated:
            break
    check_obs(env, obs, first=False)
    assert terminated and obs["is_terminal"] and obs["is_last"] and obs["vector"].dtype == np.float32


def test_gym_continuous_actions_are_rescaled_to_unit_box():
    env = make({"name": "gym", "task": "Pendulum-v1"})
    assert env.action_space.low.tolist() == [-1.0] and env.action_space.high.tolist() == [1.0]
    assert env.action_space.dtype == np.float32
    # Out-of-range actions (bounded_normal samples) are executed clipped: 5 acts as 1, -3 as -1.
    states = []
    for action in ([5.0], [1.0], [-3.0], [-1.0]):
        env.reset(seed=0)
        states.append(env.step(np.array(action, np.float32))[0]["vector"])
    assert np.array_equal(states[0], states[1]) and np.array_equal(states[2], states[3])
    assert not np.array_equal(states[0], states[2])


def test_gym_pixels_and_action_repeat():
    env = make({"name": "gym", "task": "CartPole-v1", "pixels": True, "size": 32, "action_repeat": 2})
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"image", *FLAG_SPACE} and obs["image"].shape == (3, 32, 32) and obs["image"].dtype == np.uint8
    _, reward, *_ = env.step(0)
    assert reward == 2.0 and env_info(env).action_repeat == 2


# ---- vector envs ------------------------------------------------------------------------------


def test_vector_env_autoresets_with_is_first():
    envs = make_vector_env({"name": "gym", "task": "CartPole-v1"}, num_envs=2, seed=0)
    assert env_info(envs) == EnvInfo(obs_space={"vector": (4,)}, action_dim=2, discrete=True, action_repeat=1)
    obs, _ = envs.reset()
    assert obs["is_first"].all() and obs["vector"].shape == (2, 4) and obs["is_first"].dtype == bool
    assert not np.allclose(obs["vector"][0], obs["vector"][1])  # env i is seeded seed + i
    ended = False
    for _ in range(500):
        obs, *_ = envs.step(np.zeros(2, np.int64))
        if ended:
            assert obs["is_first"][0] and not obs["is_last"][0]  # the step after an episode end: reset obs
            break
        assert not obs["is_first"].any()
        ended = bool(obs["is_last"][0])
    assert ended
    again = make_vector_env({"name": "gym", "task": "CartPole-v1"}, num_envs=2, seed=0)
    first, _ = again.reset()
    assert np.allclose(
        first["vector"], make_vector_env({"name": "gym", "task": "CartPole-v1"}, 2, seed=0).reset()[0]["vector"]
    )


def test_async_vector_env_runs_envs_in_subprocesses():
    envs = make_vector_env({"name": "gym", "task": "CartPole-v1"}, num_envs=2, seed=0, asynchronous=True)
    try:
        obs, _ = envs.reset(seed=0)
        obs, reward, *_ = envs.step(np.zeros(2, np.int64))
        assert obs["vector"].shape == (2, 4) and reward.tolist() == [1.0, 1.0] and not obs["is_first"].any()
        assert env_info(envs) == EnvInfo(obs_space={"vector": (4,)}, action_dim=2, discrete=True, action_repeat=1)
    finally:
        envs.close()


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "atari", "task": "pongg"}, r"env.task: unknown Atari game 'pongg'; did you mean: pong.*ale_py.roms"),
        ({"name": "atari", "task": "xyz"}, r"env.task: unknown Atari game 'xyz'; .*alien.*ale_py.roms.get_all_rom_ids"),
        (
            {"name": "dmc", "task": "cartpole_balanse"},
            r"env.task: unknown DMC task 'cartpole_balanse'; did you mean: cartpole_balance",
        ),
        (
            {"name": "dmc", "task": "ball_in_cup"},
            r"env.task: unknown DMC task 'ball_in_cup'; did you mean: ball_in_cup_catch",
        ),
        (
            {"name": "gym", "task": "CartPol-v1"},
            r"env.task: unknown gymnasium id 'CartPol-v1'; did you mean: CartPole-v1",
        ),
        ({"name": "atari", "sticky": 1.5}, r"env.sticky: must lie in \[0, 1\]"),
        ({"name": "dmc", "pixels": False}, r"env.pixels / proprio: both are false"),
        ({"name": "atarii"}, r"env: unknown env 'atarii'; valid: atari, crafter, dmc, gym"),
    ],
)
def test_bad_settings_raise_config_errors_listing_valid_alternatives(cfg, message):
    with pytest.raises(ConfigError, match=message):
        make(cfg)


def test_crafter_pixels_truncation_death_and_achievements():
    env = make({"name": "crafter", "time_limit": 5})
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (3, 64, 64) and obs["image"].dtype == np.uint8 and env.action_space.n == 17
    check_obs(env, obs, first=True)
    for _ in range(4):
        obs, _, terminated, truncated, info = env.step(5)  # "do": collects wood when facing a tree
        assert not (terminated or truncated) and info == {}
    obs, _, terminated, truncated, info = env.step(0)
    assert truncated and not terminated and obs["is_last"] and not obs["is_terminal"]
    stats = info["episode_stats"]
    assert len(stats) == 22 and set(stats.values()) <= {0.0, 1.0} and "achievement_collect_wood" in stats
    env.reset()
    inner = env.unwrapped._env
    step = inner.step

    def dying(action):  # the player's health reaches 0: crafter reports done with discount 0
        image, reward, _, info = step(action)
        return image, reward, True, {**info, "discount": 0.0}

    inner.step = dying
    obs, _, terminated, truncated, _ = env.step(0)
    assert terminated and not truncated and obs["is_terminal"]
    with pytest.raises(ConfigError, match=r"env.task: unknown Crafter task 'rewards'; valid: reward, noreward"):
        make({"name": "crafter", "task": "rewards"})
