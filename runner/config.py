"""Typed schemas of the run's config sections (train, eval) and of the whole composed config.

:func:`validate` is the one validation pass before anything is built or written: component
sections through their registered schemas, the agent's sections through
:mod:`recipes.config`'s schemas, the run's own here, then the checks that span sections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import registry
from recipes.config import BehaviorConfig, ModelConfig, SizeConfig, at_least
from registry import ConfigError, unknown

NONFINITE = ("stop", "skip")


@dataclass
class TrainConfig:
    """Run length, batch shape, interleaving (train_ratio), environments, precision, compilation, devices."""

    steps: int = 50_000_000
    """Agent steps of the whole run (all ranks); frames = steps x action repeat."""
    batch: int = 50
    """Sequences per update (B)."""
    length: int = 50
    """Steps per sequence (T)."""
    train_ratio: float = 156.25
    """Replayed steps per agent step (official Atari: 50 x 50 every 16 steps)."""
    prefill: int = 200_000
    """Agent steps of uniform random actions before the first update."""
    pretrain: int = 1
    """Updates right after the prefill."""
    world_model_pretrain: int = 0
    """World-model-only updates before the pretrain ones (0: off, the paper's setting)."""
    num_envs: int = 1
    """Environments stepped together (per rank)."""
    async_envs: bool = False
    """Run the environments in subprocesses."""
    log_every: int = 100
    """Updates between logged training scalars."""
    checkpoint_every: int = 100_000
    """Agent steps between checkpoints."""
    checkpoint_minutes: float = 30.0
    """Minutes between checkpoints (whichever comes first)."""
    keep_checkpoints: int = 3
    """Checkpoints kept besides last.ckpt."""
    nonfinite: str = "stop"
    """On a NaN/Inf loss: stop (keep the last good checkpoint) or skip the update."""
    precision: str = "auto"
    """Lightning precision; auto: bf16-mixed on a GPU, 32-true on the CPU."""
    compile: bool = False
    """torch.compile the imagination rollout, the RSSM's filtering step and the decoder's loss (eager where
    compiling fails; docs/ARCHITECTURE.md)."""
    accelerator: str = "auto"
    """Lightning accelerator (auto, cpu, gpu)."""
    devices: int = 1
    """Devices per node; more than one rank trains data-parallel."""
    num_nodes: int = 1
    """Nodes."""

    def check(self) -> None:
        for name in ("batch", "steps", "num_envs", "log_every", "checkpoint_every", "keep_checkpoints"):
            at_least(name, getattr(self, name), 1)
        for name in ("devices", "num_nodes"):
            at_least(name, getattr(self, name), 1)
        at_least("length", self.length, 2)
        at_least("pretrain", self.pretrain, 0)
        at_least("world_model_pretrain", self.world_model_pretrain, 0, " (0 = off, the paper's setting)")
        if not (self.train_ratio > 0 and math.isfinite(self.train_ratio)):
            raise ConfigError(f"train_ratio: must be a positive number, got {self.train_ratio}")
        if not self.checkpoint_minutes > 0:
            raise ConfigError(f"checkpoint_minutes: must be > 0, got {self.checkpoint_minutes}")
        if self.nonfinite not in NONFINITE:
            raise unknown("nonfinite", self.nonfinite, NONFINITE)
        if self.prefill < self.length:
            raise ConfigError(
                f"prefill: must be at least train.length ({self.length}) to sample a batch, got {self.prefill}"
            )


POLICIES = ("mode", "sample")


@dataclass
class EvalConfig:
    """``evaluate=<run dir>``: episodes, ``policy`` mode or sample, GIFs, checkpoint; during training:
    ``during_episodes`` episodes every ``every`` agent steps (GIFs of the first ``during_videos``),
    open-loop videos every ``video_every`` updates (0 = off)."""

    episodes: int = 10
    """Episodes of ``evaluate=<run dir>``."""
    policy: str = "mode"
    """Act by the actor's mode, or by a sample of it (DreamerV3), in ``evaluate=`` and during training."""
    videos: int = 1
    """GIFs of the first episodes of ``evaluate=``."""
    checkpoint: str = "last.ckpt"
    """Checkpoint file in <run dir>/checkpoints/ that ``evaluate=`` loads."""
    every: int = 0
    """Agent steps between evaluations during training (0 = none)."""
    during_episodes: int = 5
    """Episodes of each evaluation during training."""
    during_videos: int = 0
    """GIFs of the first episodes of each evaluation during training (0 = none)."""
    video_every: int = 0
    """Updates between open-loop video predictions (0 = none)."""

    def check(self) -> None:
        at_least("episodes", self.episodes, 1)
        at_least("every", self.every, 0, " (0 = no evaluation during training)")
        at_least("during_episodes", self.during_episodes, 1)
        at_least("during_videos", self.during_videos, 0, " (0 = no GIFs)")
        at_least("video_every", self.video_every, 0, " (0 = no videos)")
        if self.policy not in POLICIES:
            raise unknown("policy", self.policy, POLICIES)


@dataclass
class RunConfig:
    """The whole composed config. Component sections are typed by their own registered schemas."""

    env: Any = None
    """Environment option and settings."""
    encoder: Any = None
    """Observation encoder option and settings."""
    decoder: Any = None
    """Observation decoder option and settings."""
    latent: Any = None
    """Stochastic latent option and settings."""
    kl: Any = None
    """KL scheme option and settings."""
    actor_grad: Any = None
    """Actor-gradient estimator option and settings."""
    replay: Any = None
    """Replay option and settings."""
    logger: Any = None
    """Lightning logger (``_target_`` and its arguments), or null."""
    size: SizeConfig = field(default_factory=SizeConfig)
    """Network sizes the component configs refer to."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The world model (Dreamer agents)."""
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    """The actor-critic (Dreamer agents)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Run length, interleaving, devices."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation and videos."""
    agent: str = "dreamer"
    """The registered agent (``python -m registry agent``)."""
    seed: int = 0
    """Seed of weights, environments and replay sampling."""
    run_dir: str = "runs/default"
    """Where the run writes (Hydra's job directory)."""
    resume: str | None = None
    """A run directory to continue from its last checkpoint."""
    resume_from: str | None = None
    """With ``resume``: the checkpoint to continue from (a file in ``checkpoints/`` or a path), else the newest."""
    evaluate: str | None = None
    """A run directory whose checkpoint to evaluate."""


COMPONENT_KINDS = ("env", "encoder", "decoder", "latent", "kl", "actor_grad", "replay")
# Head sections inside model/behavior; only the actor's may be ``auto`` (BehaviorConfig.auto_actor).
HEADS = ("model.reward_head", "model.discount_head", "behavior.critic", "behavior.actor")


def validate(cfg: DictConfig | dict) -> tuple[RunConfig, dict]:
    """Type- and range-check the whole config, one pass before anything is built or written.

    Component sections through their registered schemas (types and ``check`` hooks), the other
    sections through :class:`RunConfig` (whose sections' ``check`` hooks run too), then the
    heads inside model/behavior and the checks that span sections. Returns the typed run config
    and the component sections ``{kind: mapping}``.
    """
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    components = {kind: container.get(kind) for kind in COMPONENT_KINDS}
    typed = {kind: registry.validate(kind, section, path=kind)[1] for kind, section in components.items()}
    plain = {k: v for k, v in container.items() if k not in COMPONENT_KINDS}
    run = registry.core.to_schema(RunConfig, plain, path="")
    for path in HEADS:
        section, key = path.split(".")
        head = getattr(getattr(run, section), key)
        if head is None:
            continue
        if path == "behavior.actor" and isinstance(head, dict) and head.get("name") == "auto":
            errors = []
            options = (run.behavior.auto_actor(discrete=True), run.behavior.auto_actor(discrete=False))
            for name in options:  # the env decides which: the settings must suit one of them
                try:
                    registry.validate("head", {**head, "name": name}, path=path)
                except ConfigError as err:
                    errors.append(err)
            if len(errors) == len(options):
                raise errors[-1]
        else:
            registry.validate("head", head, path=path)
    registry.validate("return_norm", run.behavior.return_norm, path="behavior.return_norm")
    capacity = getattr(typed["replay"], "capacity", None)
    if capacity is not None and capacity // run.train.num_envs < run.train.length:
        raise ConfigError(
            f"replay.capacity: {capacity} steps over {run.train.num_envs} envs cannot hold one window of "
            f"{run.train.length} (valid: capacity >= num_envs * length = {run.train.num_envs * run.train.length})"
        )
    return run, components


def saved_config(run_dir: Path, command: str) -> DictConfig:
    """The config a run saved in ``run_dir``; ``command`` names the caller when ``run_dir`` is not a run."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{command}: {run_dir} is not a run directory (no config.yaml)")
    cfg = OmegaConf.load(saved)
    target = OmegaConf.select(cfg, "logger._target_") or ""
    if target.startswith("recipes.loggers."):  # runs saved before the run plumbing moved to runner/
        cfg.logger._target_ = "runner.loggers." + target.removeprefix("recipes.loggers.")
    return cfg


def run_dir(resume: str | None, evaluate: str | None, day: str, time: str, recipe: str) -> str:
    """Hydra's job directory: a new ``runs/<day>/<time>_<recipe>``, or a subfolder of a resumed/evaluated run."""
    if resume:
        return f"{resume}/resumed/{day}_{time}"
    if evaluate:
        return f"{evaluate}/eval/{day}_{time}"
    return f"runs/{day}/{time}_{recipe}"


def register_schema() -> None:
    """Make ``dreamerkit_schema`` and the ``dk.run_dir`` resolver available to Hydra."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="dreamerkit_schema", node=RunConfig)
    if not OmegaConf.has_resolver("dk.run_dir"):
        OmegaConf.register_new_resolver("dk.run_dir", run_dir)
