"""Training throughput of dreamerkit: gradient updates/s, imagined states/s, env steps/s, peak memory.

    python benchmarks/throughput.py                                  # CPU, sizes tiny small dmc, fp32
    python benchmarks/throughput.py --sizes dmc --precision bf16-mixed --updates 5
    python benchmarks/throughput.py --recipe dreamerv2_atari --sizes atari --accelerator gpu

Each row builds the real run (Hydra config, envs, replay, Lightning Trainer) with
batch x length and horizon as given (default 16 x 50, horizon 15, as the paper),
warms up, then times ``--updates`` updates through ``Trainer.fit``. Env steps/s
is measured separately with random actions. Prints a table with the hardware.
``--profile`` also runs the timed updates under ``torch.profiler`` and prints where
the time goes: the phases of an update (the ``record_function`` labels of
``recipes/dreamer.py`` and ``runner/experience.py``) and the top operators.
``--flops`` counts the matmul and convolution FLOPs of the last warm-up update
(``torch.utils.flop_counter``) and times a large matmul on this machine: their
quotient is the most updates/s any implementation of the same math could reach here.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.config import register_schema  # noqa: E402

PHASES = (
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
)


class UpdateTimer(Callback):
    """Times training steps after ``warmup`` of them (under ``profiler`` when one is given)."""

    def __init__(
        self, warmup: int, profiler: torch.profiler.profile | None = None, flops: FlopCounterMode | None = None
    ):
        self.warmup, self.times, self._start, self.profiler, self.flops = warmup, [], None, profiler, flops

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.profiler is not None and batch_idx == self.warmup:
            self.profiler.start()
        if self.flops is not None and batch_idx == self.warmup - 1:
            self.flops.__enter__()  # the last warm-up update: the counter slows what it counts
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        if self.profiler is not None:
            self.profiler.stop()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.flops is not None and batch_idx == self.warmup - 1:
            self.flops.__exit__(None, None, None)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._start)


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    versions = f"torch {torch.__version__}, python {platform.python_version()}"
    return f"{cpu}, {torch.get_num_threads()} threads, {gpu}; {versions}"


def measure(args, size: str, run_dir: Path) -> dict:
    from runner.train import build

    b, t = args.batch, args.length
    overrides = [
        f"recipe={args.recipe}",
        f"size={size}",
        "logger=none",
        "replay.storage=memory",
        "replay.capacity=20000",
        f"train.batch={b}",
        f"train.length={t}",
        f"behavior.horizon={args.horizon}",
        f"train.prefill={t}",
        "train.pretrain=0",
        f"train.train_ratio={b * t}",
        f"train.steps={t + args.warmup + args.updates}",
        f"train.precision={args.precision}",
        f"train.accelerator={args.accelerator}",
        f"run_dir={run_dir}",
        *args.override,
    ]
    if not any(o.startswith("replay=") for o in args.override):
        # windows from the first steps, one update per agent step from the start: the episode
        # samplers would first wait for a complete (DMC: 500-step) episode
        overrides.append("replay=uniform")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    module, experience, trainer = build(cfg)
    profiler = None
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities)
    flops = FlopCounterMode(display=False) if args.flops else None
    timer = UpdateTimer(args.warmup, profiler, flops)
    trainer.callbacks.append(timer)
    trainer.fit_loop.epoch_loop.max_steps = 3 * (args.warmup + args.updates)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=experience.batches(module.policy))
    per_update = sum(timer.times) / len(timer.times)
    envs = experience.make_envs()
    envs.reset(seed=0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3.0:
        envs.step(envs.action_space.sample())
        n += envs.num_envs
    env_sps = n / (time.perf_counter() - start)
    envs.close()
    experience.close()
    params = sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6
    if profiler is not None:
        print_profile(profiler, size, len(timer.times))
    if flops is not None:
        print_flops(flops, size, 1 / per_update, args.precision)
    return {
        "size": size,
        "params_M": params,
        "updates_s": 1 / per_update,
        "imagined_s": b * t * args.horizon / per_update,
        "env_steps_s": env_sps,
        "host_peak_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "device_peak_GB": torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0,
    }


def print_profile(profiler: torch.profiler.profile, size: str, updates: int) -> None:
    """Per-update time of each phase of an update, then the 15 operators with most self time."""
    events = profiler.key_averages()
    cuda = torch.cuda.is_available()
    # Per call: Lightning fetches each batch one step ahead, so the profiled window holds one
    # replay.sample fewer than updates. Each phase runs once per update (collect once per
    # agent step, which is once per update here). Host wall time: on CUDA, launch time.
    phases = {e.key: e.cpu_time_total / 1e6 / e.count for e in events if e.key in PHASES}
    whole = sum(phases.values())
    print(f"\n# where the time goes, size {size}: host time per call of each phase ({updates} profiled updates)")
    for name in PHASES:
        if name in phases:
            print(f"{name:<24}{1e3 * phases[name]:>10.2f} ms{100 * phases[name] / whole:>7.1f} %")
    print(events.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=15))


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """This machine's sustained rate on one large square matmul (GFLOP/s): a ceiling for any GEMM or conv."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def print_flops(counter: FlopCounterMode, size: str, updates_s: float, precision: str) -> None:
    """FLOPs of one update by module, the rate they ran at, and the updates/s ceiling of this machine."""
    counts = counter.get_flop_counts()
    total = counter.get_total_flops() / 1e9
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    peak = matmul_gflops(dtype)
    print(f"\n# arithmetic of one update, size {size} (matmuls and convolutions, forward and backward)")
    top = {name: sum(ops.values()) / 1e9 for name, ops in counts.items() if "." not in name and name != "Global"}
    for name, gflop in sorted(top.items(), key=lambda item: -item[1]):  # by module class: Head is every head
        print(f"{name:<24}{gflop:>10.1f} GFLOP")
    print(f"{'outside modules':<24}{total - sum(top.values()):>10.1f} GFLOP (functional calls, backward not hooked)")
    print(f"{'update':<24}{total:>10.1f} GFLOP")
    print(f"{'achieved':<24}{total * updates_s:>10.1f} GFLOP/s at {updates_s:.3f} updates/s")
    print(f"{'2048^2 matmul, ' + str(dtype).removeprefix('torch.'):<24}{peak:>10.1f} GFLOP/s")
    print(f"{'ceiling':<24}{peak / total:>10.3f} updates/s (every FLOP at the large-matmul rate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="dreamerv2_dmc")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "dmc"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--profile", action="store_true", help="print a profiler table of the timed updates")
    parser.add_argument(
        "--flops", action="store_true", help="count the FLOPs of an update and print this machine's updates/s ceiling"
    )
    parser.add_argument("override", nargs="*", help="extra Hydra overrides, e.g. env.task=walker_walk")
    args = parser.parse_args()
    if args.flops and args.warmup < 1:
        parser.error("--flops counts the last warm-up update: give --warmup 1 or more")
    register_schema()
    print(
        f"# dreamerkit throughput: {args.recipe}, batch {args.batch} x {args.length}, horizon {args.horizon}, "
        f"precision {args.precision}"
    )
    print(f"# hardware: {hardware()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            rows.append(measure(args, size, Path(tmp) / size))
    print(
        f"{'size':<8}{'params(M)':>10}{'updates/s':>11}{'s/update':>10}{'imagined/s':>12}{'env steps/s':>13}"
        f"{'host peak GB':>14}{'GPU peak GB':>13}"
    )
    for r in rows:
        print(
            f"{r['size']:<8}{r['params_M']:>10.2f}{r['updates_s']:>11.3f}{1 / r['updates_s']:>10.2f}"
            f"{r['imagined_s']:>12.0f}{r['env_steps_s']:>13.0f}{r['host_peak_GB']:>14.2f}{r['device_peak_GB']:>13.2f}"
        )


if __name__ == "__main__":
    main()
