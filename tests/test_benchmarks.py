"""The speed benchmarks run and print what they promise (their figures are recorded in BENCHMARKS.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a benchmark script's own check: a minute of training
def test_throughput_profile_prints_the_phases_and_the_flops_of_an_update():
    cmd = [
        sys.executable,
        "benchmarks/throughput.py",
        "--recipe",
        "dreamerv2_cartpole",
        "--sizes",
        "tiny",
        "--batch",
        "4",
        "--length",
        "8",
        "--updates",
        "3",
        "--warmup",
        "1",
        "--profile",
        "--flops",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    phases = {k: float(v) for k, v in re.findall(r"^([a-z_]+(?:\.[a-z]+)?)\s+([0-9.]+) ms", out.stdout, re.M)}
    assert set(phases) == {
        "world_model.forward",
        "world_model.backward",
        "world_model.optimizer",
        "imagine.forward",
        "actor.backward",
        "actor.optimizer",
        "critic.backward",
        "critic.optimizer",
        "replay.sample",
        "collect",
    }, out.stdout
    assert phases["world_model.forward"] > 0 and phases["imagine.forward"] > 0, out.stdout
    assert re.search(r"^tiny\s+[0-9.]+\s+[0-9.]+", out.stdout, re.M), out.stdout  # the throughput row
    flops = {k: float(v) for k, v in re.findall(r"^(update|ceiling)\s+([0-9.]+) ", out.stdout, re.M)}
    assert flops["update"] > 0 and flops["ceiling"] > 0, out.stdout
    assert re.search(r"^GRUCell\s+[0-9.]+ GFLOP", out.stdout, re.M), out.stdout  # the recurrent model is counted
