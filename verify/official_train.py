"""Train the official DreamerV2 (PyPI ``dreamerv2==2.2.0``) on this machine's CPU, e.g. DMC from pixels.

    python verify/official_train.py --logdir runs/official/balance -- \\
        --configs dmc_vision --task dmc_cartpole_balance --precision 32 --steps 100000

Everything after ``--`` goes to the official ``train.py`` unchanged (its flags, its
``configs.yaml``); it writes its own logdir (``metrics.jsonl``, TensorBoard events, episodes).
The same command again continues a stopped run: ``train.py`` reloads the weights it saves every
``eval_every`` agent steps (``variables.pkl``) and its replay from the logdir.
The official agent runs in its own venv (``--venv``, default ``runs/official-train-venv``): the
parity harness's pins (``official_parity.PINS``) plus ``EXTRA`` (dm_control and MuJoCo as in
dreamerkit's environment, gym for the spaces of ``common/envs.py``, TensorBoard for its logger),
and ``dreamerv2==2.2.0`` with ``--no-deps``.

On top of the parity harness's import shim (``official_parity.official_import``'s keras and
mixed-precision aliases), two things change, and nothing in the agent:

- ``train.py``'s ``assert tf.config.experimental.list_physical_devices('GPU'), message`` is
  dropped (its message says to remove it to train on a CPU);
- ``common.DMC`` runs in a spawned process that never imports TensorFlow (``ProcessDMC``): the
  official ``common/envs.py`` is loaded there by file (it imports gym, NumPy and cloudpickle
  only) and its ``DMC`` class runs unchanged. In one process, TensorFlow and a MuJoCo render
  context crash: importing TensorFlow 2.21 after MuJoCo 3.17 has rendered through EGL or OSMesa,
  or rendering after importing it, is a segmentation fault while TensorFlow loads
  ``_pywrap_tensorflow_internal`` (checked on this machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import sys
from pathlib import Path

from venvs import ensure_venv

ROOT = Path(__file__).resolve().parent.parent
EXTRA = ["dm-control==1.0.50", "mujoco==3.17.0", "gym==0.26.2", "tensorboard==2.21.0"]
GPU_ASSERT = "  assert tf.config.experimental.list_physical_devices('GPU'), message\n"


def _dmc_worker(conn, envs_file: str, args: tuple) -> None:
    """Runs the official ``DMC(*args)`` from ``envs_file`` and answers step/reset requests."""
    spec = importlib.util.spec_from_file_location("official_envs", envs_file)
    envs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(envs)
    env = envs.DMC(*args)
    conn.send((env.obs_space, env.act_space))
    while True:
        command, action = conn.recv()
        if command == "close":
            return
        conn.send(env.step(action) if command == "step" else env.reset())


class ProcessDMC:
    """The official ``common.DMC`` (same arguments and interface) in a process without TensorFlow."""

    envs_file: str = ""  # the official common/envs.py, set before the first environment is made

    def __init__(self, *args):
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_dmc_worker, args=(child, self.envs_file, args), daemon=True)
        self._process.start()
        self.obs_space, self.act_space = self._recv()

    def _recv(self):
        """The env process's answer; an error, not a hang, if it died (it cannot import this file, say)."""
        while not self._conn.poll(1.0):
            if not self._process.is_alive():
                raise RuntimeError(f"the official env process exited with code {self._process.exitcode}")
        return self._conn.recv()

    def step(self, action):
        self._conn.send(("step", action))
        return self._recv()

    def reset(self):
        self._conn.send(("reset", None))
        return self._recv()

    def close(self) -> None:
        self._conn.send(("close", None))
        self._process.join(timeout=10)


def cpu_train_source(source: str) -> str:
    """The official ``train.py`` without its GPU assert; fails if the line is not there."""
    if GPU_ASSERT not in source:
        raise RuntimeError("the official train.py has no GPU assert line to drop: not dreamerv2 2.2.0?")
    return source.replace(GPU_ASSERT, "")


def worker(package: Path, argv: list[str]) -> None:
    """Inside the venv: the official ``train.py`` with ``argv``, ``common.DMC`` in its own process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_parity import official_import

    os.environ.setdefault("MUJOCO_GL", "egl")
    tf, _, common = official_import(package)
    tf.config.run_functions_eagerly(False)  # train.py sets it from its own `jit` flag
    ProcessDMC.envs_file = str(package / "common" / "envs.py")
    common.DMC = ProcessDMC
    train = package / "train.py"
    sys.argv = [str(train), *argv]
    exec(
        compile(cpu_train_source(train.read_text()), str(train), "exec"),
        {"__name__": "__main__", "__file__": str(train)},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, required=True)
    parser.add_argument("--venv", type=Path, default=ROOT / "runs" / "official-train-venv")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    if args.worker:
        return worker(args.worker, ["--logdir", str(args.logdir), *rest])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import official_parity

    python = ensure_venv(args.venv, [*official_parity.PINS, *EXTRA], no_deps=[official_parity.OFFICIAL])
    package = official_parity.package_dir(python)
    cmd = [str(python), __file__, "--worker", str(package), "--logdir", str(args.logdir), *rest]
    # exec, not a child: a signal to this command's pid (`kill <pid>`; timeout and Ctrl-C signal the whole
    # group) must reach the training loop, which then stops and loses what it trained since its last
    # `variables.pkl` (at most `eval_every` agent steps)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
