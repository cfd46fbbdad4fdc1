"""Runs you can trust: checkpoints, kill-and-resume, determinism, evaluation and every failure handled."""

from __future__ import annotations

import csv
import errno
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import registry
from components.diskspace import NoSpace
from components.envs.base import Flags
from recipes.agent import NonFiniteLoss
from recipes.behavior import Behavior
from recipes.world_model import WorldModel
from runner import checkpoint as ckpt_module
from runner.checkpoint import CheckpointError, load_checkpoint
from runner.train import train

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["recipe=dreamerv2_cartpole", "debug=smoke", "logger=csv", "replay.storage=disk", "train.log_every=1"]


def run_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_csv_metrics_reach_the_disk_while_the_run_goes_on(tmp_path):
    """Each row is on disk as soon as it is logged, also when steps are frames in 2s (a SIGKILL loses none)."""
    from runner.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    for i in range(9):
        logger.log_metrics({"model/loss": float(i)}, step=2 * i)  # action repeat 2: step + 1 is always odd
        assert [float(r["model/loss"]) for r in metrics(tmp_path)] == [float(j) for j in range(i + 1)]


def test_sigkill_then_resume_continues_the_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "run.py",
            *SMOKE,
            "train.steps=100000",
            "train.checkpoint_every=60",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while len(list((run_dir / "checkpoints").glob("step_*.ckpt"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert (run_dir / "checkpoints" / "last.ckpt").exists(), "no checkpoint before the deadline"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["agent"]["ranks"][0]["experience"]
    steps_at_ckpt, replay_at_ckpt = state["agent_steps"], state["replay"]["steps"]
    rows_before = len(metrics(run_dir))
    target = steps_at_ckpt + 150
    done = run_py(f"resume={run_dir}", f"train.steps={target}")
    assert done.returncode == 0, done.stderr[-3000:]
    after = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["agent"]["ranks"][0]["experience"]
    assert after["agent_steps"] == target  # the env-step counter continued from the checkpoint
    assert after["replay"]["steps"] >= replay_at_ckpt  # the replay was reopened, not refilled
    rows = metrics(run_dir)
    assert len(rows) > rows_before  # the same metrics.csv goes on
    new = [r for r in rows[rows_before:] if r.get("model/loss")]
    assert new and all(math.isfinite(float(r["model/loss"])) for r in new)
    assert min(int(r["step"]) for r in new) >= steps_at_ckpt  # logged against frames after the checkpoint


def test_resuming_twice_gives_identical_first_update_losses(tmp_path):
    base = tmp_path / "base"
    first = run_py(*SMOKE, "train.steps=200", f"hydra.run.dir={base}")
    assert first.returncode == 0, first.stderr[-3000:]
    rows_before = len(metrics(base))
    losses = []
    for name in ("a", "b"):
        copy = tmp_path / name
        shutil.copytree(base, copy)
        resumed = run_py(f"resume={copy}", "train.steps=230")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        new = [r for r in metrics(copy)[rows_before:] if r.get("model/loss")]
        losses.append((new[0]["model/loss"], new[0]["behavior/actor_loss"], new[0]["behavior/critic_loss"]))
    assert losses[0] == losses[1]


def test_corrupt_checkpoint_is_named_in_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    assert run_py(*SMOKE, f"hydra.run.dir={run_dir}").returncode == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    for path in (run_dir / "checkpoints").iterdir():  # no intact step_*.ckpt to fall back to
        path.unlink()
    last.write_bytes(data[: len(data) // 3])
    proc = run_py(f"resume={run_dir}")
    assert proc.returncode != 0
    assert f"checkpoint {last} is corrupt or truncated" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("no checkpoint of the run loads")
    with pytest.raises(CheckpointError, match="no checkpoint at") as err:
        load_checkpoint(tmp_path / "missing.ckpt")
    assert str(err.value) == f"no checkpoint at {tmp_path / 'missing.ckpt'}"  # no other .ckpt beside it
    (tmp_path / "step_000000000130.ckpt").write_bytes(b"")
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:  # a typo of a step: say which there are
        load_checkpoint(tmp_path / "step_000000000128.ckpt")
    assert str(err.value).endswith(f"; {tmp_path} has last.ckpt, step_000000000130.ckpt")


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = ckpt_module.AtomicCheckpointIO()
    path = tmp_path / "step.ckpt"
    io.save_checkpoint({"weights": torch.ones(3)}, path)
    before = digest(path)

    def no_space(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module.torch, "save", no_space)
    with pytest.raises(NoSpace, match=f"could not write checkpoint {path}: no space left on device \\(needs ~"):
        io.save_checkpoint({"weights": torch.zeros(3)}, path)
    assert digest(path) == before and not list(tmp_path.glob("*.tmp"))


def _nan_after(monkeypatch, updates: int):
    original = WorldModel.loss
    calls = {"n": 0}

    def loss(self, batch):
        total, post, m = original(self, batch)
        calls["n"] += 1
        if calls["n"] > updates:
            m["model/reward_loss"] = torch.tensor(float("nan"))
            total = total + m["model/reward_loss"]
        return total, post, m

    monkeypatch.setattr(WorldModel, "loss", loss)


def test_nan_loss_stops_naming_the_term_and_keeps_the_checkpoint(make_cfg, monkeypatch):
    cfg = make_cfg(*SMOKE, "train.steps=400", "train.checkpoint_every=40")
    _nan_after(monkeypatch, 60)
    with pytest.raises(NonFiniteLoss, match=r"non-finite model/reward_loss, model/loss at update 6\d"):
        train(cfg)
    last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    state = load_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert state["agent"]["ranks"][0]["experience"]["updates"] <= 61


def test_nan_loss_can_skip_updates_instead(make_cfg, monkeypatch):
    """A skipped update is no update: the counter and the slow critic's schedule stop at the 40 made."""
    cfg = make_cfg(*SMOKE, "train.steps=150", "train.nonfinite=skip", "behavior.slow_critic_every=3")
    _nan_after(monkeypatch, 40)
    refreshes = []
    original = Behavior.update_slow_critic
    monkeypatch.setattr(Behavior, "update_slow_critic", lambda self, n: refreshes.append(n) or original(self, n))
    summary = train(cfg)
    assert summary["updates"] == 40 and summary["skipped_updates"] > 0
    assert refreshes == list(range(1, 41))  # the world model's NaN skips the whole update
    state = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.ckpt")["agent"]["ranks"][0]
    assert state["updates"] == 40 and state["experience"]["updates"] == 40 + summary["skipped_updates"]


@dataclass
class FlakyConfig:
    """Fails on step ``fail_at`` of its first life (class-wide), then behaves."""

    fail_at: int = 30


class Flaky(gym.Env):
    """A 2-d vector env that raises once, like a crashed emulator or worker."""

    failed = False
    observation_space = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (2,), np.float32)})
    action_space = gym.spaces.Discrete(2)
    metadata = {"action_repeat": 1}

    def __init__(self, fail_at: int):
        self.fail_at, self.t = fail_at, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {"vector": np.zeros(2, np.float32)}, {}

    def step(self, action):
        self.t += 1
        if self.t == self.fail_at and not Flaky.failed:
            Flaky.failed = True
            raise RuntimeError("emulator crashed")
        return {"vector": np.full(2, self.t / 100, np.float32)}, 1.0, self.t >= 50, False, {}


@registry.register("env", "test_flaky", FlakyConfig)
def make_flaky(cfg: FlakyConfig, seed: int = 0):
    """Test env that crashes once."""
    return Flags(Flaky(cfg.fail_at))


def test_a_crashing_environment_is_restarted(make_cfg):
    Flaky.failed = False
    cfg = make_cfg("recipe=dreamerv2_cartpole", "debug=smoke", "logger=none", "env=gym", "train.steps=150")
    cfg.env = {"name": "test_flaky", "fail_at": 40}
    summary = train(cfg)
    assert Flaky.failed and summary["env_restarts"] == 1 and summary["agent_steps"] >= 150


def test_evaluate_command_prints_mean_and_writes_videos(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_py(
        "recipe=dreamerv2_dmc", "debug=smoke", "logger=none", "env.time_limit=30", f"hydra.run.dir={run_dir}"
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    proc = run_py(f"evaluate={run_dir}", "eval.episodes=2", "eval.videos=1", "eval.policy=sample")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "return over 2 episodes (sample):" in proc.stdout and "+-" in proc.stdout
    (out,) = (
        run_dir / "eval"
    ).iterdir()  # this evaluation's own folder, beside its .hydra/: the next one makes another
    assert (out / ".hydra").is_dir() and (out / "episode_0.gif").stat().st_size > 0
    assert len((out / "returns.csv").read_text().splitlines()) == 3


def test_checkpoints_by_wall_time_and_keep_last(make_cfg):
    cfg = make_cfg(
        *SMOKE,
        "train.steps=200",
        "train.checkpoint_every=100000",
        "train.checkpoint_minutes=0.0001",
        "train.keep_checkpoints=2",
    )
    train(cfg)
    kept = sorted(p.name for p in (Path(cfg.run_dir) / "checkpoints").glob("step_*.ckpt"))
    assert len(kept) == 2 and kept[-1] == "step_000000000200.ckpt"
    last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    assert os.path.samefile(last, Path(cfg.run_dir) / "checkpoints" / kept[-1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "run.py",
            *SMOKE,
            "train.steps=100000",
            "train.checkpoint_every=100000",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        stdout=open(tmp_path / "out.txt", "w"),  # a file: a pipe nobody reads meanwhile would fill and block
        stderr=subprocess.STDOUT,
        # a suite started in the background inherits an ignored SIGINT, which Python then keeps
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while (not (run_dir / "csv" / "metrics.csv").exists() or len(metrics(run_dir)) < 20) and time.time() < deadline:
        time.sleep(0.2)
    logged = max(int(float(r["train/updates"])) for r in metrics(run_dir) if r.get("train/updates"))
    proc.send_signal(sig)
    proc.wait(timeout=120)
    err = (tmp_path / "out.txt").read_text()  # Hydra logs to stdout
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["agent"]["ranks"][0]["experience"]
    assert state["updates"] >= logged >= 15, err[-2000:]  # every update made before the signal is saved
    assert proc.returncode == 0 and f"{sig.name}: saved a checkpoint" in err and "finished:" in err, err[-2000:]


@dataclass
class DyingConfig:
    """Kills its own worker process on step ``die_at``."""

    die_at: int = 25
    """Agent step on which the worker process exits."""


class Dying(Flaky):
    """Like a segfaulting emulator: the worker process exits without a word."""

    def __init__(self, die_at: int):
        super().__init__(fail_at=10**9)
        self.die_at = die_at

    def step(self, action):
        if self.t + 1 == self.die_at and os.environ.get("DK_TEST_DIE_ONCE") != "done":
            os.environ["DK_TEST_DIE_ONCE"] = "done"  # inherited by the respawned worker, so it dies once
            os._exit(1)
        return super().step(action)


@registry.register("env", "test_dying", DyingConfig)
def make_dying(cfg: DyingConfig, seed: int = 0):
    """Test env whose worker process dies once."""
    return Flags(Dying(cfg.die_at))


@pytest.mark.slow  # worker processes; test_a_crashing_environment_is_restarted covers the restart in process
def test_a_dead_env_worker_process_is_restarted(make_cfg, monkeypatch):
    monkeypatch.delenv("DK_TEST_DIE_ONCE", raising=False)
    cfg = make_cfg(
        "recipe=dreamerv2_cartpole",
        "debug=smoke",
        "logger=none",
        "train.steps=120",
        "train.async_envs=true",
        "train.num_envs=2",
    )
    cfg.env = {"name": "test_dying", "die_at": 25}
    created, init = [], gym.vector.AsyncVectorEnv.__init__

    def recording_init(self, *args, **kwargs):
        created.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(gym.vector.AsyncVectorEnv, "__init__", recording_init)
    summary = train(cfg)
    assert summary["env_restarts"] >= 1 and summary["agent_steps"] >= 120
    # the broken one too: else gymnasium retries its close, and warns, when it is garbage-collected
    assert len(created) > summary["env_restarts"] and all(env.closed for env in created)


def test_a_resumed_run_continues_the_wall_time_of_learning_csv(tmp_path):
    """eval/learning.csv's wall_s goes on from the last row after a resume, instead of starting at zero."""
    from types import SimpleNamespace

    from runner.periodic_eval import PeriodicEval

    callback = PeriodicEval({}, every=10, episodes=1, run_dir=tmp_path, seed=0)
    rank0 = SimpleNamespace(is_global_zero=True)
    callback.on_train_start(rank0, SimpleNamespace(experience=SimpleNamespace(global_steps=0)))
    assert time.time() - callback._start < 5  # a new run starts its clock now
    with open(callback.path, "a") as f:
        f.write("200,25,7,10.0,9.0,3600.0\n")
    callback.on_train_start(rank0, SimpleNamespace(experience=SimpleNamespace(global_steps=25)))
    assert 3600 <= time.time() - callback._start < 3605 and callback._next == 30


def test_periodic_evaluation_acts_by_eval_policy(tmp_path, monkeypatch):
    """Evaluations during training follow ``eval.policy`` (DreamerV3 samples, DreamerV2 takes the mode)."""
    from types import SimpleNamespace

    from runner import periodic_eval

    modes = []

    def episode(agent, env, seed, mode, record):
        modes.append(mode)
        return 1.0, 1, []

    monkeypatch.setattr(periodic_eval, "run_episode", episode)
    monkeypatch.setattr(periodic_eval.registry, "build", lambda *args, **kwargs: SimpleNamespace(close=lambda: None))
    trainer = SimpleNamespace(is_global_zero=True, logger=None)
    module = SimpleNamespace(
        experience=SimpleNamespace(global_steps=0, frames=0, last_return=0.0),
        updates=0,
        training=True,
        eval=lambda: None,
        train=lambda flag: None,
    )
    for policy in ("sample", "mode"):
        callback = periodic_eval.PeriodicEval(
            {}, every=10, episodes=2, run_dir=tmp_path / policy, seed=0, policy=policy
        )
        module.experience.global_steps = 0
        callback.on_train_start(trainer, module)
        module.experience.global_steps = 10
        callback.on_train_batch_end(trainer, module, None, None, 0)
    assert modes == ["sample", "sample", "mode", "mode"]


def test_cost_estimate_says_what_the_run_costs_on_a_cpu_and_names_the_cpu_presets(caplog):
    from runner.progress import CostEstimate

    estimate = CostEstimate()
    with caplog.at_level("INFO", logger="runner.progress"):
        estimate.report(6.0, 3_000_000, "CPUAccelerator")  # 6 s x 3M updates = 5,000 h = 208 days
        estimate.report(0.5, 600, "CPUAccelerator")  # 300 s: 5.0 minutes, no advice
        estimate.report(6.0, 3_000_000, "CUDAAccelerator")  # a GPU run is not told
    long, short = caplog.records
    assert long.levelname == "WARNING" and "3,000,000 updates left will take about 208 days" in long.message
    assert "recipe=dreamerv2_cartpole" in long.message and "debug=smoke" in long.message
    assert short.levelname == "INFO" and short.message.endswith("600 updates left will take about 5.0 minutes")


# -- a refused command leaves the run as it was ------------------------------------------------------
def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file (content hash) and folder of a run."""
    return {str(p.relative_to(run_dir)): digest(p) if p.is_file() else "dir" for p in sorted(run_dir.rglob("*"))}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A smoke run with three step checkpoints, metrics and evaluation rows."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    done = run_py(*SMOKE, "train.steps=90", "train.checkpoint_every=30", "eval.every=40", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


REFUSED = {
    # as in issue 33 (there train.batch=-1): it cut csv/metrics.csv back to the older checkpoint, then refused
    "an older checkpoint and a bad value": (
        ["resume_from=step_000000000030.ckpt", "train.checkpoint_every=0"],
        "config error: train.checkpoint_every: must be >= 1, got 0",
    ),
    "a key that fixes the replay": (
        ["train.num_envs=2"],
        "config error: resume: train.num_envs cannot change when resuming (saved 1, asked 2): the replay stores",
    ),
    "a key that fixes the schedule": (["train.train_ratio=32"], "train.train_ratio cannot change when resuming"),
    "a key outside train and eval": (["model.opt.lr=1"], "only train.* and eval.* can change when resuming"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_resume_changes_no_file_of_the_run(finished_run, case):
    before = snapshot(finished_run)
    args, message = REFUSED[case]
    proc = run_py(f"resume={finished_run}", *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and snapshot(finished_run) == before


def test_a_refused_evaluation_changes_no_file_of_the_run(finished_run):
    before = snapshot(finished_run)
    proc = run_py(f"evaluate={finished_run}", "eval.episodes=0")
    assert proc.returncode == 1 and "config error: eval.episodes" in proc.stderr, proc.stderr[-2000:]
    assert snapshot(finished_run) == before


HOLD = """import sys, time
from runner.lock import hold
with hold(sys.argv[1], "train"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_run_in_use_is_refused_naming_its_process_and_a_killed_holder_leaves_no_lock(finished_run):
    """A second writer (a requeued job while the first still runs) is refused before it touches a file; a
    SIGKILLed holder's lock goes with its process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(finished_run)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(finished_run)
        proc = run_py(f"resume={finished_run}", "train.steps=200")
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert f"error: resume: {finished_run} is in use by process {holder.pid} (" in proc.stderr
        assert snapshot(finished_run) == before
    finally:
        holder.kill()
        holder.wait()
    from runner.lock import hold

    with hold(finished_run, "train") as path:  # not stuck: the kernel dropped the killed holder's lock
        assert path.read_text().startswith(f"{os.getpid()} (")


def test_a_second_evaluation_into_the_same_folder_is_refused(finished_run, tmp_path):
    out = tmp_path / "evaluation"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_py(f"evaluate={finished_run}", "eval.episodes=1", f"hydra.run.dir={out}")
        assert proc.returncode == 1 and f"error: evaluate: {out} is in use by process {holder.pid}" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
