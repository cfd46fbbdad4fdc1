"""Typed schemas of the agent's own config sections: the world model, the behaviour, their optimizers, sizes.

Components validate their own sections through the registry; the run's sections (train, eval) and
the whole config's validation are in :mod:`runner.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import registry
from components.nets import INITS
from components.rssm import RSSMConfig
from components.transforms import REWARD_TRANSFORMS
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
    keras_eps: bool = True
    """Add ``eps`` where Keras' Adam does (DreamerV1/V2's TensorFlow): to sqrt(v) before the bias
    correction, an effective eps / sqrt(1 - 0.999^t) in torch's formula (32x eps at step 1). False:
    torch's and optax's place, after the correction (DreamerV3)."""

    def check(self) -> None:
        for name in ("lr", "eps", "clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.wd < 1:
            raise ConfigError(f"wd: must lie in [0, 1) (the fraction decayed per step), got {self.wd}")


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
            raise unknown("reward_transform", self.reward_transform, tuple(REWARD_TRANSFORMS))
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
