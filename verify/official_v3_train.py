"""Train the official DreamerV3 (danijar/dreamerv3 at its arXiv-v1 commit ec526b9, JAX) on this CPU.

    python verify/official_v3_train.py --logdir runs/official_v3/balance_s0 -- \\
        --configs dmc_proprio --task dmc_cartpole_balance --seed 0 --run.train_ratio 32 --run.steps 50000

Everything after ``--`` goes to the official ``train.py`` unchanged (its flags, its ``configs.yaml``);
``--jax.platform cpu --jax.precision float32 --envs.parallel none`` are added first, so later flags
win. It writes its own logdir: ``metrics.jsonl``, ``scores.jsonl`` and the replay chunks
(``replay/*.npz``, read by ``tools/replay_actions.py``). That commit is the PyPI package
``dreamerv3==1.1.0`` (its sdist holds the same files); it runs in its own venv (``--venv``, default
``runs/official-v3-venv``, shared with ``verify/official_v3_parity.py``) with ``PINS`` and the
package installed with ``--no-deps`` (its requirements pull gym 0.19, crafter and tensorflow-cpu,
none of which the agent or the DMC envs import), never as a dependency of dreamerkit. XLA gets one thread
(``--xla_cpu_multi_thread_eigen=false``), as the dreamerkit runs beside it get one each.

What changes, and nothing in the agent:

- ``ninjax._prerun`` calls ``delete()`` on every output it discards; under the pinned jax 0.4.23
  (with tensorflow-probability 0.23, a pair that installs on Python 3.11) those outputs are
  tracers, whose ``delete()`` raises ``ConcretizationTypeError``. The call is dropped (it only
  frees memory early). The script fails if the line is not there.
- The logger writes the JSONL files and the terminal only: its TensorBoard output needs TensorFlow,
  which the agent does not.
- ``--render false`` (default) builds the DMC envs with ``render=False``: proprio runs never read the
  frames, and dreamerkit's proprio env renders none either.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

from venvs import ensure_venv

ROOT = Path(__file__).resolve().parent.parent
# jax 0.4.23 needs scipy < 1.12 (scipy.linalg.tril) and ruamel.yaml < 0.18 (safe_dump); the env pins are dreamerkit's.
PINS = [
    "jax==0.4.23",
    "jaxlib==0.4.23",
    "optax==0.1.7",
    "tensorflow-probability==0.23.0",
    "numpy==1.26.4",
    "scipy==1.11.4",
    "ruamel.yaml==0.17.40",
    "rich==15.0.0",
    "cloudpickle==3.1.3",
    "dm-control==1.0.50",
    "mujoco==3.17.0",
]
OFFICIAL = "dreamerv3==1.1.0"
DELETE = "lambda x: hasattr(x, 'delete') and x.delete(), discarded)"
KEEP = "lambda x: None, discarded)"
CPU_FLAGS = ["--jax.platform", "cpu", "--jax.precision", "float32", "--envs.parallel", "none"]


def patched_source(text: str) -> str:
    """``ninjax.py`` without the ``delete()`` of discarded tracers; fails if the line is not there."""
    if DELETE not in text:
        raise RuntimeError("ninjax.py has no delete() of discarded outputs to drop: not danijar/dreamerv3 ec526b9?")
    return text.replace(DELETE, KEEP)


def worker(render: bool, argv: list[str]) -> None:
    """Inside the venv: the official ``train.main(argv)`` with the three changes of the docstring."""
    import importlib.util

    package_dir = Path(importlib.util.find_spec("dreamerv3").origin).parent  # found, not imported
    sys.path.insert(0, str(package_dir))  # its modules import `embodied` absolutely
    package = types.ModuleType("dreamerv3")  # the package without its __init__, which imports ninjax first
    package.__path__ = [str(package_dir)]
    sys.modules["dreamerv3"] = package
    ninjax_file = package_dir / "ninjax.py"
    ninjax = types.ModuleType("dreamerv3.ninjax")
    ninjax.__file__, ninjax.__package__ = str(ninjax_file), "dreamerv3"
    exec(compile(patched_source(ninjax_file.read_text()), str(ninjax_file), "exec"), ninjax.__dict__)
    sys.modules["dreamerv3.ninjax"] = ninjax

    import embodied
    from dreamerv3 import train
    from embodied.envs import dmc

    def make_logger(parsed, logdir, step, config):
        multiplier = config.env.get(config.task.split("_")[0], {}).get("repeat", 1)
        outputs = [
            embodied.logger.TerminalOutput(config.filter),
            embodied.logger.JSONLOutput(logdir, "metrics.jsonl"),
            embodied.logger.JSONLOutput(logdir, "scores.jsonl", "episode/score"),
        ]
        return embodied.Logger(step, outputs, multiplier)

    train.make_logger = make_logger
    init = dmc.DMC.__init__

    def dmc_init(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "render": render})

    dmc.DMC.__init__ = dmc_init
    train.main(argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, required=True)
    parser.add_argument("--venv", type=Path, default=ROOT / "runs" / "official-v3-venv")
    parser.add_argument("--render", choices=["true", "false"], default="false", help="render DMC frames")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    argv = [*CPU_FLAGS, *rest, "--run.logdir", str(args.logdir.absolute())]
    if args.worker:
        return worker(args.render == "true", argv)
    python = ensure_venv(args.venv, PINS, no_deps=[OFFICIAL])
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    cmd = [str(python), __file__, "--worker", "--logdir", str(args.logdir)]
    cmd += ["--render", args.render, "--", *rest]
    sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
