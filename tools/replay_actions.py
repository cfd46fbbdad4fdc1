"""How far a continuous actor's actions sit from zero over training, read from the replay.

    dreamerkit-replay-actions runs/learn/v3_balance_proprio_r32_s0 runs/official_v3/balance_s0

For each run (a ``tools/learn.py`` run directory, or an official DreamerV3 logdir with
``replay/*.npz`` chunks) each env's stream of replayed actions is cut into blocks of ``--block``
agent steps (500: one DMC episode at action repeat 2), and per bin of ``--bin`` env steps it prints
the mean over blocks of |mean action in the block| and the block's summed reward. A policy whose
mean sits at one bound gives |mean action| near 1 (its samples are not clipped in the replay);
a centred one near 0. Blocks rather than episodes, because the official chunks do not flag every
episode start.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def dreamerkit_streams(run: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per env: the actions (first action dimension) and rewards in the replay, in time order."""
    meta = json.loads((run / "replay" / "meta.json").read_text())
    rows, envs = meta["is_first"]["shape"]

    def load(key: str, dtype) -> np.ndarray:
        return np.memmap(run / "replay" / f"{key}.memmap", dtype, "r").reshape(rows, envs, -1)[..., 0]

    action, reward = load("action", np.float32), load("reward", np.float32)
    used = int(np.flatnonzero((action != 0).any(1)).max()) + 1  # unwritten rows are zeros; sampled actions never are
    return [np.asarray(action[:used, e]) for e in range(envs)], [np.asarray(reward[:used, e]) for e in range(envs)]


def official_streams(logdir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per env worker: the official replay's chunks followed from first to last successor.

    A chunk file is ``<time>-<uuid>-<successor uuid>-<length>.npz``; one chunk may be saved more than
    once as it fills (successor all zeros until it is full), so the longest save of each is used.
    """
    chunks: dict[str, tuple[str, Path, int]] = {}
    for path in (logdir / "replay").glob("*.npz"):
        _, uuid, successor, length = path.stem.split("-")
        if uuid not in chunks or int(length) > chunks[uuid][2]:
            chunks[uuid] = (successor, path, int(length))
    successors = {s for s, _, _ in chunks.values()}
    actions, rewards = [], []
    for uuid in sorted(u for u in chunks if u not in successors):
        parts = []
        while uuid in chunks:
            successor, path, length = chunks[uuid]
            with np.load(path) as data:
                parts.append((data["action"][:length, 0], data["reward"][:length]))
            uuid = successor
        actions.append(np.concatenate([a for a, _ in parts]))
        rewards.append(np.concatenate([r for _, r in parts]))
    return actions, rewards


def blocks(actions: list[np.ndarray], rewards: list[np.ndarray], block: int, repeat: int) -> list[tuple]:
    """(env steps at the block's end, |mean action|, summed reward) for every whole block of every env."""
    envs = len(actions)
    out = []
    for action, reward in zip(actions, rewards):
        for start in range(0, len(action) - block + 1, block):
            end = start + block
            mean = float(np.abs(action[start:end].mean()))
            out.append((end * envs * repeat, mean, float(reward[start:end].sum())))
    return out


def table(rows: list[tuple], bin_size: int) -> list[str]:
    lines = [f"{'env steps':>14}{'blocks':>8}{'|mean action|':>15}{'block return':>14}"]
    for lo in range(0, max(r[0] for r in rows), bin_size):
        sel = [r for r in rows if lo < r[0] <= lo + bin_size]
        if sel:
            lines.append(
                f"{f'{lo // 1000}-{(lo + bin_size) // 1000}k':>14}{len(sel):>8}"
                f"{np.mean([r[1] for r in sel]):>15.2f}{np.mean([r[2] for r in sel]):>14.1f}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="learn.py run dirs or official DreamerV3 logdirs")
    parser.add_argument("--block", type=int, default=500, help="agent steps per block")
    parser.add_argument("--repeat", type=int, default=2, help="action repeat: env steps per agent step")
    parser.add_argument("--bin", type=int, default=10000, help="env steps per printed row")
    args = parser.parse_args()
    for run in args.runs:
        if (run / "replay" / "meta.json").exists():
            streams = dreamerkit_streams(run)
        elif any((run / "replay").glob("*.npz")):
            streams = official_streams(run)
        else:
            parser.error(f"{run}: neither a learn.py run (replay/meta.json) nor an official logdir (replay/*.npz)")
        print(run)
        print("\n".join(table(blocks(*streams, args.block, args.repeat), args.bin)))


if __name__ == "__main__":
    main()
