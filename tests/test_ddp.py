"""Data-parallel training through Lightning DDP: two CPU processes (gloo) on the smoke recipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from registry import ConfigError
from runner.checkpoint import load_checkpoint
from runner.train import train

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = [
    "recipe=dreamerv2_cartpole",
    "debug=smoke",
    "logger=csv",
    "replay.storage=disk",
    "train.accelerator=cpu",
    "train.devices=2",
    "train.steps=160",
    "train.checkpoint_every=64",
]


def run_worker(run_dir: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(run_dir), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    run_worker(run_dir, *OVERRIDES)
    return run_dir


def test_two_ranks_keep_identical_parameters_on_distinct_experience(ddp_run):
    rank0, rank1 = (torch.load(ddp_run / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["updates"] == rank1["updates"] > 0
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), f"{name} differs between ranks"
    # Each rank draws its own noise: on one observation the same weights sample other latents and actions.
    assert rank0["probe"]["action"].shape == rank1["probe"]["action"].shape
    assert not torch.equal(rank0["probe"]["latent"]["stoch"], rank1["probe"]["latent"]["stoch"])
    # Each rank stepped its own environments: the stored random-then-policy actions differ.
    rows = min(len(rank0["actions"]), len(rank1["actions"]))  # a reset row is stored but is no agent step
    assert not torch.equal(rank0["actions"][:rows], rank1["actions"][:rows])


def test_global_step_counts_add_up_and_checkpoints_hold_every_rank(ddp_run):
    rank0, rank1 = (torch.load(ddp_run / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["agent_steps"] == rank1["agent_steps"] == 80  # train.steps=160 split over 2 ranks
    assert rank0["global_steps"] == rank0["agent_steps"] + rank1["agent_steps"]
    ranks = load_checkpoint(ddp_run / "checkpoints" / "last.ckpt")["agent"]["ranks"]
    assert [r["experience"]["agent_steps"] for r in ranks] == [80, 80]
    # every agent step and every reset observation stored: 80 plus one row per episode ended
    assert all(r["experience"]["replay"]["steps"] == 80 + r["experience"]["episodes"] for r in ranks)
    assert (ddp_run / "checkpoints" / "step_000000000160.ckpt").is_file()  # named by the global count


def test_resume_with_the_same_world_size_continues_every_shard(ddp_run):
    run_worker(ddp_run, "--resume", "train.steps=240")
    rank0, rank1 = (torch.load(ddp_run / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["agent_steps"] == rank1["agent_steps"] == 120  # continued from 80 each, not from 0
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), f"{name} differs between ranks after resuming"
    ranks = load_checkpoint(ddp_run / "checkpoints" / "last.ckpt")["agent"]["ranks"]
    # shards reopened, then extended
    assert all(r["experience"]["replay"]["steps"] == 120 + r["experience"]["episodes"] for r in ranks)


def test_resuming_with_another_world_size_is_refused(ddp_run):
    with pytest.raises(ConfigError, match=r"train.devices cannot change when resuming \(saved 2, asked 1\)"):
        train(OmegaConf.create({"resume": str(ddp_run)}), overrides=["train.devices=1", "train.steps=200"])


def test_sigterm_saves_every_rank_and_stops_the_run(tmp_path):
    """A cluster's preemption: SIGTERM to the launching rank saves a checkpoint holding both ranks,
    then every rank stops cleanly (no hang, no lost shard)."""
    run_dir = tmp_path / "run"
    overrides = [o for o in OVERRIDES if not o.startswith("train.steps")]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "ddp_worker.py"),
            str(run_dir),
            *overrides,
            "train.steps=1000000",
            "train.keep_checkpoints=100",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not list((run_dir / "checkpoints").glob("step_*.ckpt")):  # the first periodic save
            assert proc.poll() is None and time.time() < deadline, "the DDP run made no checkpoint"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the rank processes too
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saved a checkpoint" in err
    ranks = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["agent"]["ranks"]
    steps = [r["experience"]["agent_steps"] for r in ranks]
    assert len(ranks) == 2 and steps[0] == steps[1] > 32, steps  # beyond the prefill: it trained
    rank0 = torch.load(run_dir / "rank0.pt", weights_only=False)  # the worker finished its fit normally
    assert rank0["agent_steps"] == steps[0]
