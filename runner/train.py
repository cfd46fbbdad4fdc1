"""Build a run from the composed config and train, resume or evaluate it.

Everything is validated before the first environment is made, so a typo fails
in seconds with the key's path and the valid choices.

    python run.py recipe=...                 train in a new run directory
    python run.py resume=<run dir>           continue from <run dir>/checkpoints/last.ckpt
    python run.py evaluate=<run dir>         evaluate a checkpoint (see runner/evaluate.py)
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

import recipes.dreamer  # noqa: F401  (registers the built-in agent)
import registry
from components.diskspace import write_atomically
from registry import ConfigError
from runner import lock, loggers
from runner.checkpoint import AtomicCheckpointIO, Checkpointer, resume_checkpoint
from runner.config import RunConfig, saved_config, validate
from runner.periodic_eval import PeriodicEval
from runner.preflight import warn_devices
from runner.progress import CostEstimate, ProgressBar
from runner.videos import VideoPredictions

log = logging.getLogger(__name__)

# Our checkpoints are taken after the update on purpose, and the pytree notice is Lightning's own.
warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")


def one_line_each() -> None:
    """Print each of Lightning's lines once, without its advertising tips.

    The ``lightning`` logger has a console handler of its own and passes its lines on to the root
    logger too, which under run.py has Hydra's console and run.log handlers: every line came out
    twice. Where the root logger has handlers, Lightning's own is dropped, so its lines go once to
    the console and into run.log. Its "Tip: try installing litlogger" line is not about this run.
    """
    lightning_log = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning_log.handlers):
            lightning_log.removeHandler(handler)
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in tips.filters):
        tips.addFilter(_NoTips())


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def precision(run: RunConfig) -> str:
    """``auto``: bf16 mixed precision on a GPU, fp32 on the CPU.

    bf16 asked for on a CPU without bf16 instructions (AVX-512 BF16 or AMX) gets a warning:
    there oneDNN emulates it, 8x slower than fp32 on an AVX2 EPYC (BENCHMARKS.md).
    """
    on_gpu = torch.cuda.is_available() and run.train.accelerator in ("auto", "gpu", "cuda")
    if run.train.precision == "auto":
        return "bf16-mixed" if on_gpu else "32-true"
    if run.train.precision.startswith("bf16") and not on_gpu and not cpu_has_bf16():
        log.warning(
            "train.precision=%s on a CPU without bf16 instructions (torch sees %s): it is emulated and "
            "runs several times slower than train.precision=32-true",
            run.train.precision,
            torch.backends.cpu.get_cpu_capability(),
        )
    return run.train.precision


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX); True when torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op of torch: absent from some builds
        return True


def save_run_info(cfg: DictConfig, run_dir: Path) -> None:
    """Write the resolved config and the git commit next to the run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically("config", run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    write_atomically("config", run_dir / "commit.txt", (commit or "unknown") + "\n")


def make_logger(cfg: DictConfig, run_dir: Path):
    """Instantiate the configured Lightning logger into the run directory (or none)."""
    if not cfg.get("logger"):
        return False
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True)
    if logger_cfg.get("_target_", "").endswith("WandbLogger"):
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        os.environ.setdefault("WANDB_CACHE_DIR", str(run_dir / "wandb-cache"))
    return instantiate(logger_cfg, save_dir=str(run_dir))


# train.* keys a resume may change: how long, how often to log and save, how to run; eval.* may all.
RESUMABLE = (
    "steps",
    "log_every",
    "checkpoint_every",
    "checkpoint_minutes",
    "keep_checkpoints",
    "nonfinite",
    "precision",
    "compile",
    "accelerator",
    "async_envs",
)
# The others fix what the run already did: why each cannot change.
FIXED = {
    "num_envs": "the replay stores one column per env",
    "devices": "each rank keeps its own replay shard and random streams",
    "num_nodes": "each rank keeps its own replay shard and random streams",
}
SCHEDULE = "the train ratio's schedule counts the updates made so far with it"


def resume_config(run_dir: str | Path, overrides: list[str]) -> DictConfig:
    """The saved config of ``run_dir`` with ``train.*`` and ``eval.*`` overrides (e.g. a larger ``train.steps``).

    Only the ``RESUMABLE`` train keys may change; another one set to a new value is a ConfigError
    that names it, says why and lists those that can.
    """
    run_dir = Path(run_dir)
    cfg = saved_config(run_dir, "resume")
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+")
        if key in ("resume", "resume_from", "evaluate") or key.startswith("hydra"):
            continue
        if not key.startswith(("train.", "eval.")):
            raise ConfigError(f"resume: only train.* and eval.* can change when resuming, not {key!r}")
        value = yaml.safe_load(value)
        name = key.removeprefix("train.")
        saved = OmegaConf.select(cfg, key, default=None)
        if key.startswith("train.") and name not in RESUMABLE and value != saved:
            raise ConfigError(
                f"resume: {key} cannot change when resuming (saved {saved!r}, asked {value!r}): "
                f"{FIXED.get(name, SCHEDULE)}; train.* keys that can: {', '.join(RESUMABLE)}"
            )
        OmegaConf.update(cfg, key, value, merge=False)
    cfg.run_dir = str(run_dir)
    cfg.resume = str(run_dir)
    return cfg


def make_trainer(cfg: DictConfig, run: RunConfig, run_dir: Path, components: dict) -> L.Trainer:
    """The Lightning Trainer: loop, precision, devices (DDP when more than one), callbacks, logger."""
    t = run.train
    callbacks = [
        ProgressBar(),
        CostEstimate(),
        Checkpointer(run_dir / "checkpoints", t.checkpoint_every, t.checkpoint_minutes, t.keep_checkpoints),
    ]
    if run.eval.every > 0:
        callbacks.append(
            PeriodicEval(
                components["env"],
                run.eval.every,
                run.eval.during_episodes,
                run_dir,
                run.seed,
                run.eval.during_videos,
                run.eval.policy,
            )
        )
    if run.eval.video_every > 0:
        callbacks.append(VideoPredictions(run.eval.video_every, run_dir))
    # Each backward pass (model, actor, critic) reaches only its own parameters.
    strategy = DDPStrategy(find_unused_parameters=True) if t.devices * t.num_nodes > 1 else "auto"
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=-1,  # the experience iterable decides when training ends (see Dreamer.on_train_epoch_end)
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=precision(run),
        logger=make_logger(cfg, run_dir),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=True,  # Checkpointer is the run's checkpoint callback
        log_every_n_steps=1,
    )


def replay_folder(rank: int) -> str:
    """The folder of a rank's replay shard inside the run directory (with ``replay.storage=disk``)."""
    return "replay" if rank == 0 else f"replay_rank{rank}"


def make_replay(run: RunConfig, components: dict, directory: Path, seed: int):
    """The run's replay (``replay.*``) for ``train.num_envs`` streams of ``train.length`` windows in ``directory``."""
    return registry.build(
        "replay",
        components["replay"],
        num_envs=run.train.num_envs,
        length=run.train.length,
        directory=str(directory),
        seed=seed,
    )


def build(cfg: DictConfig, validated: tuple[RunConfig, dict] | None = None):
    """Validate ``cfg`` (unless ``validated``, :func:`validate`'s result, is given) and build (agent,
    experience, trainer) without training.

    With several ranks (``train.devices`` x ``train.num_nodes``) every rank builds its own
    environments (seeded apart) and replay shard (``replay/`` on rank 0, ``replay_rank<r>/``
    elsewhere); Lightning's DDP averages the gradients.
    """
    from components.envs import env_info, make_vector_env
    from runner.experience import Experience

    run, components = validated or validate(cfg)  # every check, before anything is built or written
    one_line_each()
    warn_devices(run.train.accelerator, run.train.devices)
    agent = registry.get("agent", run.agent)
    run_dir = Path(run.run_dir)
    trainer = make_trainer(cfg, run, run_dir, components)
    rank, world = trainer.global_rank, trainer.world_size
    if rank == 0:
        save_run_info(cfg, run_dir)
    L.seed_everything(run.seed, workers=True, verbose=False)  # same initial weights on every rank (see below)
    seed = run.seed + rank * run.train.num_envs  # distinct environments and replay sampling per rank

    def make_envs():
        return make_vector_env(components["env"], run.train.num_envs, seed, asynchronous=run.train.async_envs)

    envs = make_envs()
    info = env_info(envs)
    envs.close()
    replay = make_replay(run, components, run_dir / replay_folder(rank), seed)
    experience = Experience(make_envs, info, replay, run.train, seed, world_size=world, show_progress=rank == 0)
    module = agent.target(run, components, info)
    module.experience = experience
    # The weights came from one stream on every rank; what a rank draws from here on (latent samples,
    # actions, imagination) comes from its own, or every rank would repeat rank 0's noise.
    torch.manual_seed(rank_seed(run.seed, rank))
    return module, experience, trainer


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s torch random stream once the initial weights are made."""
    return int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Train the configured recipe (or resume ``cfg.resume``); returns a summary of the run.

    Nothing of the run changes before the config is valid and this process holds the run
    directory (``runner.lock``): a refused command leaves the run as it was.
    """
    ckpt, resume_from = None, cfg.get("resume_from")
    if cfg.get("resume"):
        cfg = resume_config(cfg.resume, overrides or [])
    validated = validate(cfg)
    run = validated[0]
    command = "resume" if cfg.get("resume") else "train"
    with lock.hold(run.run_dir, command) if lock.launching_process() else nullcontext():
        if cfg.get("resume"):
            found = resume_checkpoint(cfg.run_dir, resume_from)  # the newest that loads (a corrupt one is named)
            ckpt = found[0] if found else None
            loggers.rewind(cfg, found[1].get("logs") if found else {})  # the logs continue from the checkpoint
        module, experience, trainer = build(cfg, validated)
        try:
            trainer.fit(module, train_dataloaders=experience.batches(module.policy), ckpt_path=ckpt)
        finally:
            experience.close()
    summary = {
        "agent_steps": experience.global_steps,
        "frames": experience.frames,
        "ranks": experience.world_size,
        "updates": module.updates,
        "episodes": experience.episodes,
        "last_return": experience.last_return,
        "env_restarts": experience.env_restarts,
        "skipped_updates": module.skipped_updates,
    }
    log.info("finished: %s", summary)
    return summary
