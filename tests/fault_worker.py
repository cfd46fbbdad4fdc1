"""Run by tests/test_faults.py: ``python tests/fault_worker.py <phase> <n> <after> <run.py overrides>``.

Runs ``run.py`` with the overrides and SIGKILLs the process at the ``n``-th moment of ``phase``
counted once this process has written ``after`` checkpoints (0: from its start):

    prefill     before the n-th random-action step of the prefill
    update      in the middle of the n-th update (world model stepped, actor and critic not)
    checkpoint  halfway through writing the n-th checkpoint file
    link        the n-th checkpoint file written and renamed into place, ``last.ckpt.tmp`` linked to
                it, ``last.ckpt`` not yet replaced: the last moment of a checkpoint's write
    replay      halfway through writing the n-th replay row (its first key written, the others not),
                the first row of a fresh replay too (its files are made first)
    eval        at the third action of the n-th evaluation episode during training

A run that ends before the moment exits with status 3. With ``DK_FAULT_RECORD=<file>`` the
worker appends to that file what a test needs to see that a resume brings back exactly what its
checkpoint holds (a comparison of two resumed runs cannot see a state that every resume loses alike):

    saved <rows written> <sha256>   the replay's stored rows (oldest first) when a checkpoint took its state
    loaded <rows written> <sha256>  the same once a resume has reopened the replay
    restored <checkpoint> [<key> ...]  when a resumed run starts collecting, everything restored
                                    (weights, optimizers, counters, RNG and replay states) against the
                                    checkpoint file: the keys that differ, none when all is equal
"""

import hashlib
import io
import math
import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from components.replay_buffer import Replay, ReservedMemmapStorage, stream  # noqa: E402
from recipes.dreamer import Dreamer  # noqa: E402
from runner import checkpoint  # noqa: E402
from runner.checkpoint import load_checkpoint  # noqa: E402
from runner.experience import Experience  # noqa: E402

saved = [0]  # checkpoints this process has written (last.ckpt pointing at them)


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def at(n: int, after: int, when=lambda *args, **kwargs: True):
    """A counter of the calls for which ``when`` holds once ``after`` checkpoints are written; True at the n-th."""
    count = [0]

    def due(*args, **kwargs) -> bool:
        if saved[0] < after or not when(*args, **kwargs):
            return False
        count[0] += 1
        return count[0] == n

    return due


def count_checkpoints() -> None:
    save = checkpoint.Checkpointer.save

    def counted(self, trainer, pl_module):
        path = save(self, trainer, pl_module)
        saved[0] += 1
        return path

    checkpoint.Checkpointer.save = counted


def install(phase: str, n: int, after: int) -> None:
    if phase == "prefill":
        step, due = Experience.step, at(n, after, lambda self, policy: self.agent_steps < self.prefill)

        def prefill_step(self, policy):
            if due(self, policy):
                kill()
            step(self, policy)

        Experience.step = prefill_step
    elif phase == "update":
        step, due = Dreamer._step, at(n, after, lambda self, name, *args: name == "actor")

        def update_step(self, name, *args):
            if due(self, name, *args):
                kill()
            step(self, name, *args)

        Dreamer._step = update_step
    elif phase == "checkpoint":
        save, due = torch.save, at(n, after)

        def half_save(obj, f):
            if due():
                data = io.BytesIO()
                save(obj, data)
                f.write(data.getvalue()[: len(data.getvalue()) // 2])
                f.flush()
                kill()
            save(obj, f)

        checkpoint.torch.save = half_save
    elif phase == "link":
        replace, due = os.replace, at(n, after, lambda src, dst: Path(dst).name == "last.ckpt")

        def replace_last(src, dst):
            if due(src, dst):
                kill()
            replace(src, dst)

        checkpoint.os.replace = replace_last  # the os module: AtomicCheckpointIO's renames pass through too
    elif phase == "replay":
        set_row, due = ReservedMemmapStorage.set, at(n, after)

        def half_set(self, cursor, data, **kwargs):
            if due():
                if not self.initialized:  # the first row of a fresh replay: make its files, then cut the write
                    self._init(data)
                key = sorted(data.keys(include_nested=True, leaves_only=True), key=str)[0]
                self._storage[key][cursor] = data[key]
                kill()
            return set_row(self, cursor, data, **kwargs)

        ReservedMemmapStorage.set = half_set
    elif phase == "eval":
        policy, episodes, actions = Dreamer.policy, [0], [0]

        def eval_policy(self, obs, state=None, mode="sample"):
            if mode != "explore" and saved[0] >= after:  # an evaluation episode: not collecting experience
                if state is None:
                    episodes[0], actions[0] = episodes[0] + 1, 0
                actions[0] += 1
                if episodes[0] == n and actions[0] == 3:
                    kill()
            return policy(self, obs, state, mode)

        Dreamer.policy = eval_policy
    elif phase != "none":
        raise SystemExit(f"unknown phase {phase!r}")


def rows_hash(replay: Replay) -> str:
    """sha256 of the stored rows of every key, oldest first (what the sampler can draw from)."""
    storage, digest = replay.buffer.storage, hashlib.sha256()
    steps, oldest = stream(storage)
    order = (torch.arange(steps) + oldest) % storage.max_size
    for key in sorted(storage._storage.keys(include_nested=True, leaves_only=True)):
        digest.update(storage._storage.get(key)[order].contiguous().numpy().tobytes())
    return digest.hexdigest()


def flat(obj, prefix: str = "") -> dict:
    """A nested checkpoint as ``{"/key/list[i]/...": leaf}``."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in flat(value, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in flat(value, f"{prefix}[{i}]").items()}
    return {prefix: obj}


def same(a, b) -> bool:
    """Bitwise for tensors (dtype, shape, bytes); NaN equals NaN (a float counter before any episode)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and (a.dtype, a.shape) == (b.dtype, b.shape)
            and a.cpu().numpy().tobytes() == b.cpu().numpy().tobytes()
        )
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def differences(a: dict, b: dict) -> list[str]:
    """The keys of two (nested) checkpoints whose values are not bitwise equal, or that only one has."""
    a, b = flat(a), flat(b)
    return sorted(key for key in a.keys() | b.keys() if key not in a or key not in b or not same(a[key], b[key]))


def record(path: str) -> None:
    state_dict, load_state_dict, batches = Replay.state_dict, Replay.load_state_dict, Experience.batches

    def note(what: str, replay: Replay, state: dict) -> None:
        with open(path, "a") as f:
            f.write(f"{what} {state['writer']['_write_count']} {rows_hash(replay)}\n")

    def saving(self):
        state = state_dict(self)
        if self.buffer.storage.initialized:
            note("saved", self, state)
        return state

    def loading(self, state):
        back = load_state_dict(self, state)
        if back:
            note("loaded", self, state)
        return back

    def checked(self, policy):
        """The first batch is asked for: all is restored, and nothing collected, updated or drawn yet."""
        module = policy.__self__
        trainer = module.trainer
        if trainer.ckpt_path:
            now = {"state_dict": module.state_dict(), "optimizer_states": [o.state_dict() for o in trainer.optimizers]}
            module.on_save_checkpoint(now)  # the agent's part: counters, RNG, experience and replay states
            keys = ("state_dict", "optimizer_states", "agent")
            stored = {key: value for key, value in load_checkpoint(trainer.ckpt_path).items() if key in keys}
            with open(path, "a") as f:
                f.write(" ".join(["restored", Path(trainer.ckpt_path).name, *differences(now, stored)]) + "\n")
        yield from batches(self, policy)

    Replay.state_dict, Replay.load_state_dict, Experience.batches = saving, loading, checked


if __name__ == "__main__":
    phase, n, after, *overrides = sys.argv[1:]
    count_checkpoints()
    install(phase, int(n), int(after))
    if os.environ.get("DK_FAULT_RECORD"):
        record(os.environ["DK_FAULT_RECORD"])
    sys.argv = [str(ROOT / "run.py"), *overrides]
    try:
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    except SystemExit as end:
        if end.code not in (None, 0):
            raise
    if phase != "none":
        sys.exit(3)
