"""Build a run from the composed config and train it: validate, envs, replay, agent, Lightning Trainer.

Everything is validated before the first environment is made, so a typo fails
in seconds with the key's path and the valid choices.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import registry
from recipes.config import COMPONENT_KINDS, RunConfig
from recipes.progress import ProgressBar
from registry import ConfigError

log = logging.getLogger(__name__)

# Our checkpoints are taken after the update on purpose, and the pytree notice is Lightning's own.
warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def validate(cfg: DictConfig) -> tuple[RunConfig, dict]:
    """Type-check the whole config: recipe sections by schema, components through the registry."""
    container = OmegaConf.to_container(cfg, resolve=True)
    components = {kind: container.get(kind) for kind in COMPONENT_KINDS}
    for kind, section in components.items():
        registry.validate(kind, section, path=kind)
    registry.get("recipe", container.get("recipe", "dreamer"))
    plain = {k: v for k, v in container.items() if k not in COMPONENT_KINDS}
    run = registry.core.to_schema(RunConfig, plain, path="config")
    t = run.train
    if t.prefill < t.length:
        raise ConfigError(f"train.prefill ({t.prefill}) must be at least train.length ({t.length}) to sample a batch")
    for key in ("batch", "length", "steps", "num_envs", "log_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.train_ratio <= 0:
        raise ConfigError(f"train.train_ratio must be > 0, got {t.train_ratio}")
    return run, components


def precision(run: RunConfig) -> str:
    """``auto``: bf16 mixed precision on a GPU, fp32 on the CPU."""
    if run.train.precision != "auto":
        return run.train.precision
    return "bf16-mixed" if torch.cuda.is_available() and run.train.accelerator in ("auto", "gpu", "cuda") else "32-true"


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
    target = logger_cfg.get("_target_", "")
    key = "save_dir"
    if target.endswith("WandbLogger"):
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        os.environ.setdefault("WANDB_CACHE_DIR", str(run_dir / "wandb-cache"))
    return instantiate(logger_cfg, **{key: str(run_dir)})


def build(cfg: DictConfig):
    """Validate ``cfg`` and build (module, experience, trainer) without training."""
    from components.envs import env_info, make_vector_env

    run, components = validate(cfg)
    run_dir = Path(run.run_dir)
    save_run_info(cfg, run_dir)
    L.seed_everything(run.seed, workers=True, verbose=False)
    envs = make_vector_env(components["env"], run.train.num_envs, run.seed, asynchronous=run.train.async_envs)
    info = env_info(envs)
    replay = registry.build(
        "replay",
        components["replay"],
        num_envs=run.train.num_envs,
        length=run.train.length,
        directory=str(run_dir / "replay"),
        seed=run.seed,
    )
    from recipes.experience import Experience

    experience = Experience(envs, info, replay, run.train, run.seed)
    module = registry.get("recipe", run.recipe).target(
        run.model, run.behavior, components, info, log_every=run.train.log_every
    )
    module.experience = experience
    callbacks = [
        ProgressBar(),
        L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run_dir / "checkpoints", every_n_train_steps=3 * run.train.checkpoint_every, save_last=True
        ),
    ]
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=1,
        accelerator=run.train.accelerator,
        devices=run.train.devices,
        precision=precision(run),
        logger=make_logger(cfg, run_dir),
        callbacks=callbacks,
        log_every_n_steps=1,
        enable_model_summary=True,
    )
    return module, experience, trainer


def train(cfg: DictConfig) -> dict:
    """Train the configured recipe; returns a summary (agent steps, updates, episodes, last return)."""
    module, experience, trainer = build(cfg)
    try:
        trainer.fit(module, train_dataloaders=experience.batches(module.policy))
    finally:
        experience.envs.close()
    summary = {
        "agent_steps": experience.agent_steps,
        "frames": experience.frames,
        "updates": module.updates,
        "episodes": experience.episodes,
        "last_return": experience.last_return,
    }
    log.info("finished: %s", summary)
    return summary
