"""DreamerV2 training speed of SheepRL 0.8.4 beside dreamerkit's, at the same network sizes, in one run.

    python benchmarks/sheeprl_compare.py --size dmc --updates 5           # the paper's DMC sizes
    python benchmarks/sheeprl_compare.py --size small --updates 5
    python benchmarks/sheeprl_compare.py --size small --precision bf16-mixed
    python benchmarks/sheeprl_compare.py --size dmc --precision bf16-mixed --sheeprl-precision 32-true
    OMP_NUM_THREADS=1 python benchmarks/sheeprl_compare.py --size tiny --updates 2 --warmup 1   # smoke check

Both sides train DreamerV2 on DMC cartpole_balance from 64x64 RGB pixels (camera 0, action
repeat 2, 1000 env steps per episode), batch 16 x 50, imagination horizon 15, on the CPU, with
``--threads`` torch threads (default: ``$OMP_NUM_THREADS``, else the usable cores), fp32 or
``--precision bf16-mixed`` (SheepRL too, unless ``--sheeprl-precision`` says otherwise: each at its
fastest setting, or dreamerkit's bf16 beside SheepRL's default fp32). Each side fills its replay
with 50 random agent steps, then does one update per agent step; ``--warmup`` updates are run
untimed, then ``--updates`` are timed. One update is the world model, actor and critic losses,
backward passes and optimizer steps.

SheepRL runs in its own virtual environment (``--venv``, default ``runs/sheeprl-venv``), created
with ``python -m venv`` on the first run and reused after; dreamerkit never imports it. It holds
``torch==2.13.0`` (the CPU wheel), ``sheeprl[dmc]==0.8.4`` and ``mujoco==3.17.0``. The mujoco pin
is needed: dm_control 1.0.50 (which sheeprl[dmc] resolves to) asks for ``mujoco>=3.17.0``, so pip
takes mujoco 4.0.0, with which dm_control fails to load any task (``'MjModel' object has no
attribute 'flex_vertedge'``); 3.17.0 is the version dreamerkit's environment uses. Everything else
resolves as it is (on 2026-11-22: gymnasium 1.4.0, lightning 2.6.6, hydra-core 1.3.8, numpy 2.4.6,
dm_control 1.0.50, the same as dreamerkit's).

SheepRL is driven through its own command line (``sheeprl.cli.run``, ``exp=dreamer_v2 env=dmc``)
by this file run with the venv's Python (``--worker``), which wraps SheepRL's update function
(``sheeprl.algos.dreamer_v2.dreamer_v2.train``) in a wall clock, as ``throughput.py`` wraps
dreamerkit's training step: updates/s is 1 / the mean time of the timed updates. SheepRL's own
TensorBoard ``Time/sps_train`` is not used: its timer also encloses the replay sampling (the batches
are sampled lazily inside the timed loop) and the first, slower updates, averaged over a whole log
interval. dreamerkit's side is ``benchmarks/throughput.py`` run as a subprocess with the same size,
updates, warm-up, precision and threads.

Sizes (``--size`` reads ``conf/size/<size>.yaml``) map onto SheepRL's keys as: deter ->
``algo.world_model.recurrent_model.recurrent_state_size``; hidden -> ``transition_model.hidden_size``
and ``representation_model.hidden_size`` (the layer before the GRU follows the former); stoch x
classes -> ``stochastic_size`` x ``discrete_size``; cnn_depth -> ``encoder.cnn_channels_multiplier``
(the decoder follows); mlp_layers x mlp_units -> ``algo.mlp_layers`` x ``algo.dense_units`` (reward,
actor and critic MLPs). The layers then match one for one: conv encoder depth x (1, 2, 4, 8) with
kernels 4; a linear layer to 32 x depth channels at 1x1, then transposed convs (4, 2, 1) x depth and
3 with kernels 5, 5, 6, 6; no discount head; truncated-normal actor; dynamics-backprop actor
gradient; KL balancing 0.8 with free nats 1. What differs:

- Layer norm: dreamerkit, as the official DreamerV2, normalises only inside the GRU (eps 1e-3) and
  keeps a bias in every linear layer. SheepRL's GRU is always normalised (eps 1e-3) and
  ``algo.layer_norm=False`` removes its other layer norms, which gives the same layers. (Before
  issue 17 both sides normalised every MLP layer: ``algo.layer_norm=True``.)
- SheepRL casts the sampled uint8 frames to float before its update; dreamerkit does it inside.
- SheepRL's metric aggregation stays on (``metric.log_level=1``, as in a normal run: its update then
  also computes the latents' entropies); it logs once, at the end, after the timed updates.
- ``float32_matmul_precision=highest`` (PyTorch's default, which dreamerkit keeps; SheepRL's default
  is ``high``), so fp32 is fp32 on both sides.

The table gives both speeds and dreamerkit / SheepRL (above 1: dreamerkit is faster), with the
hardware, versions and commit. Runs one size after the other, never the two sides at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ["torch==2.13.0", "sheeprl[dmc]==0.8.4", "mujoco==3.17.0"]
RESULT = "SHEEPRL_COMPARE_RESULT "
PREFILL = 50  # random agent steps before training: one sequence, as throughput.py's train.prefill
BATCH, LENGTH, HORIZON = 16, 50, 15
_CHECK_PINS = (
    "import sys, importlib.metadata as m\n"
    "for pin in sys.argv[1:]:\n"
    "    name, version = pin.split('==')\n"
    "    assert m.version(name.split('[')[0]).split('+')[0] == version, pin\n"
)


def ensure_venv(venv: Path) -> Path:
    """The Python of ``venv``, created with ``python -m venv`` and given ``PINS`` unless it has them."""
    python = venv.absolute() / "bin" / "python"  # not resolved: the venv's python is a link to the base one
    if not python.exists():
        print(f"# creating {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if subprocess.run([str(python), "-c", _CHECK_PINS, *PINS], capture_output=True).returncode != 0:
        print(f"# installing {' '.join(PINS)} into {venv}", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], check=True)
    return python


def sheeprl_overrides(size: dict, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """SheepRL's command-line overrides for ``size`` (a conf/size preset) and the timed schedule."""
    wm = "algo.world_model"
    return [
        "exp=dreamer_v2",
        "env=dmc",
        "env.wrapper.domain_name=cartpole",
        "env.wrapper.task_name=balance",
        "env.wrapper.from_pixels=True",
        "env.wrapper.from_vectors=False",
        "env.action_repeat=2",
        "env.max_episode_steps=500",
        "env.num_envs=1",
        "env.sync_env=True",
        "env.capture_video=False",
        "algo.cnn_keys.encoder=[rgb]",
        "algo.mlp_keys.encoder=[]",
        f"algo.per_rank_batch_size={BATCH}",
        f"algo.per_rank_sequence_length={LENGTH}",
        f"algo.horizon={HORIZON}",
        # PREFILL random steps, then one update per agent step: exactly warmup + updates of them
        f"algo.learning_starts={PREFILL}",
        "algo.per_rank_pretrain_steps=0",
        "algo.replay_ratio=1",
        f"algo.total_steps={PREFILL + args.warmup + args.updates - 1}",
        "algo.run_test=False",
        f"{wm}.recurrent_model.recurrent_state_size={size['deter']}",
        f"{wm}.transition_model.hidden_size={size['hidden']}",
        f"{wm}.representation_model.hidden_size={size['hidden']}",
        f"{wm}.stochastic_size={size['stoch']}",
        f"{wm}.discrete_size={size['classes']}",
        f"{wm}.encoder.cnn_channels_multiplier={size['cnn_depth']}",
        f"algo.mlp_layers={size['mlp_layers']}",
        f"algo.dense_units={size['mlp_units']}",
        "algo.layer_norm=False",
        f"{wm}.encoder.layer_norm=False",
        f"{wm}.observation_model.layer_norm=False",
        "buffer.size=20000",
        "buffer.memmap=False",
        "buffer.checkpoint=False",
        "checkpoint.every=0",
        "checkpoint.save_last=False",
        "model_manager.disabled=True",
        "metric.log_every=1000000000",
        "fabric.accelerator=cpu",
        "fabric.devices=1",
        f"fabric.precision={args.sheeprl_precision}",
        f"num_threads={args.threads}",
        "float32_matmul_precision=highest",
        "seed=0",
        "run_name=bench",
        f"log_root={run_dir / 'logs'}",
        f"hydra.run.dir={run_dir / 'hydra'}",
    ]


def sheeprl_worker(spec: dict) -> None:
    """(In the SheepRL venv.) Runs SheepRL's command line with ``spec['overrides']``, timing every update."""
    import importlib.metadata

    import torch

    torch.set_num_threads(spec["threads"])
    import sheeprl.algos.dreamer_v2.dreamer_v2 as dreamer_v2
    from sheeprl.cli import run

    update, times, seen = dreamer_v2.train, [], {}

    def timed_update(*args, **kwargs):
        """SheepRL's update, timed; notes the trained parameters and the threads on its first call."""
        if not seen:
            modules = args[1:4]  # world model, actor, critic
            seen["params"] = sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
            seen["threads"] = torch.get_num_threads()
        start = time.perf_counter()
        update(*args, **kwargs)
        times.append(time.perf_counter() - start)

    dreamer_v2.train = timed_update
    sys.argv = ["sheeprl", *spec["overrides"]]
    run()
    expected = spec["warmup"] + spec["updates"]
    if len(times) != expected:
        raise SystemExit(f"SheepRL ran {len(times)} updates, expected {expected}")
    timed = times[spec["warmup"] :]
    print(
        RESULT
        + json.dumps(
            {
                "updates_s": len(timed) / sum(timed),
                "params_M": seen["params"] / 1e6,
                "threads": seen["threads"],
                "torch": torch.__version__,
                "sheeprl": importlib.metadata.version("sheeprl"),
                "lightning": importlib.metadata.version("lightning"),
            }
        ),
        flush=True,
    )


def run_logged(cmd: list[str], env: dict, cwd: Path, what: str) -> str:
    """Runs ``cmd`` and returns its stdout; on failure prints the tail of its output and exits."""
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-40:])
        raise SystemExit(f"{what} failed (exit {out.returncode}):\n{tail}")
    return out.stdout


def measure_sheeprl(python: Path, size: str, args: argparse.Namespace, env: dict) -> dict:
    """SheepRL's updates/s at ``size`` (see ``sheeprl_worker``)."""
    import yaml

    preset = yaml.safe_load((ROOT / "conf" / "size" / f"{size}.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "overrides": sheeprl_overrides(preset, args, Path(tmp)),
            "threads": args.threads,
            "warmup": args.warmup,
            "updates": args.updates,
        }
        stdout = run_logged([str(python), __file__, "--worker", json.dumps(spec)], env, Path(tmp), f"SheepRL {size}")
    return json.loads(next(line for line in stdout.splitlines() if line.startswith(RESULT))[len(RESULT) :])


def measure_dreamerkit(size: str, args: argparse.Namespace, env: dict) -> dict:
    """dreamerkit's updates/s at ``size``, from ``benchmarks/throughput.py``'s table."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "throughput.py"),
        "--recipe",
        "dreamerv2_dmc",
        "--sizes",
        size,
        "--batch",
        str(BATCH),
        "--length",
        str(LENGTH),
        "--horizon",
        str(HORIZON),
        "--updates",
        str(args.updates),
        "--warmup",
        str(args.warmup),
        "--precision",
        args.precision,
        "--accelerator",
        "cpu",
    ]
    lines = run_logged(cmd, env, ROOT, f"dreamerkit {size}").splitlines()
    hardware = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# hardware:"))
    row = next(line.split() for line in lines if line.split()[:1] == [size])
    return {"updates_s": float(row[2]), "params_M": float(row[1]), "hardware": hardware}


def main() -> None:
    """Measures SheepRL, then dreamerkit, at every ``--size`` and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", nargs="+", default=["small"], choices=["tiny", "small", "dmc"])
    parser.add_argument("--updates", type=int, default=5, help="timed updates on each side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates before them")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--sheeprl-precision",
        choices=["32-true", "bf16-mixed"],
        help="SheepRL's precision when it differs from dreamerkit's (default: --precision)",
    )
    threads = int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        help="torch threads on both sides (default: $OMP_NUM_THREADS, else the usable cores)",
    )
    parser.add_argument("--venv", type=Path, default=ROOT / "runs" / "sheeprl-venv")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return sheeprl_worker(json.loads(args.worker))
    args.sheeprl_precision = args.sheeprl_precision or args.precision

    sys.path.insert(0, str(ROOT))
    from components.envs.dmc import select_gl_backend

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MUJOCO_GL": select_gl_backend()}
    python = ensure_venv(args.venv)
    rows = []
    for size in args.size:
        print(f"# {size}: SheepRL ...", flush=True)
        theirs = measure_sheeprl(python, size, args, env)
        print(f"# {size}: dreamerkit ...", flush=True)
        ours = measure_dreamerkit(size, args, env)
        rows.append((size, theirs, ours))

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    theirs = rows[0][1]
    print(
        f"# DreamerV2, DMC cartpole_balance 64x64 RGB, batch {BATCH} x {LENGTH}, horizon {HORIZON}, "
        f"{args.updates} timed updates after {args.warmup} warm-up, "
        f"precision: SheepRL {args.sheeprl_precision}, dreamerkit {args.precision}"
    )
    print(f"# hardware: {rows[0][2]['hardware']}")
    print(
        f"# dreamerkit {commit.strip() or '?'}; SheepRL {theirs['sheeprl']} in {args.venv} "
        f"(torch {theirs['torch']}, lightning {theirs['lightning']}, {theirs['threads']} threads)"
    )
    print(
        f"{'size':<7}{'sheeprl prec':>13}{'dreamerkit prec':>16}{'sheeprl params(M)':>19}{'dreamerkit params(M)':>22}"
        f"{'sheeprl updates/s':>19}{'dreamerkit updates/s':>22}{'dreamerkit/sheeprl':>20}"
    )
    for size, theirs, ours in rows:
        print(
            f"{size:<7}{args.sheeprl_precision:>13}{args.precision:>16}{theirs['params_M']:>19.2f}{ours['params_M']:>22.2f}"
            f"{theirs['updates_s']:>19.3f}{ours['updates_s']:>22.3f}{ours['updates_s'] / theirs['updates_s']:>20.2f}"
        )


if __name__ == "__main__":
    main()
