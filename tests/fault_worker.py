"""Run by tests/test_faults.py: ``python tests/fault_worker.py <phase> <n> <run.py overrides>``.

Runs ``run.py`` with the overrides and SIGKILLs the process at the ``n``-th moment of ``phase``:

    prefill     before the n-th random-action step of the prefill
    update      in the middle of the n-th update (world model stepped, actor and critic not)
    checkpoint  halfway through writing the n-th checkpoint file
    replay      halfway through writing the n-th replay row (its first key written, the others not)
    eval        at the n-th action of an evaluation episode during training

A run that ends before the moment exits with status 3.
"""

import io
import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from components.replay_buffer import Replay  # noqa: E402
from recipes.dreamer import Dreamer  # noqa: E402
from runner import checkpoint  # noqa: E402
from runner.experience import Experience  # noqa: E402


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def at(n: int, when=lambda *args, **kwargs: True):
    """A counter of the calls for which ``when`` holds; True at the n-th."""
    count = [0]

    def due(*args, **kwargs) -> bool:
        if not when(*args, **kwargs):
            return False
        count[0] += 1
        return count[0] == n

    return due


def install(phase: str, n: int) -> None:
    if phase == "prefill":
        step, due = Experience.step, at(n, lambda self, policy: self.agent_steps < self.prefill)

        def prefill_step(self, policy):
            if due(self, policy):
                kill()
            step(self, policy)

        Experience.step = prefill_step
    elif phase == "update":
        step, due = Dreamer._step, at(n, lambda self, name, *args: name == "actor")

        def update_step(self, name, *args):
            if due(self, name, *args):
                kill()
            step(self, name, *args)

        Dreamer._step = update_step
    elif phase == "checkpoint":
        save, due = torch.save, at(n)

        def half_save(obj, f):
            if due():
                data = io.BytesIO()
                save(obj, data)
                f.write(data.getvalue()[: len(data.getvalue()) // 2])
                f.flush()
                kill()
            save(obj, f)

        checkpoint.torch.save = half_save
    elif phase == "replay":
        add, due = Replay.add, at(n)

        def half_add(self, step):
            storage = self.buffer.storage
            if due() and storage.initialized:
                key = sorted(step.keys(include_nested=True, leaves_only=True))[0]
                storage._storage[key][self.buffer.writer._cursor] = step[key]
                kill()
            add(self, step)

        Replay.add = half_add
    elif phase == "eval":
        policy, due = Dreamer.policy, at(n, lambda self, obs, state, mode: mode == "mode")

        def eval_policy(self, obs, state=None, mode="sample"):
            if due(self, obs, state, mode):
                kill()
            return policy(self, obs, state, mode)

        Dreamer.policy = eval_policy
    elif phase != "none":
        raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    phase, n, *overrides = sys.argv[1:]
    install(phase, int(n))
    sys.argv = [str(ROOT / "run.py"), *overrides]
    try:
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    except SystemExit as end:
        if end.code not in (None, 0):
            raise
    if phase != "none":
        sys.exit(3)
