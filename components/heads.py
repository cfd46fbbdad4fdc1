"""Prediction heads: an MLP on the model features that outputs a distribution.

Registered heads (used for reward, discount, critic and actor):

    normal        unit-variance Gaussian over a scalar (the paper's MSE heads)
    bernoulli     Bernoulli over a scalar in [0, 1] (the discount head)
    onehot        one-hot categorical with straight-through samples (discrete actions)
    trunc_normal  Normal truncated to [-1, 1] with reparameterised samples (continuous actions, V2)
    bounded_normal  Normal with tanh mean and std in [min_std, max_std], samples unbounded (continuous, V3)
    twohot        categorical over bins in symlog space, two-hot targets (DreamerV3 reward and critic)

Build with ``registry.build("head", cfg, in_dim=..., out_dim=...)``; calling the
head on features ``[..., in_dim]`` returns a torch Distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from components.nets import MLP, MLPConfig
from components.transforms import symexp, symlog, twohot
from registry import ConfigError, register


@dataclass
class TruncNormalConfig(MLPConfig):
    """Actor head for continuous actions; std = 2 * sigmoid(raw / 2) + min_std (official)."""

    min_std: float = 0.1
    """Lower bound of the standard deviation before truncation."""

    def check(self) -> None:
        super().check()
        if self.min_std < 0:
            raise ConfigError(f"min_std: must be >= 0, got {self.min_std}")


@dataclass
class BoundedNormalConfig(MLPConfig):
    """Actor head for continuous actions (DreamerV3 v1); std = (max - min) * sigmoid(raw + 2) + min."""

    min_std: float = 0.1
    """Smallest standard deviation."""
    max_std: float = 1.0
    """Largest standard deviation."""

    def check(self) -> None:
        super().check()
        if not 0 < self.min_std <= self.max_std:
            raise ConfigError(f"min_std, max_std: need 0 < min_std <= max_std, got {self.min_std}, {self.max_std}")


class Head(nn.Module):
    """MLP whose output parameterises a distribution (``make_dist``).

    ``params_dim`` may be a list: separate output layers (as the official mean and std layers).
    """

    def __init__(self, cfg: MLPConfig, in_dim: int, params_dim: int | list[int], make_dist):
        super().__init__()
        self.net = MLP(in_dim, params_dim, cfg.layers, cfg.units, cfg.act, cfg.norm)
        self.make_dist = make_dist

    def forward(self, features: torch.Tensor) -> D.Distribution:
        return self.dist(self.net(features))

    def dist(self, out: torch.Tensor) -> D.Distribution:
        """The distribution that the net's output ``out`` parameterises (outputs kept from an
        earlier ``net`` call give their distribution again without running the net)."""
        return self.make_dist(out.float())


@register("head", "normal", MLPConfig)
def normal(cfg: MLPConfig, in_dim: int, out_dim: int = 1) -> Head:
    """Unit-variance Gaussian: -log_prob is half the squared error plus a constant."""
    if out_dim == 1:
        return Head(cfg, in_dim, 1, lambda p: D.Normal(p.squeeze(-1), 1.0))
    return Head(cfg, in_dim, out_dim, lambda p: D.Independent(D.Normal(p, 1.0), 1))


@register("head", "bernoulli", MLPConfig)
def bernoulli(cfg: MLPConfig, in_dim: int, out_dim: int = 1) -> Head:
    """Bernoulli over a scalar target in [0, 1] (soft targets allowed), e.g. the discount."""
    return Head(cfg, in_dim, 1, lambda p: SoftBernoulli(logits=p.squeeze(-1)))


@dataclass
class OneHotConfig(MLPConfig):
    """Actor head for discrete actions."""

    unimix: float = 0.0
    """Share of a uniform distribution mixed into the action probabilities (DreamerV3: 0.01; 0 = off)."""

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.unimix < 1.0:
            raise ConfigError(f"unimix: must lie in [0, 1), got {self.unimix}")


@register("head", "onehot", OneHotConfig)
def onehot(cfg: OneHotConfig, in_dim: int, out_dim: int) -> Head:
    """One-hot categorical over ``out_dim`` actions; samples carry straight-through gradients."""
    if cfg.unimix == 0:
        return Head(cfg, in_dim, out_dim, lambda p: OneHot(logits=p))

    def make(p: torch.Tensor) -> OneHot:
        probs = (1 - cfg.unimix) * p.softmax(-1) + cfg.unimix / out_dim
        return OneHot(logits=probs.log())

    return Head(cfg, in_dim, out_dim, make)


@register("head", "trunc_normal", TruncNormalConfig)
def trunc_normal(cfg: TruncNormalConfig, in_dim: int, out_dim: int) -> Head:
    """Diagonal Normal truncated to [-1, 1]: mean tanh(raw), std 2*sigmoid(raw/2) + min_std."""

    def make(p: torch.Tensor) -> D.Independent:
        mean, raw_std = p.chunk(2, -1)
        std = 2 * torch.sigmoid(raw_std / 2) + cfg.min_std
        return D.Independent(TruncatedNormal(torch.tanh(mean), std), 1)

    return Head(cfg, in_dim, [out_dim, out_dim], make)


@register("head", "bounded_normal", BoundedNormalConfig)
def bounded_normal(cfg: BoundedNormalConfig, in_dim: int, out_dim: int) -> Head:
    """Diagonal Normal with mean tanh(raw) and std in [min_std, max_std] (official DreamerV3 v1).

    Samples are not bounded: imagination feeds them to the world model as they are and the env
    clips what it executes to [-1, 1] (as the official ``ClipAction`` wrapper).
    """

    def make(p: torch.Tensor) -> D.Independent:
        mean, raw_std = p.chunk(2, -1)
        std = (cfg.max_std - cfg.min_std) * torch.sigmoid(raw_std + 2.0) + cfg.min_std
        return D.Independent(D.Normal(torch.tanh(mean), std), 1)

    return Head(cfg, in_dim, [out_dim, out_dim], make)


class SoftBernoulli(D.Bernoulli):
    """Bernoulli whose log_prob also accepts soft targets in [0, 1] (gamma * (1 - terminal))."""

    def __init__(self, logits: torch.Tensor):
        super().__init__(logits=logits, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(self.logits, value.to(self.logits.dtype), reduction="none")


class OneHot(D.OneHotCategoricalStraightThrough):
    """One-hot categorical whose ``mode`` is the one-hot argmax and ``rsample`` is straight-through.

    ``log_prob(x) = sum(sg(x) * log_softmax(logits))``: the value torch gives for a one-hot ``x``,
    with no gradient into ``x``, as TensorFlow Probability's (it stops the gradient of its labels),
    so a straight-through action passes none through its log-probability (the official ``both``).
    """

    @property
    def mode(self) -> torch.Tensor:
        return F.one_hot(self.logits.argmax(-1), self.logits.shape[-1]).to(self.logits.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value.detach() * self.logits.log_softmax(-1)).sum(-1)


class TruncatedNormal(D.Distribution):
    """Normal(loc, scale) truncated to [low, high]; rsample by the inverse CDF (differentiable).

    Samples are clipped ``clip`` inside the bounds with a straight-through gradient (the official
    ``TruncNormalDist``): the value moves, the gradient is that of the unclipped sample.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0, high: float = 1.0):
        self.loc, self.scale, self.low, self.high = loc, scale, low, high
        self._a = (low - loc) / scale
        self._b = (high - loc) / scale
        self._cdf_a = torch.special.ndtr(self._a)
        self._z = (torch.special.ndtr(self._b) - self._cdf_a).clamp(min=1e-6)
        super().__init__(loc.shape, validate_args=False)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008 (torch.distributions signature)
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
        x = torch.special.ndtri(self._cdf_a + u * self._z) * self.scale + self.loc
        clip = 1e-6
        return x + (x.clamp(self.low + clip, self.high - clip) - x).detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        x = (value - self.loc) / self.scale
        return -0.5 * x**2 - 0.5 * math.log(2 * math.pi) - self.scale.log() - self._z.log()

    def entropy(self) -> torch.Tensor:
        pdf_a, pdf_b = _std_pdf(self._a), _std_pdf(self._b)
        return (
            0.5 * math.log(2 * math.pi * math.e)
            + self.scale.log()
            + self._z.log()
            + (self._a * pdf_a - self._b * pdf_b) / (2 * self._z)
        )

    @property
    def mean(self) -> torch.Tensor:
        return self.loc + self.scale * (_std_pdf(self._a) - _std_pdf(self._b)) / self._z

    @property
    def mode(self) -> torch.Tensor:
        return self.loc.clamp(self.low, self.high)


def _std_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


@dataclass
class TwoHotConfig(MLPConfig):
    """Categorical over ``bins`` values evenly spaced in symlog space (DreamerV3's reward and critic)."""

    bins: int = 255
    """Number of bins."""
    low: float = -20.0
    """Lowest bin, in symlog space (symexp(-20) is about -4.9e8)."""
    high: float = 20.0
    """Highest bin, in symlog space."""
    outscale: float = 0.0
    """Scale of the output layer's initial weights; 0 starts every prediction at 0 (DreamerV3)."""

    def check(self) -> None:
        super().check()
        if self.bins < 2 or not self.low < self.high:
            raise ConfigError(
                f"bins: need at least 2 bins and low < high, got {self.bins} in [{self.low}, {self.high}]"
            )
        if self.outscale < 0:
            raise ConfigError(f"outscale: must be >= 0, got {self.outscale}")


class TwoHotSymlog(D.Distribution):
    """Categorical over ``bins`` (in symlog space) read as a scalar: the DreamerV3 reward and critic.

    ``mean`` is symexp of the expected bin; ``log_prob(y)`` is minus the cross-entropy against
    the two-hot encoding of symlog(y), so the loss is a classification loss at any scale of y.
    """

    arg_constraints: dict = {}

    def __init__(self, logits: torch.Tensor, bins: torch.Tensor):
        self.logits, self.bins = logits, bins
        super().__init__(logits.shape[:-1], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return symexp((self.logits.softmax(-1) * self.bins).sum(-1))

    @property
    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        target = twohot(symlog(value.to(self.logits.dtype)), self.bins)
        return (target * self.logits.log_softmax(-1)).sum(-1)


class TwoHotHead(Head):
    """MLP to ``bins`` logits, read as a :class:`TwoHotSymlog` over its bins."""

    def __init__(self, cfg: TwoHotConfig, in_dim: int):
        super().__init__(cfg, in_dim, cfg.bins, None)
        self.register_buffer("bins", torch.linspace(cfg.low, cfg.high, cfg.bins), persistent=False)
        self.net[-1].outscale = cfg.outscale  # kept by nets.initialize, which runs after the build
        with torch.no_grad():
            self.net[-1].weight.mul_(cfg.outscale)
            self.net[-1].bias.zero_()

    def dist(self, out: torch.Tensor) -> TwoHotSymlog:
        return TwoHotSymlog(out.float(), self.bins)


@register("head", "twohot", TwoHotConfig)
def twohot_head(cfg: TwoHotConfig, in_dim: int, out_dim: int = 1) -> TwoHotHead:
    """Scalar as a categorical over symlog bins: mean symexp(sum p * bins), two-hot cross-entropy loss."""
    return TwoHotHead(cfg, in_dim)
