"""Replay sampling time: milliseconds per ``[batch, length]`` sample from a full replay, as training draws it.

    python benchmarks/replay_sample.py                              # prioritize_ends, 1M steps
    python benchmarks/replay_sample.py --replay episodes uniform --steps 100000

Fills a memory replay with ``--steps`` single-env steps through ``Replay.add`` (episodes of
``--episode`` steps), then alternates ``--every`` more writes (each starting an episode, the
sampler's worst case) with one sample of ``--batch`` x ``--length``, and prints the median and
90th-percentile sample time with the hardware.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tensordict import TensorDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import registry  # noqa: E402
from benchmarks.throughput import hardware  # noqa: E402


def step(first: bool) -> TensorDict:
    """One single-env step with the flags the samplers read (an episode ends where the next one starts)."""
    flags = {"is_first": torch.tensor([first]), "is_last": torch.tensor([False]), "reward": torch.zeros(1)}
    return TensorDict(flags, batch_size=[1])


def measure(name: str, args: argparse.Namespace) -> tuple[float, float]:
    """Median and 90th-percentile milliseconds per sample of replay ``name``."""
    replay = registry.build(
        "replay", {"name": name, "capacity": args.steps}, path="replay", num_envs=1, length=args.length
    )
    first, other = step(True), step(False)
    for t in range(args.steps):
        replay.add(first if t % args.episode == 0 else other)
    replay.sample(args.batch)  # a new sampler's first sample may build what it keeps
    times = []
    for _ in range(args.samples):
        for _ in range(args.every):
            replay.add(first)
        start = time.perf_counter()
        replay.sample(args.batch)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay", nargs="+", default=["prioritize_ends"])
    parser.add_argument("--steps", type=int, default=1_000_000, help="stored steps (the replay is full)")
    parser.add_argument("--episode", type=int, default=1000, help="episode length while filling")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--every", type=int, default=5, help="writes between two samples")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    print(f"# hardware: {hardware()}")
    print(
        f"# {args.steps} stored steps, episodes of {args.episode}, batch {args.batch} x {args.length}, "
        f"a sample every {args.every} writes"
    )
    print(f"{'replay':<18}{'median ms':>10}{'p90 ms':>10}")
    for name in args.replay:
        median, p90 = measure(name, args)
        print(f"{name:<18}{median:>10.3f}{p90:>10.3f}")


if __name__ == "__main__":
    main()
