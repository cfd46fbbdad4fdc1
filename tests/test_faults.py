"""Crash-proof runs: full disks for every writer, wrong paths, resume fallbacks, logs that read as one run,
and a seeded fault-injection run killed at moments drawn from its own phases.

A full disk is made without root with a file size limit (RLIMIT_FSIZE, ``ulimit -f``): with SIGXFSZ
ignored, a write past it fails with EFBIG, which the run treats like ENOSPC.
"""

from __future__ import annotations

import csv
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
sys.path.insert(0, str(WORKER.parent))
from fault_worker import differences  # noqa: E402


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
PREFILL, PRETRAIN = 32, 2  # debug=smoke
EVERY, EVAL_EVERY, CAPACITY = 16, 8, 48  # agent steps between checkpoints and evaluations; replay rows
# One kill in each phase, in this order, before any random draw. Each is made to two copies of the run,
# A at an early moment and B at a later one, counted from the kill run's first checkpoint (prefill: from
# its start): both resume from that checkpoint, so they must stay bitwise equal whatever the kill cut
# short. B's moments stay before the next checkpoint (EVERY updates later, one update an agent step).
STAGES = [
    ("prefill", "replay 1", "prefill 30"),  # no checkpoint yet: the first row half written, or 29 rows stored
    ("update", "update 1", "update 12"),  # the first update after it, or 11 more updates, rows and log rows
    ("checkpoint", "checkpoint 1", "link 1"),  # the next one half written, or written but last.ckpt not moved
    ("replay", "replay 1", "replay 12"),  # the ring is full: B has overwritten 11 more of its stored rows
    ("eval", "eval 1", "eval 2"),  # the first evaluation after it, or the second: one evaluation row more
]
WALL_CLOCK = {"train/fps", "wall_s"}  # the only columns two equal runs may differ in


def draw(rng: random.Random) -> tuple[str, str, str]:
    """A kill after the fixed ones: a phase, and two moments of it between two checkpoints."""
    phase = rng.choice([stage[0] for stage in STAGES[1:]])
    if phase in ("update", "replay"):
        a, b = sorted(rng.sample(range(1, EVERY), 2))
        return phase, f"{phase} {a}", f"{phase} {b}"
    return next(stage for stage in STAGES if stage[0] == phase)  # two evaluations, one checkpoint write


def last_state(run_dir: Path) -> dict | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return load_checkpoint(last) if last.is_file() else None


def worker(moment: str, after: int, args: list[str], record: Path) -> subprocess.CompletedProcess:
    """A run killed at ``moment`` ("<phase> <n>") once it has written ``after`` checkpoints."""
    env = {**os.environ, "DK_FAULT_RECORD": str(record)}
    command = [sys.executable, str(WORKER), *moment.split(), str(after), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def log_rows(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows(path)]


def replay_files(run_dir: Path) -> dict:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "replay").rglob("*")) if p.is_file()}


def check_record(record: Path) -> int:
    """Every resume found the replay as its checkpoint had it, and restored all the checkpoint holds."""
    saved, restores = {}, 0
    for line in record.read_text().splitlines() if record.exists() else []:  # a kill before any checkpoint
        what, name, *rest = line.split()
        if what == "saved":
            saved[name] = rest[0]
        elif what == "loaded":
            assert saved.get(name) == rest[0], f"the replay at {name} rows written is not as its checkpoint left it"
        else:
            assert not rest, f"a resume from {name} did not restore {rest[:10]} ({len(rest)} keys)"
            restores += 1
    return restores


@pytest.mark.slow  # 12 starts of a smoke run (~3 min on a 2-core CPU); DK_FAULT_KILLS=20 for BENCHMARKS
def test_where_a_kill_lands_after_a_checkpoint_does_not_matter(tmp_path):
    kills, seed = int(os.environ.get("DK_FAULT_KILLS", len(STAGES))), int(os.environ.get("DK_FAULT_SEED", 0))
    assert kills >= len(STAGES), f"DK_FAULT_KILLS={kills}: the first {len(STAGES)} kills are one in each phase"
    rng = random.Random(seed)
    stages = STAGES + [draw(rng) for _ in range(kills - len(STAGES))]
    steps = PREFILL + EVERY * kills + 40  # each kill run passes one checkpoint; room for B's moments after the last
    overrides = [
        "recipe=dreamerv2_cartpole",
        "debug=smoke",
        "logger=csv",
        "replay.storage=disk",
        f"replay.capacity={CAPACITY}",  # below the run's length: the ring wraps, and a kill cuts across it
        "behavior.return_norm.name=percentile",  # a return normaliser with state to restore
        "train.log_every=1",
        f"train.steps={steps}",
        f"train.checkpoint_every={EVERY}",
        f"eval.every={EVAL_EVERY}",  # two evaluations between checkpoints
        "eval.during_episodes=1",
    ]
    runs = {name: tmp_path / name for name in "AB"}
    records = {name: tmp_path / f"{name}.record" for name in "AB"}
    hit, base = [], 0
    for k, (phase, *moments) in enumerate(stages):
        after = 0 if phase == "prefill" else 1
        for (name, run_dir), moment in zip(runs.items(), moments):
            args = [*overrides, f"hydra.run.dir={run_dir}"] if k == 0 else [f"resume={run_dir}"]
            proc = worker(moment, after, args, records[name])
            assert proc.returncode == -signal.SIGKILL, f"kill {k} ({moment} of {name}): {proc.stderr[-3000:]}"
            check_record(records[name])  # as it goes, so that a failure names the kill after which it came
        a, b = (last_state(run_dir) for run_dir in runs.values())
        if phase == "prefill":
            assert a is None and b is None
            continue
        # The checkpoint both were killed after, each written by a run resumed after the last kill's moments
        assert not differences(a, b), f"kill {k} ({phase}): {differences(a, b)[:10]}"
        stored = a["agent"]["ranks"][0]["experience"]
        assert stored["agent_steps"] > base, f"kill {k} ({phase}) came before the run's next checkpoint"
        base = stored["agent_steps"]
        if phase == "replay":
            assert stored["replay"]["steps"] == CAPACITY  # full: each row written after it overwrote a stored one
        hit.append(f"{' / '.join(moments)} after step {base}")

    before = last_state(runs["A"])["agent"]["ranks"][0]["updates"]
    updates = steps - PREFILL + PRETRAIN  # train_ratio 16 = batch 2 x length 8: one update per step
    for name, run_dir in runs.items():
        done = worker("none 0", 0, [f"resume={run_dir}"], records[name])
        assert done.returncode == 0, f"{name} after {hit}: {done.stderr[-3000:]}"
        assert f"0/{updates - before}" in done.stdout + done.stderr  # the progress bar counts the updates left
        assert not leftovers(run_dir)
        assert check_record(records[name]) == kills - 1  # every resume but the start over after the prefill

    # The two runs end equal: every tensor of the checkpoint (weights, the three optimizers' moments, slow
    # critic, return normaliser, RNG and replay states), counters, replay files and log rows.
    final = {name: last_state(run_dir) for name, run_dir in runs.items()}
    assert not differences(final["A"], final["B"]), differences(final["A"], final["B"])[:10]
    assert replay_files(runs["A"]) == replay_files(runs["B"])
    for log in loggers.CSV_LOGS:
        assert log_rows(runs["A"] / log) == log_rows(runs["B"] / log), log

    # ... and as one run: the counters of the whole run, every log row once and none missing
    rank, run_dir = final["A"]["agent"]["ranks"][0], runs["A"]
    assert rank["experience"]["agent_steps"] == steps and rank["updates"] == updates == rank["experience"]["updates"]
    metrics = rows(run_dir / "csv" / "metrics.csv")
    assert [int(float(r["train/updates"])) for r in metrics if r.get("train/updates")] == list(range(1, updates + 1))
    episodes = [int(r["step"]) for r in metrics if r.get("episode/return")]
    assert episodes == sorted(set(episodes))
    assert len(episodes) == rank["experience"]["episodes"] - len(final["A"]["logs"]["episodes"])
    evals = [int(r["agent_steps"]) for r in rows(run_dir / "eval" / "learning.csv")]
    assert evals[0] <= PREFILL + EVAL_EVERY and evals == list(range(evals[0], steps + 1, EVAL_EVERY)), evals
    assert [int(r["agent_steps"]) for r in rows(run_dir / "eval" / "episodes.csv")] == evals
    print(f"\n{kills} kills (seed {seed}), each to two runs that end equal: " + "; ".join(hit))
