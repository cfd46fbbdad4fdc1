"""Typed schemas of the recipe-level config sections (model, behavior, train).

Components validate their own sections through the registry; these cover the
rest, so a misspelt key or wrong type anywhere fails at start-up with its path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

import registry
from components.nets import INITS
from components.rssm import RSSMConfig
from registry import ConfigError, unknown


def at_least(name: str, value: float, low: float, note: str = "") -> None:
    """Raise ``ConfigError("<name>: must be >= <low>, got <value>")`` for a value below ``low``."""
    if not value >= low:  # also catches NaN
        raise ConfigError(f"{name}: must be >= {low}{note}, got {value}")


def within(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    """Raise ``ConfigError`` unless ``low <= value <= high`` (``low < value`` when ``low_open``)."""
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name}: must lie in {bracket}{low}, {high}], got {value}")


@dataclass
class OptimConfig:
    """Adam with weight decay and gradient-norm clipping (paper: eps 1e-5, clip 100, wd 1e-6)."""

    lr: float = 2e-4
    """Learning rate."""
    eps: float = 1e-5
    """Adam's epsilon."""
    clip: float = 100.0
    """Gradient-norm clip of this part's update."""
    wd: float = 1e-6
    """Weight decay as in the official code: every parameter is multiplied by (1 - wd) before each
    Adam step, not scaled by the learning rate (AdamW's decay of earlier versions = wd * lr here)."""

    def check(self) -> None:
        for name in ("lr", "eps", "clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.wd < 1:
            raise ConfigError(f"wd: must lie in [0, 1) (the fraction decayed per step), got {self.wd}")


REWARD_TRANSFORMS = ("tanh", "identity")
HEAD_NAMES = ("decoder", "reward", "discount")
DISCOUNT_TARGETS = ("discount", "continue")


@dataclass
class ModelConfig:
    """World model: RSSM sizes, heads, which heads train the representation, loss scales."""

    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    """The recurrent dynamics (sizes, activation, norm)."""
    reward_head: Any = field(default_factory=lambda: {"name": "normal"})
    """Reward head: a head option (``name``) and its settings."""
    discount_head: Any | None = field(default_factory=lambda: {"name": "bernoulli"})
    """Discount head (predicts gamma * (1 - terminal)); null for none (episodes end by time limit only)."""
    grad_heads: list[str] = field(default_factory=lambda: ["decoder", "reward", "discount"])
    """Heads whose gradients shape the representation; the others learn on stopped features."""
    loss_scales: dict[str, float] = field(default_factory=lambda: {"decoder": 1.0, "reward": 1.0, "discount": 5.0})
    """Scale of each head's negative log-likelihood in the world-model loss (default 1)."""
    reward_transform: str = "tanh"
    """Applied to the reward targets: tanh (Atari) or identity."""
    discount_target: str = "discount"
    """discount: the head learns gamma * (1 - terminal), imagined by its mean (V1/V2); continue: 1 - terminal (V3).
    A continue head is imagined by gamma times its 0/1 mode, without gradient, as DreamerV3's."""
    opt: OptimConfig = field(default_factory=OptimConfig)
    """The world model's optimizer."""
    init: str = "keras"
    """keras (DreamerV2: Glorot uniform, zero biases), dreamerv3 (hidden layers truncated normal) or torch (defaults).
    Applies to every network of the agent (world model, actor, critic). dreamerv3's hidden layers have Glorot's
    variance and its output layers are keras'."""

    def check(self) -> None:
        if self.reward_transform not in REWARD_TRANSFORMS:
            raise unknown("reward_transform", self.reward_transform, REWARD_TRANSFORMS)
        if self.discount_target not in DISCOUNT_TARGETS:
            raise unknown("discount_target", self.discount_target, DISCOUNT_TARGETS)
        if self.init not in INITS:
            raise unknown("init", self.init, INITS)
        heads = [h for h in HEAD_NAMES if h != "discount" or self.discount_head is not None]
        for name in self.grad_heads:
            if name not in heads:
                raise unknown("grad_heads", name, heads)
        for name in self.loss_scales:  # a scale for an absent head (no discount head) is unused
            if name not in HEAD_NAMES:
                raise unknown("loss_scales", name, HEAD_NAMES)


@dataclass
class BehaviorConfig:
    """Actor-critic learned in imagination: horizon, discount, lambda, entropy, slow critic."""

    actor: Any = field(default_factory=lambda: {"name": "auto"})
    """Actor head; ``auto``: onehot for discrete actions, ``actor_continuous`` for continuous ones."""
    actor_continuous: str = "trunc_normal"
    """The head ``actor.name=auto`` means for continuous actions: trunc_normal (V2) or bounded_normal (V3)."""
    critic: Any = field(default_factory=lambda: {"name": "normal"})
    """Critic head."""
    actor_opt: OptimConfig = field(default_factory=lambda: OptimConfig(lr=4e-5))
    """The actor's optimizer."""
    critic_opt: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    """The critic's optimizer."""
    horizon: int = 15
    """Imagined steps from every replayed posterior state."""
    discount: float = 0.999
    """Discount gamma (also the discount head's target scale)."""
    lambda_: float = 0.95
    """Lambda of the lambda-return."""
    ent_scale: float = 1e-3
    """Weight of the actor's entropy bonus (eta)."""
    slow_critic_every: int = 100
    """The slow critic moves to the critic after actor-critic update 1, 1 + every, 1 + 2 * every, ..."""
    slow_critic_fraction: float = 1.0
    """How far it moves there (1 = copy); the first move is always a copy (official)."""
    expl_noise: float = 0.0
    """Exploration noise on the actions the agent takes while collecting (official ``expl_noise``):
    discrete, the sampled action is replaced by a uniform one with this probability; continuous,
    Gaussian noise of this std, clipped to [-1, 1]. 0 in the official DreamerV2 configs."""
    slow_target: bool = True
    """The lambda-returns bootstrap from the slow critic (V2); false: from the critic itself (V3)."""
    slow_reg: float = 0.0
    """Weight of -log p_critic(slow critic's mean) in the critic loss, pulling it to the slow critic (V3: 1)."""
    return_timing: str = "v2"
    """v2: the target at z_t is V_t = r_t + d_t (...) and the actor learns at t = 0 .. H-2 from V_{t+1};
    v3: R_t = r_{t+1} + d_{t+1} (...), the actor learns at t = 0 .. H-1 from R_t, weights include d_t
    (the time diagram in recipes/behavior.py)."""
    return_norm: Any = field(default_factory=lambda: {"name": "none"})
    """Divides the actor's returns and baseline: ``none`` (V1/V2) or ``percentile`` (V3; components/normalize.py)."""

    def check(self) -> None:
        at_least("horizon", self.horizon, 2, " (the actor needs a target after its action)")
        within("discount", self.discount, 0, 1, low_open=True)
        within("lambda_", self.lambda_, 0, 1)
        at_least("ent_scale", self.ent_scale, 0)
        at_least("slow_critic_every", self.slow_critic_every, 1)
        within("slow_critic_fraction", self.slow_critic_fraction, 0, 1, low_open=True)
        within("expl_noise", self.expl_noise, 0, 1)
        at_least("slow_reg", self.slow_reg, 0, " (0 = off)")
        if self.return_timing not in ("v2", "v3"):
            raise unknown("return_timing", self.return_timing, ("v2", "v3"))
        registry.get("head", self.actor_continuous, path="actor_continuous")

    def auto_actor(self, discrete: bool) -> str:
        """The head ``actor.name=auto`` stands for: onehot for discrete actions, else ``actor_continuous``."""
        return "onehot" if discrete else self.actor_continuous


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
class SizeConfig:
    """Network sizes shared by the components' default configs (referenced as ``${size.x}``)."""

    cnn_depth: int = 48
    """Channels of the first conv layer (doubling per layer)."""
    mlp_layers: int = 4
    """Hidden layers of every MLP (heads, vector encoder and decoder)."""
    mlp_units: int = 400
    """Units per MLP layer."""
    deter: int = 600
    """Size of the RSSM's deterministic state."""
    hidden: int = 600
    """Hidden units of the RSSM's prior and posterior nets."""
    stoch: int = 32
    """Categorical variables (or Gaussian dims) of the stochastic state."""
    classes: int = 32
    """Classes per categorical variable."""
    blocks: int = 1
    """Blocks of the RSSM's GRU (``model.rssm.blocks``); presets without the key get 1."""

    def check(self) -> None:
        for f in dataclasses.fields(self):
            at_least(f.name, getattr(self, f.name), 0 if f.name == "mlp_layers" else 1)


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
    if "recipe" in container and "agent" not in container:  # runs saved before agents were a kind
        container["agent"] = container.pop("recipe")
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
