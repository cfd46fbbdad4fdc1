"""Build a run from the composed config and train, resume or evaluate it.

Everything is validated before the first environment is made, so a typo fails
in seconds with the key's path and the valid choices.

    python run.py recipe=...                 train in a new run directory
    python run.py resume=<run dir>           continue from <run dir>/checkpoints/last.ckpt
    python run.py evaluate=<run dir>         evaluate a checkpoint (see recipes/evaluate.py)
"""

from __future__ import annotations

import functools
import logging
import math
import os
import subprocess
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

import registry
from recipes.checkpoint import AtomicCheckpointIO, Checkpointer, load_checkpoint
from recipes.config import COMPONENT_KINDS, RunConfig
from recipes.evaluate import PeriodicEval
from recipes.progress import ProgressBar
from recipes.videos import VideoPredictions
from registry import ConfigError

log = logging.getLogger(__name__)

# Our checkpoints are taken after the update on purpose, and the pytree notice is Lightning's own.
warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")

# (path, test, what it must be): numeric settings checked before anything is built.
RANGES = [
    ("train.batch", lambda v: v >= 1, ">= 1"),
    ("train.length", lambda v: v >= 2, ">= 2"),
    ("train.steps", lambda v: v >= 1, ">= 1"),
    ("train.num_envs", lambda v: v >= 1, ">= 1"),
    ("train.log_every", lambda v: v >= 1, ">= 1"),
    ("train.pretrain", lambda v: v >= 0, ">= 0"),
    ("train.world_model_pretrain", lambda v: v >= 0, ">= 0 (0 = off, the paper's setting)"),
    ("train.train_ratio", lambda v: v > 0 and math.isfinite(v), "a positive number"),
    ("train.checkpoint_every", lambda v: v >= 1, ">= 1"),
    ("train.checkpoint_minutes", lambda v: v > 0, "> 0"),
    ("train.keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("train.devices", lambda v: v >= 1, ">= 1"),
    ("train.num_nodes", lambda v: v >= 1, ">= 1"),
    ("behavior.horizon", lambda v: v >= 2, ">= 2 (the actor needs a target after its action)"),
    ("behavior.discount", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("behavior.lambda_", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("behavior.ent_scale", lambda v: v >= 0, ">= 0"),
    ("behavior.slow_critic_every", lambda v: v >= 1, ">= 1"),
    ("behavior.slow_critic_fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("behavior.expl_noise", lambda v: 0 <= v <= 1, "in [0, 1] (0 = no exploration noise, the official setting)"),
    ("eval.episodes", lambda v: v >= 1, ">= 1"),
    ("eval.every", lambda v: v >= 0, ">= 0 (0 = no evaluation during training)"),
    ("eval.during_episodes", lambda v: v >= 1, ">= 1"),
    ("eval.during_videos", lambda v: v >= 0, ">= 0 (0 = no GIFs)"),
    ("eval.video_every", lambda v: v >= 0, ">= 0 (0 = no videos)"),
]
POSITIVE_SIZES = ("cnn_depth", "mlp_units", "deter", "hidden", "stoch", "classes")


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: DictConfig) -> tuple[RunConfig, dict]:
    """Type- and range-check the whole config: sections by schema, components through the registry."""
    container = OmegaConf.to_container(cfg, resolve=True)
    components = {kind: container.get(kind) for kind in COMPONENT_KINDS}
    for kind, section in components.items():
        registry.validate(kind, section, path=kind)
    registry.get("recipe", container.get("recipe", "dreamer"))
    plain = {k: v for k, v in container.items() if k not in COMPONENT_KINDS}
    run = registry.core.to_schema(RunConfig, plain, path="config")
    for path, ok, what in RANGES:
        if not ok(_get(run, path)):
            raise ConfigError(f"{path} must be {what}, got {_get(run, path)}")
    for key in POSITIVE_SIZES:
        if getattr(run.size, key) < 1:
            raise ConfigError(f"size.{key} must be >= 1, got {getattr(run.size, key)}")
    for name, opt in (
        ("model.opt", run.model.opt),
        ("behavior.actor_opt", run.behavior.actor_opt),
        ("behavior.critic_opt", run.behavior.critic_opt),
    ):
        if not (opt.lr > 0 and opt.eps > 0 and opt.clip > 0 and 0 <= opt.wd < 1):
            raise ConfigError(f"{name}: lr, eps and clip must be > 0 and wd in [0, 1), got {opt}")
    if run.train.prefill < run.train.length:
        raise ConfigError(
            f"train.prefill ({run.train.prefill}) must be at least train.length ({run.train.length}) to sample a batch"
        )
    return run, components


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
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    (run_dir / "commit.txt").write_text((commit or "unknown") + "\n")


def make_logger(cfg: DictConfig, run_dir: Path):
    """Instantiate the configured Lightning logger into the run directory (or none)."""
    if not cfg.get("logger"):
        return False
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True)
    if logger_cfg.get("_target_", "").endswith("WandbLogger"):
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        os.environ.setdefault("WANDB_CACHE_DIR", str(run_dir / "wandb-cache"))
    return instantiate(logger_cfg, save_dir=str(run_dir))


def saved_config(run_dir: Path, command: str) -> DictConfig:
    """The config a run saved in ``run_dir``; ``command`` names the caller when ``run_dir`` is not a run."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{command}: {run_dir} is not a run directory (no config.yaml)")
    return OmegaConf.load(saved)


def resume_config(run_dir: str | Path, overrides: list[str]) -> DictConfig:
    """The saved config of ``run_dir`` with ``train.*`` overrides (e.g. a larger ``train.steps``)."""
    run_dir = Path(run_dir)
    cfg = saved_config(run_dir, "resume")
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+")
        if key in ("resume", "evaluate") or key.startswith("hydra"):
            continue
        if not key.startswith(("train.", "eval.")):
            raise ConfigError(f"resume: only train.* and eval.* can change when resuming, not {key!r}")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    cfg.run_dir = str(run_dir)
    cfg.resume = str(run_dir)
    return cfg


def last_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint a resume of ``run_dir`` starts from."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def make_trainer(cfg: DictConfig, run: RunConfig, run_dir: Path, components: dict) -> L.Trainer:
    """The Lightning Trainer: loop, precision, devices (DDP when more than one), callbacks, logger."""
    t = run.train
    callbacks = [
        ProgressBar(),
        Checkpointer(run_dir / "checkpoints", t.checkpoint_every, t.checkpoint_minutes, t.keep_checkpoints),
    ]
    if run.eval.every > 0:
        callbacks.append(
            PeriodicEval(
                components["env"], run.eval.every, run.eval.during_episodes, run_dir, run.seed, run.eval.during_videos
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
        enable_checkpointing=False,
        log_every_n_steps=1,
    )


def build(cfg: DictConfig):
    """Validate ``cfg`` and build (module, experience, trainer) without training.

    With several ranks (``train.devices`` x ``train.num_nodes``) every rank builds its own
    environments (seeded apart) and replay shard (``replay/`` on rank 0, ``replay_rank<r>/``
    elsewhere); Lightning's DDP averages the gradients.
    """
    from components.envs import env_info, make_vector_env
    from recipes.experience import Experience

    run, components = validate(cfg)
    run_dir = Path(run.run_dir)
    trainer = make_trainer(cfg, run, run_dir, components)
    rank, world = trainer.global_rank, trainer.world_size
    if rank == 0:
        save_run_info(cfg, run_dir)
    L.seed_everything(run.seed, workers=True, verbose=False)  # same initial weights on every rank
    seed = run.seed + rank * run.train.num_envs  # distinct environments and replay sampling per rank

    def make_envs():
        return make_vector_env(components["env"], run.train.num_envs, seed, asynchronous=run.train.async_envs)

    envs = make_envs()
    info = env_info(envs)
    envs.close()
    replay = registry.build(
        "replay",
        components["replay"],
        num_envs=run.train.num_envs,
        length=run.train.length,
        directory=str(run_dir / ("replay" if rank == 0 else f"replay_rank{rank}")),
        seed=seed,
    )
    experience = Experience(make_envs, info, replay, run.train, seed, world_size=world)
    module = registry.get("recipe", run.recipe).target(
        run.model,
        run.behavior,
        components,
        info,
        log_every=run.train.log_every,
        nonfinite=run.train.nonfinite,
        world_model_pretrain=run.train.world_model_pretrain,
    )
    if run.train.compile:
        module.world_model.rssm.compile_steps()
    module.experience = experience
    return module, experience, trainer


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Train the configured recipe (or resume ``cfg.resume``); returns a summary of the run."""
    ckpt = None
    if cfg.get("resume"):
        cfg = resume_config(cfg.resume, overrides or [])
        ckpt = last_checkpoint(cfg.run_dir)
        load_checkpoint(ckpt)  # a corrupt or missing checkpoint fails here, naming the file
    module, experience, trainer = build(cfg)
    try:
        trainer.fit(
            module, train_dataloaders=experience.batches(functools.partial(module.policy, explore=True)), ckpt_path=ckpt
        )
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
