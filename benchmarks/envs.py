"""Environment throughput: agent steps/s and frames/s of collection for 1, 2, 4, 8 parallel envs,
in one process (gymnasium SyncVectorEnv) and in worker processes (AsyncVectorEnv).

    python benchmarks/envs.py                                   # Atari Pong and DMC cartpole_balance
    python benchmarks/envs.py --envs atari --nums 1 2 --seconds 5

Random actions, the envs as the recipes configure them (Atari: 64x64 gray, repeat 4;
DMC: 64x64 RGB, repeat 2). No learning, so this is the ceiling that collection
puts on training speed. Prints a table with the hardware.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import hardware  # noqa: E402
from components.envs import make_vector_env  # noqa: E402
from runner.config import register_schema  # noqa: E402

RECIPES = {"atari": "dreamerv2_atari", "dmc": "dreamerv2_dmc"}


def env_config(name: str):
    """The env section of the recipe that trains on ``name``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"recipe={RECIPES[name]}"]).env


def steps_per_second(env_cfg, num_envs: int, asynchronous: bool, seconds: float) -> float:
    """Agent steps per second (all envs together) over ``seconds`` after one warm-up step."""
    envs = make_vector_env(env_cfg, num_envs, seed=0, asynchronous=asynchronous)
    try:
        envs.reset(seed=0)
        envs.step(envs.action_space.sample())
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            envs.step(envs.action_space.sample())
            n += num_envs
        return n / (time.perf_counter() - start)
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--nums", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    register_schema()
    print(f"# dreamerkit env throughput, random actions, {args.seconds:.0f} s per row")
    print(f"# hardware: {hardware()}")
    print(f"{'env':<7}{'envs':>5}{'mode':>7}{'agent steps/s':>15}{'frames/s':>10}")
    for name in args.envs:
        cfg = env_config(name)
        for num in args.nums:
            for asynchronous in (False, True):
                sps = steps_per_second(cfg, num, asynchronous, args.seconds)
                mode = "async" if asynchronous else "sync"
                print(f"{name:<7}{num:>5}{mode:>7}{sps:>15.0f}{sps * cfg.action_repeat:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
