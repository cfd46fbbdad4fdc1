"""Crash-proof runs: full disks for every writer, wrong paths, resume fallbacks, logs that read as one run,
and a seeded fault-injection run killed at moments drawn from its own phases.

A full disk is made without root with a file size limit (RLIMIT_FSIZE, ``ulimit -f``): with SIGXFSZ
ignored, a write past it fails with EFBIG, which the run treats like ENOSPC.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import logging
import os
import random
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

import registry
from components.diskspace import NoSpace, no_space, size
from registry import ConfigError
from runner import loggers
from runner.checkpoint import AtomicCheckpointIO, Checkpointer, CheckpointError, load_checkpoint, resume_checkpoint
from runner.preflight import check_run_dir_args, cpu_cores, warn_devices

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "fault_worker.py"


@contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG in this process, as on a full disk."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def limited(limit: int):
    """preexec_fn of a subprocess that runs under a file size limit."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def leftovers(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.tmp"))


# -- a full disk, writer by writer ------------------------------------------------------------------
def test_torch_save_on_a_full_disk_is_recognised(tmp_path):
    """torch.save raises RuntimeError('... unexpected pos'); the EFBIG is only in its context."""
    with file_size_limit(50_000), open(tmp_path / "x", "wb") as f, pytest.raises(RuntimeError) as err:
        torch.save(torch.zeros(100_000), f)
    assert "unexpected pos" in str(err.value) and no_space(err.value)
    assert not no_space(RuntimeError("unexpected pos")) and not no_space(OSError(2, "No such file"))


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "step.ckpt"
    io.save_checkpoint({"weights": torch.ones(10)}, path)
    before = path.read_bytes()
    state = {"weights": torch.zeros(500_000), "step": 3}  # 2,000,000 bytes of float32 + one plain value (64)
    with file_size_limit(200_000), pytest.raises(NoSpace) as err:
        io.save_checkpoint(state, path)
    assert str(err.value) == (
        f"could not write checkpoint {path}: no space left on device (needs ~2.0 MB, 200 KB free); "
        "the previous checkpoints are kept"
    )
    assert path.read_bytes() == before and not leftovers(tmp_path)


def test_disk_replay_reserves_its_capacity_or_fails_at_start(tmp_path, caplog):
    step = TensorDict(
        {"vector": torch.ones(2, 4), "is_first": torch.ones(2, dtype=torch.bool)}, batch_size=[2]
    )  # 2 envs x (16 + 1) bytes = 34 bytes a row
    cfg = {"name": "uniform", "capacity": 2000, "storage": "disk"}  # 1000 rows: 34,000 bytes
    small = registry.build("replay", cfg, num_envs=2, length=4, directory=str(tmp_path / "a"))
    with file_size_limit(20_000), pytest.raises(NoSpace) as err:
        small.add(step)
    assert str(err.value) == (
        f"could not write replay {tmp_path / 'a'}: no space left on device (needs ~34 KB, 20 KB free); "
        "lower replay.capacity or free some space"
    )
    replay = registry.build("replay", cfg, num_envs=2, length=4, directory=str(tmp_path / "b"))
    with caplog.at_level(logging.INFO, logger="components.replay_buffer"):
        replay.add(step)
    assert f"replay: reserved 34 KB in {tmp_path / 'b'} for 1000 rows (replay.capacity)" in caplog.messages
    vector = tmp_path / "b" / "vector.memmap"  # 1000 x 2 x 4 float32
    assert vector.stat().st_size == 32_000 and vector.stat().st_blocks * 512 >= 32_000  # reserved, not sparse


def test_csv_log_on_a_full_disk_names_the_file(tmp_path):
    logger = loggers.CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    logger.log_metrics({"model/loss": 1.0}, step=0)
    with file_size_limit(os.path.getsize(tmp_path / "csv" / "metrics.csv") + 100), pytest.raises(NoSpace) as err:
        for i in range(1, 100):
            logger.log_metrics({"model/loss": float(i)}, step=i)
    assert f"could not write log {tmp_path / 'csv' / 'metrics.csv'}: no space left on device" in str(err.value)


def test_tensorboard_log_on_a_full_disk_names_the_directory(tmp_path):
    logger = loggers.TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    with file_size_limit(os.path.getsize(next((tmp_path / "tb").glob("events.*")))), pytest.raises(NoSpace) as err:
        for i in range(1, 2000):
            logger.log_metrics({"a": float(i)}, step=i)
        logger.save()  # TensorBoard's writer thread reports the error at the next write or flush
    assert f"could not write log {tmp_path / 'tb'}: no space left on device" in str(err.value)
    logger.finalize("failed")  # after a failed run it adds no second error


def test_gif_on_a_full_disk_leaves_no_partial_file(tmp_path):
    from runner.evaluate import write_gif

    frames = [np.random.default_rng(i).integers(0, 255, (64, 64), np.uint8) for i in range(20)]
    path = tmp_path / "episode_0.gif"
    with file_size_limit(10_000), pytest.raises(NoSpace) as err:
        write_gif(path, frames)
    assert str(err.value).startswith(f"could not write video {path}: no space left on device (needs ~82 KB,")
    assert not path.exists()


def test_config_on_a_full_disk_keeps_the_old_one(tmp_path):
    from runner.train import save_run_info

    (tmp_path / "config.yaml").write_text("old: 1\n")
    cfg = OmegaConf.create({"note": "x" * 5000})
    with file_size_limit(1000), pytest.raises(NoSpace, match=f"could not write config {tmp_path / 'config.yaml'}"):
        save_run_info(cfg, tmp_path)
    assert (tmp_path / "config.yaml").read_text() == "old: 1\n" and not leftovers(tmp_path)


def test_a_run_on_a_full_disk_ends_with_one_line(tmp_path):
    """The checkpoint does not fit (the replay, config and logs do): one line, no temp file, no retry."""
    run_dir = tmp_path / "run"
    args = ["recipe=dreamerv2_cartpole", "debug=smoke", "logger=csv", "replay.storage=disk", "replay.capacity=512"]
    proc = subprocess.run(
        [sys.executable, "run.py", *args, "train.checkpoint_every=1", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited(100_000),
    )
    checkpoint = run_dir / "checkpoints" / "step_000000000033.ckpt"
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not write checkpoint {checkpoint}: no space left on device (needs ~")
    assert last.endswith("100 KB free); the previous checkpoints are kept")
    assert "Traceback" not in proc.stderr and proc.stderr.count("could not write") == 1
    assert not leftovers(run_dir) and not checkpoint.exists()


def test_sizes_read_as_people_write_them():
    assert (size(999), size(34_000), size(2_000_000), size(3.4e9)) == ("1 KB", "34 KB", "2.0 MB", "3.4 GB")


# -- wrong paths, resume fallbacks, signals, devices -----------------------------------------------
def test_a_wrong_resume_or_evaluate_path_creates_nothing(tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"evaluate: {empty} is not a run directory"):
        check_run_dir_args(["recipe=dreamerv2_cartpole", f"evaluate={empty}"])
    check_run_dir_args(["resume=null", "seed=1"])  # nothing to check
    missing = tmp_path / "nonexistent"
    proc = subprocess.run(
        [sys.executable, "run.py", f"+resume={missing}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert (
        proc.returncode == 1
        and proc.stderr.strip() == f"config error: resume: {missing} is not a run directory (no config.yaml)"
    )
    assert not missing.exists() and not any(empty.iterdir())


def fake_checkpoint(path: Path, steps: int) -> None:
    torch.save({"steps": steps}, path)


def test_resume_takes_the_newest_checkpoint_that_loads(tmp_path, caplog):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    assert resume_checkpoint(tmp_path) is None  # a run killed before its first checkpoint starts over
    for steps in (10, 20, 30):
        fake_checkpoint(directory / f"step_{steps:012d}.ckpt", steps)
    (directory / "step_000000000030.ckpt").write_bytes(b"truncated")
    (directory / "step_000000000040.ckpt.tmp").write_bytes(b"cut short")
    with caplog.at_level(logging.WARNING):
        path, state = resume_checkpoint(tmp_path)  # no last.ckpt, the newest step file corrupt
    assert path.name == "step_000000000020.ckpt" and state["steps"] == 20
    assert "step_000000000030.ckpt is corrupt or truncated" in caplog.text
    assert "resuming from step_000000000020.ckpt, the newest that loads" in caplog.text
    assert not leftovers(tmp_path)  # the stale temp file is gone
    os.link(directory / "step_000000000020.ckpt", directory / "last.ckpt")
    assert resume_checkpoint(tmp_path)[0].name == "last.ckpt"
    path, state = resume_checkpoint(tmp_path, "step_000000000010.ckpt")  # resume_from= picks an older one
    assert state["steps"] == 10
    for path in directory.iterdir():
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint of the run loads"):
        resume_checkpoint(tmp_path)


def test_sigint_stops_like_sigterm_and_a_second_one_interrupts():
    checkpointer = Checkpointer("unused", every_steps=10, every_minutes=60, keep=1)
    checkpointer._on_signal(signal.SIGINT, None)
    assert checkpointer._signal == signal.SIGINT  # noted: the run stops after the update and saves
    with pytest.raises(KeyboardInterrupt):
        checkpointer._on_signal(signal.SIGINT, None)


def test_more_cpu_ranks_than_cores_warn(caplog):
    with caplog.at_level(logging.WARNING):
        warn_devices("cpu", 1)
        warn_devices("cpu", cpu_cores())
        assert not caplog.text
        warn_devices("cpu", cpu_cores() + 1)
    assert f"train.devices={cpu_cores() + 1} starts {cpu_cores() + 1} processes on {cpu_cores()} CPU cores" in (
        caplog.text
    )


# -- logs that read as one run ----------------------------------------------------------------------
def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_rows_are_written_one_by_one_and_rewound_to_a_checkpoint(tmp_path):
    logger = loggers.CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    for i in range(3):
        logger.log_metrics({"model/loss": float(i)}, step=2 * i)
    metrics = tmp_path / "csv" / "metrics.csv"
    assert [r["model/loss"] for r in rows(metrics)] == ["0.0", "1.0", "2.0"]  # on disk at once
    marks = loggers.log_marks(tmp_path, step=4)
    assert marks == {"step": 4, "rows": {"csv/metrics.csv": 3}}
    logger.log_metrics({"episode/return": 9.0}, step=6)  # a new column rewrites the file
    logger.log_metrics({"model/loss": 3.0}, step=8)
    cfg = OmegaConf.create({"run_dir": str(tmp_path), "logger": {"_target_": "runner.loggers.TensorBoardLogger"}})
    loggers.rewind(cfg, marks)
    assert [r["step"] for r in rows(metrics)] == ["0", "2", "4"] and not leftovers(tmp_path)
    assert cfg.logger.purge_step == 5  # TensorBoard drops what was logged after the checkpoint's step
    loggers.rewind(cfg, {})  # a run that saved no checkpoint: its logs start over
    assert rows(metrics) == [] and cfg.logger.purge_step == 0


def test_tensorboard_purges_the_steps_after_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = loggers.TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="")
    for step in range(10):
        first.log_metrics({"loss": float(step)}, step=step)
    first.finalize("success")  # a crash after step 9; the checkpoint was at step 5
    resumed = loggers.TensorBoardLogger(save_dir=str(tmp_path), name="tb", version="", purge_step=6)
    for step in range(6, 12):
        resumed.log_metrics({"loss": 100.0 + step}, step=step)
    resumed.finalize("success")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = [(e.step, e.value) for e in events.Scalars("loss")]
    assert scalars == [(s, float(s)) for s in range(6)] + [(s, 100.0 + s) for s in range(6, 12)]


def test_progress_bar_of_a_resume_counts_the_updates_left():
    from runner.progress import ProgressBar

    bar = ProgressBar()
    module = SimpleNamespace(experience=SimpleNamespace(total_updates=300), updates=120)
    bar._trainer = SimpleNamespace(lightning_module=module, is_global_zero=True)
    bar.get_metrics = lambda trainer, pl_module: {}
    bar.on_train_start(bar._trainer, module)
    assert bar.train_progress_bar.total == 180
    module.updates = 121  # Lightning's restored batch index would say 101 here
    bar.on_train_batch_end(bar._trainer, module, None, None, batch_idx=101)
    assert bar.train_progress_bar.n == 1


# -- fault injection --------------------------------------------------------------------------------
PHASES = {"prefill": (1, 30), "update": (1, 20), "checkpoint": (1, 2), "replay": (1, 20), "eval": (1, 8)}
PREFILL, PRETRAIN = 32, 2  # debug=smoke


def replay_rows_hash(replay_dir: Path, rows: int, capacity: int) -> str:
    """sha256 of the first ``rows`` rows of every memory-mapped replay file."""
    digest = hashlib.sha256()
    for path in sorted(replay_dir.glob("*.memmap")):
        data = path.read_bytes()
        digest.update(data[: len(data) // capacity * rows])
    return digest.hexdigest()


def last_state(run_dir: Path) -> dict | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return load_checkpoint(last) if last.is_file() else None


@pytest.mark.slow  # ~6 starts of a smoke run (2-5 min on a 2-core CPU); DK_FAULT_KILLS=20 for BENCHMARKS
def test_a_run_killed_at_random_moments_resumes_as_one_run(tmp_path):
    kills, seed = int(os.environ.get("DK_FAULT_KILLS", 5)), int(os.environ.get("DK_FAULT_SEED", 0))
    rng, run_dir = random.Random(seed), tmp_path / "run"
    steps, capacity = PREFILL + 25 * kills + 30, 4096
    overrides = [
        "recipe=dreamerv2_cartpole",
        "debug=smoke",
        "logger=csv",
        "replay.storage=disk",
        f"replay.capacity={capacity}",
        "train.log_every=1",
        f"train.steps={steps}",
        "train.checkpoint_every=8",
        "eval.every=16",
        "eval.during_episodes=1",
        f"hydra.run.dir={run_dir}",
    ]
    hashes, survived = [], []
    for k in range(kills):
        state = last_state(run_dir)
        phases = [p for p in PHASES if p != "prefill" or state is None]  # prefill only before a checkpoint
        phase = rng.choice(phases)
        n = rng.randint(*PHASES[phase])
        args = overrides if k == 0 else [f"resume={run_dir}"]
        proc = subprocess.run(
            [sys.executable, str(WORKER), phase, str(n), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == -signal.SIGKILL, f"kill {k} ({phase} {n}): {proc.stderr[-3000:]}"
        survived.append(f"{phase} {n}")
        state = last_state(run_dir)
        if state is not None:  # what the next resume starts from must stay as it is
            stored = state["agent"]["ranks"][0]["experience"]["replay"]["steps"]
            hashes.append((stored, replay_rows_hash(run_dir / "replay", stored, capacity)))
    before = last_state(run_dir)["agent"]["ranks"][0]["updates"]
    done = subprocess.run(
        [sys.executable, str(WORKER), "none", "0", f"resume={run_dir}"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, f"after {survived}: {done.stderr[-3000:]}"
    updates = steps - PREFILL + PRETRAIN  # train_ratio 16 = batch 2 x length 8: one update per step
    assert f"0/{updates - before}" in done.stdout + done.stderr  # the progress bar counts the updates left

    final = last_state(run_dir)
    rank = final["agent"]["ranks"][0]
    assert rank["experience"]["agent_steps"] == steps and rank["updates"] == updates == rank["experience"]["updates"]
    for stored, digest in hashes:
        assert replay_rows_hash(run_dir / "replay", stored, capacity) == digest
    metrics = rows(run_dir / "csv" / "metrics.csv")
    assert [int(float(r["train/updates"])) for r in metrics if r.get("train/updates")] == list(range(1, updates + 1))
    episodes = [int(r["step"]) for r in metrics if r.get("episode/return")]
    assert episodes == sorted(set(episodes))
    assert len(episodes) == rank["experience"]["episodes"] - len(final["logs"]["episodes"])
    evals = [int(r["agent_steps"]) for r in rows(run_dir / "eval" / "learning.csv")]
    assert evals and evals == sorted(set(evals))
    assert not leftovers(run_dir), survived
    phases = collections.Counter(entry.split()[0] for entry in survived)
    print(f"\nsurvived {len(survived)} kills (seed {seed}): {dict(sorted(phases.items()))}")
