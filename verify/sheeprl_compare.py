"""DreamerV2 and DreamerV3 training speed of SheepRL 0.8.4 beside dreamerkit's, at the same network sizes, in one run.

    python verify/sheeprl_compare.py --size dmc --updates 5           # DreamerV2 at the paper's DMC sizes
    python verify/sheeprl_compare.py --size small --updates 5
    python verify/sheeprl_compare.py --size small --precision bf16-mixed
    python verify/sheeprl_compare.py --size dmc --precision bf16-mixed --sheeprl-precision 32-true
    python verify/sheeprl_compare.py --algo dreamer_v3 --size XS S --obs proprio vision --updates 5
    python verify/sheeprl_compare.py --algo dreamer_v3 --size S --obs vision --flops   # and the work per update
    python verify/sheeprl_compare.py --algo dreamer_v3 --size XS --compile   # dreamerkit with train.compile=true
    OMP_NUM_THREADS=1 python verify/sheeprl_compare.py --size tiny --updates 2 --warmup 1   # smoke check
    OMP_NUM_THREADS=1 python verify/sheeprl_compare.py --algo dreamer_v3 --size XS --updates 2 --warmup 1

Both sides train on DMC cartpole_balance (action repeat 2, 1000 env steps per episode), on the CPU,
with ``--threads`` torch threads (default: ``$OMP_NUM_THREADS``, else the usable cores), fp32 or
``--precision bf16-mixed`` (SheepRL too, unless ``--sheeprl-precision`` says otherwise: each at its
fastest setting, or dreamerkit's bf16 beside SheepRL's default fp32), one environment, imagination
horizon 15. ``--algo dreamer_v2`` (the default): 64x64 RGB pixels (camera 0), batch 16 x 50.
``--algo dreamer_v3``: ``--obs vision`` (64x64 RGB pixels alone, camera 0) or ``--obs proprio``
(the state vectors alone), batch 16 x 64, as the V3 paper. Each side fills its replay with one
sequence length of random agent steps, then does one update per agent step; ``--warmup`` updates
are run untimed, then ``--updates`` are timed. One update is the world model, actor and critic
losses, backward passes and optimizer steps.

SheepRL runs in its own virtual environment (``--venv``, default ``runs/sheeprl-venv``), created
with ``python -m venv`` on the first run and reused after; dreamerkit never imports it. It holds
``torch==2.13.0`` (the CPU wheel), ``sheeprl[dmc]==0.8.4`` and ``mujoco==3.17.0``. The mujoco pin
is needed: dm_control 1.0.50 (which sheeprl[dmc] resolves to) asks for ``mujoco>=3.17.0``, so pip
takes mujoco 4.0.0, with which dm_control fails to load any task (``'MjModel' object has no
attribute 'flex_vertedge'``); 3.17.0 is the version dreamerkit's environment uses. Everything else
resolves as it is (on 2026-11-22: gymnasium 1.4.0, lightning 2.6.6, hydra-core 1.3.8, numpy 2.4.6,
dm_control 1.0.50, the same as dreamerkit's).

SheepRL is driven through its own command line (``sheeprl.cli.run``, ``exp=dreamer_v2`` or
``exp=dreamer_v3``, ``env=dmc``) by this file run with the venv's Python (``--worker``), which wraps
SheepRL's update function (``sheeprl.algos.<algo>.<algo>.train``) in a wall clock, as
``throughput.py`` wraps dreamerkit's training step: updates/s is 1 / the mean time of the timed
updates. SheepRL's own TensorBoard ``Time/sps_train`` is not used: its timer also encloses the
replay sampling (the batches are sampled lazily inside the timed loop) and the first, slower
updates, averaged over a whole log interval. dreamerkit's side is ``benchmarks/throughput.py`` run
as a subprocess with the same sizes, updates, warm-up, precision and threads. The worker reads the
sizes back from SheepRL's composed configuration, and the run stops unless every one equals
dreamerkit's; the table gives both sides' trained parameters. ``--flops`` also counts the matmul and
convolution FLOPs of the last warm-up update on each side (``torch.utils.flop_counter``, forward and
backward, as ``throughput.py --flops``): where the nets differ, the work per update does too.

Common to both: ``float32_matmul_precision=highest`` (PyTorch's default, which dreamerkit keeps;
SheepRL's default is ``high``), so fp32 is fp32 on both sides. SheepRL casts the sampled frames and
vectors to float before its update; dreamerkit does it inside. SheepRL's metric aggregation stays on
(``metric.log_level=1``, as in a normal run: its update then also computes the latents' entropies);
it logs once, at the end, after the timed updates. Neither side compiles (SheepRL's
``algo.compile.enabled`` and dreamerkit's ``train.compile`` are off by default) unless ``--compile``
sets dreamerkit's ``train.compile=true``.

DreamerV2 (``--size tiny|small|dmc``). ``--size`` reads ``conf/size/<size>.yaml`` and maps it onto
SheepRL's keys as: deter -> ``algo.world_model.recurrent_model.recurrent_state_size``; hidden ->
``transition_model.hidden_size`` and ``representation_model.hidden_size`` (the layer before the GRU
follows the former); stoch x classes -> ``stochastic_size`` x ``discrete_size``; cnn_depth ->
``encoder.cnn_channels_multiplier`` (the decoder follows); mlp_layers x mlp_units ->
``algo.mlp_layers`` x ``algo.dense_units`` (reward, actor and critic MLPs). The layers then match
one for one: conv encoder depth x (1, 2, 4, 8) with kernels 4; a linear layer to 32 x depth
channels at 1x1, then transposed convs (4, 2, 1) x depth and 3 with kernels 5, 5, 6, 6; no discount
head; truncated-normal actor; dynamics-backprop actor gradient; KL balancing 0.8 with free nats 1.
What differs:

- Layer norm: dreamerkit, as the official DreamerV2, normalises only inside the GRU (eps 1e-3) and
  keeps a bias in every linear layer. SheepRL's GRU is always normalised (eps 1e-3) and
  ``algo.layer_norm=False`` removes its other layer norms, which gives the same layers. (Before
  issue 17 both sides normalised every MLP layer: ``algo.layer_norm=True``.)

DreamerV3 (``--size XS|S|M|L``). SheepRL runs its preset ``algo=dreamer_v3_<size>`` as it is;
dreamerkit runs ``--recipe dreamerv3_dmc_vision`` or ``dreamerv3_dmc_proprio`` (task
``cartpole_balance``, one environment) with ``size.*`` set to the same sizes: XS is deter 256,
hidden 256, 1 x 256 MLP layers, CNN depth 24; S, M and L are ``conf/size/v3_small``,
``v3_medium`` and ``v3_large`` (deter 512 / 1024 / 2048, hidden and MLP units 512 / 640 / 768,
2 / 3 / 4 MLP layers, CNN depth 32 / 48 / 64); latents 32 x 32 in all. The same layers on both sides:

- RSSM: a layer before the GRU (stoch + action -> hidden; SheepRL's follows ``algo.dense_units``,
  equal to hidden in every preset), a GRU of one linear layer over [h, x] to 3 x deter with one
  LayerNorm over all three parts and the update gate biased by -1, prior deter -> hidden -> 32 x 32
  and posterior [deter, embedding] -> hidden -> 32 x 32; unimix 0.01 on both latents,
  straight-through one-hot samples; a learned initial deter (tanh of a parameter) with its prior's
  mode as the initial latent.
- Every hidden dense layer, conv and transposed conv: no bias, LayerNorm with eps 1e-3, SiLU; output
  layers with a bias. The conv nets are the official V3 ones on both sides: stride-2 convs with
  kernels 4 and padding 1 down to 4x4 (depth x (1, 2, 4, 8) channels), each pixel's channels
  normalised; the decoder a linear layer to 8 x depth channels at 4x4, then transposed convs with
  kernels 4 up to 64x64. The GRU's linear layer has no bias.
- Heads of ``mlp_layers`` x ``mlp_units`` on [deter, latent]: reward and critic over 255 two-hot bins
  in symlog space from -20 to 20; continue (one Bernoulli logit); actor (mean and std of each action
  dimension). Vector observations: symlog into an MLP encoder of the same layers, an MLP decoder
  with squared error in symlog space. Images: squared error on the pixels.
- Losses and updates: KL dyn 0.5 and rep 0.1 with free nats 1; dynamics-backprop actor gradient
  (the actions continuous), entropy 3e-4, returns normalised by their 5th-95th percentile range
  (EMA 0.99); the critic also regressed to its target critic, an EMA of the critic with fraction
  0.02 after every update; gradients clipped at 1000 (world model) and 100 (actor, critic);
  imagination from all 16 x 64 posteriors. The world model's weights get no gradient from the actor
  or critic losses on either side (SheepRL: ``backward(inputs=...)``; dreamerkit: frozen).

The trained parameters are equal (vision XS 8.26 M, S 17.92 M). What differs in the work of an update:

- SheepRL computes the embedding's part of the posterior's first layer for the whole sequence at
  once, and the priors after the unroll (the same arithmetic in fewer, larger matrix products);
  dreamerkit computes both at every step of the unroll.
- The imagination: SheepRL runs the actor on every imagined state twice (in the imagination and in its
  loss), dreamerkit once (its loss reads the policy kept from the imagination). From the state vectors
  (no conv nets) ``--flops`` counted 218 GFLOP per update on SheepRL's side against 207 on
  dreamerkit's at XS (at 684892e, when dreamerkit's imagination still took the continue head's mean,
  with its gradient; both now take its mode, as v1). The actor is the same: a Normal with mean tanh(x)
  and std in [0.1, 1], the critic's value subtracted from the return; samples beyond 1 reach the RSSM
  as 1, SheepRL clipped, dreamerkit scaled as v1.
- Optimizers: SheepRL Adam with ``fused=True``, dreamerkit AdamW (weight decay 0, foreach).
- SheepRL moves its target critic between updates, outside the timed ``train``; dreamerkit's slow
  critic update is inside the timed step.

The table gives both speeds and dreamerkit / SheepRL (above 1: dreamerkit is faster), with the
hardware, versions and commit. Runs one row after the other, never the two sides at once.
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

from venvs import ensure_venv

ROOT = Path(__file__).resolve().parent.parent
PINS = ["torch==2.13.0", "sheeprl[dmc]==0.8.4", "mujoco==3.17.0"]
RESULT = "SHEEPRL_COMPARE_RESULT "
BATCH, HORIZON = 16, 15
LENGTH = {"dreamer_v2": 50, "dreamer_v3": 64}  # the papers' sequence lengths; also the random prefill steps
V2_SIZES = ("tiny", "small", "dmc")  # conf/size/<size>.yaml, set key by key on SheepRL's side
V3_SIZES = {  # SheepRL's algo=dreamer_v3_<size> presets, in dreamerkit's size keys (S, M, L: conf/size presets)
    "XS": {"deter": 256, "hidden": 256, "mlp_units": 256, "mlp_layers": 1, "cnn_depth": 24, "stoch": 32, "classes": 32},
    "S": "v3_small",
    "M": "v3_medium",
    "L": "v3_large",
}


def sizes(algo: str, size: str) -> dict:
    """dreamerkit's size keys (deter, hidden, stoch, classes, cnn_depth, mlp_layers, mlp_units) of ``size``."""
    import yaml

    preset = size if algo == "dreamer_v2" else V3_SIZES[size]
    if isinstance(preset, dict):
        return dict(preset)
    return yaml.safe_load((ROOT / "conf" / "size" / f"{preset}.yaml").read_text())


def sheeprl_overrides(algo: str, size: str, obs: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """SheepRL's command-line overrides for ``algo`` at ``size`` from ``obs``, and the timed schedule."""
    length = LENGTH[algo]
    vision = obs == "vision"
    keys = {"cnn": "[rgb]" if vision else "[]", "mlp": "[]" if vision else "[state]"}
    common = [
        "env=dmc",
        "env.wrapper.domain_name=cartpole",
        "env.wrapper.task_name=balance",
        f"env.wrapper.from_pixels={vision}",
        f"env.wrapper.from_vectors={not vision}",
        "env.action_repeat=2",
        "env.max_episode_steps=500",
        "env.num_envs=1",
        "env.sync_env=True",
        "env.capture_video=False",
        *(f"algo.{kind}_keys.{part}={keys[kind]}" for kind in ("cnn", "mlp") for part in ("encoder", "decoder")),
        f"algo.per_rank_batch_size={BATCH}",
        f"algo.per_rank_sequence_length={length}",
        f"algo.horizon={HORIZON}",
        # `length` random steps (training waits for one sequence), then one update per agent step: exactly
        # warmup + updates of them
        f"algo.learning_starts={length}",
        "algo.per_rank_pretrain_steps=0",
        "algo.replay_ratio=1",
        f"algo.total_steps={length + args.warmup + args.updates - 1}",
        "algo.run_test=False",
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
    if algo == "dreamer_v3":
        return ["exp=dreamer_v3", f"algo=dreamer_v3_{size}", *common]
    return ["exp=dreamer_v2", *common, *v2_size_overrides(sizes(algo, size))]


def v2_size_overrides(size: dict) -> list[str]:
    """SheepRL's DreamerV2 overrides for dreamerkit's size keys, and the layer norms of dreamerkit's layers."""
    wm = "algo.world_model"
    return [
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
    ]


def sheeprl_sizes(cfg) -> dict[str, list[int]]:
    """(In the SheepRL venv.) The values of SheepRL's composed ``cfg`` that stand for each of dreamerkit's size keys."""

    def select(path: str):
        node = cfg
        for key in path.split("."):
            node = node[key]
        return node

    wm = "algo.world_model"
    mlps = (
        f"{wm}.encoder",
        f"{wm}.observation_model",
        f"{wm}.reward_model",
        f"{wm}.discount_model",
        "algo.actor",
        "algo.critic",
    )
    paths = {
        "deter": [f"{wm}.recurrent_model.recurrent_state_size"],
        "hidden": [
            f"{wm}.recurrent_model.dense_units",
            f"{wm}.transition_model.hidden_size",
            f"{wm}.representation_model.hidden_size",
        ],
        "stoch": [f"{wm}.stochastic_size"],
        "classes": [f"{wm}.discrete_size"],
        "cnn_depth": [f"{wm}.encoder.cnn_channels_multiplier", f"{wm}.observation_model.cnn_channels_multiplier"],
        "mlp_layers": [f"{part}.mlp_layers" for part in mlps],
        "mlp_units": [f"{part}.dense_units" for part in mlps],
    }
    return {key: [select(path) for path in at] for key, at in paths.items()}


def sheeprl_worker(spec: dict) -> None:
    """(In the SheepRL venv.) Runs SheepRL's command line with ``spec['overrides']``, timing every update."""
    import importlib.metadata

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(spec["threads"])
    algo = importlib.import_module(f"sheeprl.algos.{spec['algo']}.{spec['algo']}")
    from sheeprl.cli import run

    update, times, seen = algo.train, [], {}
    flops = FlopCounterMode(display=False) if spec["flops"] else None

    def timed_update(*args, **kwargs):
        """SheepRL's update, timed; notes the trained parameters, the sizes and the threads on its first call, and
        counts the FLOPs of the last warm-up update with ``spec['flops']``."""
        if not seen:
            modules = args[1:4]  # world model, actor, critic
            seen["params"] = sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
            seen["sizes"] = sheeprl_sizes(args[10])  # the configuration
            seen["threads"] = torch.get_num_threads()
        count = flops is not None and len(times) == spec["warmup"] - 1
        if count:
            flops.__enter__()
        start = time.perf_counter()
        update(*args, **kwargs)
        times.append(time.perf_counter() - start)
        if count:
            flops.__exit__(None, None, None)

    algo.train = timed_update
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
                "gflop": flops.get_total_flops() / 1e9 if flops is not None else None,
                "sizes": seen["sizes"],
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


def measure_sheeprl(python: Path, size: str, obs: str, args: argparse.Namespace, env: dict) -> dict:
    """SheepRL's updates/s at ``size`` from ``obs`` (``sheeprl_worker``); stops unless its sizes are dreamerkit's."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "algo": args.algo,
            "overrides": sheeprl_overrides(args.algo, size, obs, args, Path(tmp)),
            "threads": args.threads,
            "warmup": args.warmup,
            "updates": args.updates,
            "flops": args.flops,
        }
        cmd = [str(python), __file__, "--worker", json.dumps(spec)]
        stdout = run_logged(cmd, env, Path(tmp), f"SheepRL {size} {obs}")
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith(RESULT))[len(RESULT) :])
    ours = sizes(args.algo, size)
    wrong = mismatched_sizes(ours, result["sizes"])
    if wrong:
        raise SystemExit(f"SheepRL's sizes at {size} differ from dreamerkit's {ours}: {wrong}")
    return result


def mismatched_sizes(ours: dict, theirs: dict[str, list]) -> dict[str, list]:
    """The size keys where any of SheepRL's values (``sheeprl_sizes``) differs from dreamerkit's, with those values."""
    return {key: values for key, values in theirs.items() if any(value != ours[key] for value in values)}


def dreamerkit_run(algo: str, size: str, obs: str, compile: bool = False) -> tuple[str, str, list[str]]:
    """dreamerkit's recipe, ``--sizes`` preset and overrides for ``algo`` at ``size`` from ``obs``;
    ``compile`` adds ``train.compile=true``."""
    if algo == "dreamer_v2":
        recipe, preset, overrides = "dreamerv2_dmc", size, []
    else:  # the V3 sizes all set on top of any V3 preset; SheepRL's single environment and task
        recipe, preset = f"dreamerv3_dmc_{obs}", "v3_small"
        overrides = ["env.task=cartpole_balance", "train.num_envs=1"]
        overrides += [f"size.{key}={value}" for key, value in sizes(algo, size).items()]
    return recipe, preset, overrides + (["train.compile=true"] if compile else [])


def measure_dreamerkit(size: str, obs: str, args: argparse.Namespace, env: dict) -> dict:
    """dreamerkit's updates/s at ``size`` from ``obs``, from ``benchmarks/throughput.py``'s table."""
    recipe, preset, overrides = dreamerkit_run(args.algo, size, obs, args.compile)
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "throughput.py"),
        "--recipe",
        recipe,
        "--sizes",
        preset,
        "--batch",
        str(BATCH),
        "--length",
        str(LENGTH[args.algo]),
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
        *(["--flops"] if args.flops else []),
        *overrides,
    ]
    lines = run_logged(cmd, env, ROOT, f"dreamerkit {size} {obs}").splitlines()
    hardware = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("# hardware:"))
    row = next(line.split() for line in lines if line.split()[:1] == [preset])
    gflop = next((float(line.split()[1]) for line in lines if line.split()[:1] == ["update"]), None)
    return {"updates_s": float(row[2]), "params_M": float(row[1]), "gflop": gflop, "hardware": hardware}


def main() -> None:
    """Measures SheepRL, then dreamerkit, at every ``--size`` and ``--obs`` and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="dreamer_v2", choices=sorted(LENGTH))
    parser.add_argument(
        "--size",
        nargs="+",
        help=f"dreamer_v2: {', '.join(V2_SIZES)} (default small); dreamer_v3: {', '.join(V3_SIZES)} (default XS)",
    )
    parser.add_argument(
        "--obs",
        nargs="+",
        default=["vision"],
        choices=["vision", "proprio"],
        help="64x64 RGB pixels or the state vectors (proprio: dreamer_v3 only)",
    )
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
    parser.add_argument(
        "--flops",
        action="store_true",
        help="count the matmul and convolution FLOPs of the last warm-up update on both sides",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="dreamerkit with train.compile=true (SheepRL as it is); its first warm-up update takes the compile",
    )
    parser.add_argument("--venv", type=Path, default=ROOT / "runs" / "sheeprl-venv")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return sheeprl_worker(json.loads(args.worker))
    valid = V2_SIZES if args.algo == "dreamer_v2" else tuple(V3_SIZES)
    args.size = args.size or [valid[1] if args.algo == "dreamer_v2" else valid[0]]
    if not set(args.size) <= set(valid):
        parser.error(f"--size: {args.algo} has sizes {', '.join(valid)}, got {' '.join(args.size)}")
    if args.algo == "dreamer_v2" and args.obs != ["vision"]:
        parser.error("--obs: dreamer_v2 compares from pixels only (vision)")
    if args.flops and args.warmup < 1:
        parser.error("--flops counts the last warm-up update: give --warmup 1 or more")
    args.sheeprl_precision = args.sheeprl_precision or args.precision

    sys.path.insert(0, str(ROOT))
    from components.envs.dmc import select_gl_backend

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MUJOCO_GL": select_gl_backend()}
    python = ensure_venv(args.venv, PINS)
    rows = []
    for size in args.size:
        for obs in args.obs:
            print(f"# {size} {obs}: SheepRL ...", flush=True)
            theirs = measure_sheeprl(python, size, obs, args, env)
            print(f"# {size} {obs}: dreamerkit ...", flush=True)
            ours = measure_dreamerkit(size, obs, args, env)
            rows.append((size, obs, theirs, ours))

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    theirs = rows[0][2]
    name = {"dreamer_v2": "DreamerV2", "dreamer_v3": "DreamerV3"}[args.algo]
    observed = ", ".join({"vision": "64x64 RGB", "proprio": "state vectors"}[obs] for obs in args.obs)
    print(
        f"# {name}, DMC cartpole_balance {observed}, batch {BATCH} x {LENGTH[args.algo]}, horizon {HORIZON}, "
        f"{args.updates} timed updates after {args.warmup} warm-up, "
        f"precision: SheepRL {args.sheeprl_precision}, dreamerkit {args.precision}"
        + (", dreamerkit compiled (train.compile=true)" if args.compile else "")
    )
    print(f"# hardware: {rows[0][3]['hardware']}")
    print(
        f"# dreamerkit {commit.strip() or '?'}; SheepRL {theirs['sheeprl']} in {args.venv} "
        f"(torch {theirs['torch']}, lightning {theirs['lightning']}, {theirs['threads']} threads)"
    )
    flops = f"{'sheeprl GFLOP':>15}{'dreamerkit GFLOP':>18}" if args.flops else ""
    print(
        f"{'size':<7}{'obs':<9}{'sheeprl prec':>13}{'dreamerkit prec':>16}{'sheeprl params(M)':>19}"
        f"{'dreamerkit params(M)':>22}{flops}{'sheeprl updates/s':>19}{'dreamerkit updates/s':>22}"
        f"{'dreamerkit/sheeprl':>20}"
    )
    for size, obs, theirs, ours in rows:
        flops = f"{theirs['gflop']:>15.1f}{ours['gflop']:>18.1f}" if args.flops else ""
        print(
            f"{size:<7}{obs:<9}{args.sheeprl_precision:>13}{args.precision:>16}{theirs['params_M']:>19.2f}"
            f"{ours['params_M']:>22.2f}{flops}{theirs['updates_s']:>19.3f}{ours['updates_s']:>22.3f}"
            f"{ours['updates_s'] / theirs['updates_s']:>20.2f}"
        )


if __name__ == "__main__":
    main()
