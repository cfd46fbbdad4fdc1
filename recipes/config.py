"""Typed schemas of the recipe-level config sections (model, behavior, train).

Components validate their own sections through the registry; these cover the
rest, so a misspelt key or wrong type anywhere fails at start-up with its path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.rssm import RSSMConfig


@dataclass
class OptimConfig:
    """Adam with weight decay and gradient-norm clipping (paper: eps 1e-5, clip 100, wd 1e-6)."""

    lr: float = 2e-4
    eps: float = 1e-5
    clip: float = 100.0
    wd: float = 1e-6
    """Weight decay as in the official code: every parameter is multiplied by (1 - wd) before each
    Adam step, not scaled by the learning rate (AdamW's decay of earlier versions = wd * lr here)."""


@dataclass
class ModelConfig:
    """World model: RSSM sizes, heads, which heads train the representation, loss scales."""

    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    reward_head: Any = field(default_factory=lambda: {"name": "normal"})
    discount_head: Any | None = field(default_factory=lambda: {"name": "bernoulli"})
    grad_heads: list[str] = field(default_factory=lambda: ["decoder", "reward", "discount"])
    loss_scales: dict[str, float] = field(default_factory=lambda: {"decoder": 1.0, "reward": 1.0, "discount": 5.0})
    reward_transform: str = "tanh"
    opt: OptimConfig = field(default_factory=OptimConfig)
    init: str = "keras"
    """Initialisation of every network of the agent (world model, actor, critic): keras = Glorot-uniform
    weights and zero biases (the official code's), torch = torch's layer defaults."""


@dataclass
class BehaviorConfig:
    """Actor-critic learned in imagination: horizon, discount, lambda, entropy, slow critic."""

    actor: Any = field(default_factory=lambda: {"name": "auto"})
    critic: Any = field(default_factory=lambda: {"name": "normal"})
    actor_opt: OptimConfig = field(default_factory=lambda: OptimConfig(lr=4e-5))
    critic_opt: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    horizon: int = 15
    discount: float = 0.999
    lambda_: float = 0.95
    ent_scale: float = 1e-3
    slow_critic_every: int = 100
    """The slow critic moves to the critic after actor-critic update 1, 1 + every, 1 + 2 * every, ..."""
    slow_critic_fraction: float = 1.0
    """How far it moves there (1 = copy); the first move is always a copy (official)."""
    expl_noise: float = 0.0
    """Exploration noise on the actions the agent takes while collecting (official ``expl_noise``):
    discrete, the sampled action is replaced by a uniform one with this probability; continuous,
    Gaussian noise of this std, clipped to [-1, 1]. 0 in the official DreamerV2 configs."""


@dataclass
class TrainConfig:
    """Run length, batch shape, interleaving (train_ratio), environments, precision, compilation, devices."""

    steps: int = 50_000_000
    batch: int = 50
    length: int = 50
    train_ratio: float = 156.25
    prefill: int = 200_000
    pretrain: int = 1
    world_model_pretrain: int = 0
    num_envs: int = 1
    async_envs: bool = False
    log_every: int = 100
    checkpoint_every: int = 100_000
    checkpoint_minutes: float = 30.0
    keep_checkpoints: int = 3
    nonfinite: str = "stop"
    precision: str = "auto"
    compile: bool = False
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1


@dataclass
class EvalConfig:
    """``evaluate=<run dir>``: episodes, ``policy`` mode or sample, GIFs, checkpoint; during training:
    ``during_episodes`` episodes every ``every`` agent steps (GIFs of the first ``during_videos``),
    open-loop videos every ``video_every`` updates (0 = off)."""

    episodes: int = 10
    policy: str = "mode"
    videos: int = 1
    checkpoint: str = "last.ckpt"
    every: int = 0
    during_episodes: int = 5
    during_videos: int = 0
    video_every: int = 0


@dataclass
class SizeConfig:
    """Network sizes shared by the components' default configs (referenced as ``${size.x}``)."""

    cnn_depth: int = 48
    mlp_layers: int = 4
    mlp_units: int = 400
    deter: int = 600
    hidden: int = 600
    stoch: int = 32
    classes: int = 32


@dataclass
class RunConfig:
    """The whole composed config. Component sections are typed by their own registered schemas."""

    env: Any = None
    encoder: Any = None
    decoder: Any = None
    latent: Any = None
    kl: Any = None
    actor_grad: Any = None
    replay: Any = None
    logger: Any = None
    size: SizeConfig = field(default_factory=SizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recipe: str = "dreamer"
    seed: int = 0
    run_dir: str = "runs/default"
    resume: str | None = None
    evaluate: str | None = None


COMPONENT_KINDS = ("env", "encoder", "decoder", "latent", "kl", "actor_grad", "replay")


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
