"""End to end through ``debug=smoke``: every recipe and the main component swaps train on the CPU."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runner.train import train

ROOT = Path(__file__).resolve().parent.parent


def _check(summary: dict, cfg) -> None:
    t = cfg.train
    assert summary["agent_steps"] >= t.steps
    pretrain = t.pretrain + t.world_model_pretrain
    expected_updates = pretrain + t.train_ratio * (summary["agent_steps"] - t.prefill) / (t.batch * t.length)
    assert summary["updates"] == math.ceil(expected_updates)


@pytest.mark.parametrize(
    "overrides",
    [
        ["recipe=dreamerv2_cartpole"],
        ["recipe=dreamerv2_cartpole", "latent=gaussian", "kl=plain", "actor_grad=dynamics"],
        ["recipe=dreamerv2_cartpole", "actor_grad=mix", "replay=prioritize_ends", "model.grad_heads=[reward,discount]"],
        ["recipe=dreamerv2_atari", "env.time_limit=400"],
        ["recipe=dreamerv2_atari_nokl", "encoder=conv", "decoder=conv", "env.time_limit=400"],
        ["recipe=dreamerv2_dmc", "env.time_limit=60"],  # episodes of 30 steps: complete within the prefill
        ["recipe=dreamerv1_dmc", "env.proprio=true", "env.time_limit=60"],
    ],
    ids=[
        "cartpole",
        "cartpole-v1style",
        "cartpole-mix-ends-noimage",
        "atari",
        "atari-nokl-conv",
        "dmc",
        "v1-dmc-proprio",
    ],
)
def test_recipe_trains_end_to_end(make_cfg, overrides):
    cfg = make_cfg(*overrides, "debug=smoke", "logger=csv")
    summary = train(cfg)
    _check(summary, cfg)
    metrics = Path(cfg.run_dir) / "csv" / "metrics.csv"
    text = metrics.read_text()
    header = text.splitlines()[0].split(",")
    assert "model/loss" in header and "behavior/actor_loss" in header
    rows = [dict(zip(header, line.split(","))) for line in text.splitlines()[1:]]
    losses = [float(r["model/loss"]) for r in rows if r.get("model/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (Path(cfg.run_dir) / "config.yaml").exists() and (Path(cfg.run_dir) / "commit.txt").exists()


def test_episode_returns_are_logged_against_frames(make_cfg):
    cfg = make_cfg("recipe=dreamerv2_cartpole", "debug=smoke", "logger=csv", "env.action_repeat=2", "train.steps=200")
    summary = train(cfg)
    assert summary["episodes"] > 0 and summary["frames"] == 2 * summary["agent_steps"]
    text = (Path(cfg.run_dir) / "csv" / "metrics.csv").read_text().splitlines()
    header = text[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in text[1:]]
    episodes = [r for r in rows if r.get("episode/return")]
    assert episodes
    steps = [int(r["step"]) for r in episodes]
    assert all(s % 2 == 0 for s in steps) and max(steps) <= summary["frames"]


def test_wandb_logger_offline(make_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must come from the logger config itself
    cfg = make_cfg("recipe=dreamerv2_cartpole", "debug=smoke", "logger=wandb")
    train(cfg)
    runs = list((Path(cfg.run_dir) / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))


def test_run_py_command_line(tmp_path):
    """The README's command shape: python run.py recipe=... overrides (here with debug=smoke)."""
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "recipe=dreamerv2_cartpole",
            "latent=categorical",
            "debug=smoke",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*")), "TensorBoard logs expected in the run dir"
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    # a newcomer's first minutes: each Lightning line once, no advert, the prefill's own bar, the CPU's cost
    out = proc.stdout + proc.stderr
    assert out.count("GPU available:") == 1 and "Tip:" not in out, out[-3000:]
    assert "Prefill (random actions)" in proc.stderr and re.search(r"prefill: [\d,]+ random agent steps", out)
    assert re.search(r"on this CPU an update takes [0-9.]+ s \(collection included\): the [\d,]+ updates left", out)
    assert (tmp_path / "run.log").read_text().count("GPU available:") == 1  # Hydra's file keeps Lightning's lines


def test_run_py_reports_config_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", "debug=smoke", "+kl.alhpa=1", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "config error: kl.alhpa" in proc.stderr and "valid keys: alpha" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override", ["kl.alpha=1.5", "+kl.alhpa=1"])
def test_a_refused_config_leaves_no_run_folder(tmp_path, override):
    """Hydra makes runs/<day>/<time>_<recipe>/ before the config is checked; a refused one removes it."""
    (tmp_path / "keep").mkdir()  # the working directory's own files stay
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "debug=smoke", override],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "config error: kl.al" in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


@pytest.mark.parametrize(
    "launcher", ["basic", pytest.param("joblib", marks=pytest.mark.slow)]
)  # same sweep, another launcher
def test_multirun_sweep_and_its_summary(tmp_path, launcher):
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "-m",
            "recipe=dreamerv2_cartpole",
            "debug=smoke",
            "logger=csv",
            "train.steps=200",
            "latent=categorical,gaussian",
            "seed=0,1",
            f"hydra/launcher={launcher}",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 4  # the folder names show the swept values
    for latent in ("categorical", "gaussian"):
        for seed in (0, 1):
            assert sum(f"latent={latent}" in r and f"seed={seed}" in r for r in runs) == 1
    summary = subprocess.run(
        ["dreamerkit-sweep-summary", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert summary.returncode == 0, summary.stderr[-2000:]
    lines = summary.stdout.splitlines()
    assert lines[0].split() == ["setting", "seeds", "mean", "std", "min", "max"]
    assert {line.split()[0] for line in lines[1:3]} == {"latent=categorical", "latent=gaussian"}
    assert (tmp_path / "summary.png").exists()


def test_periodic_eval_and_open_loop_videos(make_cfg):
    import imageio.v2 as imageio

    cfg = make_cfg(
        "recipe=dreamerv2_atari",
        "debug=smoke",
        "logger=tensorboard",
        "env.time_limit=200",
        "eval.every=60",
        "eval.during_episodes=2",
        "eval.during_videos=1",
        "eval.video_every=40",
    )
    train(cfg)
    run_dir = Path(cfg.run_dir)
    rows = (run_dir / "eval" / "learning.csv").read_text().splitlines()
    assert rows[0] == "frames,agent_steps,updates,eval_return,train_return,wall_s" and len(rows) == 3  # at 60, 120
    # every episode's return is kept beside the mean
    episodes = (run_dir / "eval" / "episodes.csv").read_text().splitlines()
    assert episodes[0] == "frames,agent_steps,episode,return" and len(episodes) == 5  # 2 evaluations x 2 episodes
    for row in rows[1:]:
        frames, mean = row.split(",")[0], float(row.split(",")[3])
        returns = [float(e.split(",")[3]) for e in episodes[1:] if e.split(",")[0] == frames]
        assert len(returns) == 2 and abs(sum(returns) / 2 - mean) < 1e-9
    # a GIF of the first of the 2 episodes at each evaluation, named by frames (agent steps x repeat 4)
    episode_gifs = sorted(p.name for p in (run_dir / "eval").glob("episode_*.gif"))
    assert episode_gifs == ["episode_000000000240_0.gif", "episode_000000000480_0.gif"]
    assert len(imageio.mimread(run_dir / "eval" / episode_gifs[0])) > 1
    assert [int(r.split(",")[1]) for r in rows[1:]] == [60, 120]
    gifs = sorted((run_dir / "videos").glob("openloop_*.gif"))
    assert [g.name for g in gifs] == ["openloop_00000040.gif", "openloop_00000080.gif"]

    frames = imageio.mimread(gifs[0])
    assert len(frames) == cfg.train.length and frames[0].shape[:2] == (3 * 64, 4 * 64)  # truth/model/error x 4


def test_open_loop_prediction_builds_no_autograd_graph(make_cfg):
    from runner.train import build

    module, experience, _ = build(make_cfg("recipe=dreamerv2_dmc", "debug=smoke", "logger=none", "env.time_limit=30"))
    while experience.replay.steps < 20:  # an episode of 15 steps has ended: the replay can draw
        experience.step(None)
    batch = experience.replay.sample(2)
    experience.close()
    rssm, grad_enabled = module.world_model.rssm, []
    img_step = rssm.img_step

    def recording(*args, **kwargs):
        grad_enabled.append(torch.is_grad_enabled())
        return img_step(*args, **kwargs)

    rssm.img_step = recording
    video = module.world_model.open_loop(batch, context=5)
    assert video.dtype == torch.uint8 and len(grad_enabled) == batch["action"].shape[1] - 5
    assert not any(grad_enabled)


def test_world_model_pretrain_updates_leave_the_actor_and_critic_alone(make_cfg, monkeypatch):
    from recipes.behavior import Behavior
    from recipes.world_model import WorldModel

    calls = {"world_model": 0, "behavior": []}
    model_loss, behavior_loss = WorldModel.loss, Behavior.loss

    def count_model(self, batch):
        calls["world_model"] += 1
        return model_loss(self, batch)

    def count_behavior(self, world_model, post, is_terminal, agent_steps):
        calls["behavior"].append(agent_steps)
        return behavior_loss(self, world_model, post, is_terminal, agent_steps)

    monkeypatch.setattr(WorldModel, "loss", count_model)
    monkeypatch.setattr(Behavior, "loss", count_behavior)
    cfg = make_cfg("recipe=dreamerv2_cartpole", "debug=smoke", "train.world_model_pretrain=4")
    summary = train(cfg)
    _check(summary, cfg)
    assert summary["updates"] == calls["world_model"]
    assert len(calls["behavior"]) == summary["updates"] - 4  # every update after the first 4
    # the behavior gets the agent-step count (the mix schedule's clock), from the end of the prefill on
    assert calls["behavior"] == sorted(calls["behavior"]) and calls["behavior"][0] >= cfg.train.prefill


V2_WITH_V3_PARTS = [
    "recipe=dreamerv2_cartpole",
    "model.reward_head.name=twohot",
    "behavior.critic.name=twohot",
    "kl=free_bits",  # with its own free, free_avg and scale: a recipe tunes only the KL option it chose
    "behavior.return_norm.name=percentile",
    "latent=categorical_unimix",
    "behavior.actor.name=onehot",
    "+behavior.actor.unimix=0.01",
]
V3_WITH_V2_PARTS = [
    "recipe=dreamerv3_dmc_proprio",
    "latent=gaussian",
    "kl=balanced",
    "model.reward_head.name=normal",
    "model.reward_transform=tanh",
]


@pytest.mark.parametrize(
    "overrides, columns",
    [
        (["recipe=dreamerv3_dmc_proprio"], ["behavior/return_scale"]),
        (["recipe=dreamerv3_dmc_vision"], ["behavior/return_scale"]),
        (["recipe=dreamerv3_atari100k", "env.time_limit=400"], ["behavior/return_scale"]),
        (["recipe=dreamerv3_crafter", "env.time_limit=40"], ["episode/return", "episode/achievement_collect_wood"]),
        (V2_WITH_V3_PARTS, ["behavior/return_scale"]),
        (V3_WITH_V2_PARTS, []),
    ],
    ids=["v3-dmc-proprio", "v3-dmc-vision", "v3-atari100k", "v3-crafter", "v2-with-v3-parts", "v3-with-v2-parts"],
)
def test_dreamerv3_recipes_and_cross_version_swaps_train_end_to_end(make_cfg, overrides, columns):
    cfg = make_cfg(*overrides, "debug=smoke", "logger=csv", "train.steps=80")  # 2/3 of a smoke run: six of them
    summary = train(cfg)
    _check(summary, cfg)
    text = (Path(cfg.run_dir) / "csv" / "metrics.csv").read_text().splitlines()
    header = text[0].split(",")
    assert all(c in header for c in ["model/loss", "behavior/actor_loss", *columns]), header
    rows = [dict(zip(header, line.split(","))) for line in text[1:]]
    losses = [float(r["model/loss"]) for r in rows if r.get("model/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
