"""KL schemes for the world-model loss: where balancing, free nats and the KL scale live.

Each scheme is ``loss, metrics = scheme(latent, post, prior)`` with ``post`` and
``prior`` the latent parameters ``[..., params_dim]``; ``loss`` is already scaled.

Free nats clip the KL from below at ``free``: with ``free_avg`` the mean over the
batch is clipped (official default), otherwise each ``[b, t]`` value is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from registry import ConfigError, register


def _check(cfg) -> None:
    for name in ("free", "scale"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {getattr(cfg, name)}")


def _free(kl: torch.Tensor, free: float, free_avg: bool) -> torch.Tensor:
    """Mean KL with free nats (no gradient below ``free``)."""
    if free_avg:
        return kl.mean().clamp(min=free)
    return kl.clamp(min=free).mean()


@dataclass
class BalancedConfig:
    """KL balancing: ``alpha`` of the gradient trains the prior, ``1 - alpha`` the posterior."""

    alpha: float = 0.8
    """Share of the gradient that trains the prior (1 - alpha trains the posterior)."""
    free: float = 0.0
    """Free nats: the KL below this is not penalised."""
    free_avg: bool = True
    """Clip the batch mean at ``free`` (official) instead of each step's KL."""
    scale: float = 0.1
    """Weight of the KL term in the world-model loss (beta)."""

    def check(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha: must lie in [0, 1], got {self.alpha}")
        _check(self)


@register("kl", "balanced", BalancedConfig)
class Balanced:
    """alpha * KL(sg(post) || prior) + (1 - alpha) * KL(post || sg(prior)) (DreamerV2, eq. 2)."""

    def __init__(self, cfg: BalancedConfig):
        self.cfg = cfg

    def __call__(self, latent, post: torch.Tensor, prior: torch.Tensor):
        c = self.cfg
        to_prior = latent.kl(post.detach(), prior)  # trains the prior only
        to_post = latent.kl(post, prior.detach())  # trains the posterior only
        loss = c.alpha * _free(to_prior, c.free, c.free_avg) + (1 - c.alpha) * _free(to_post, c.free, c.free_avg)
        return c.scale * loss, {"kl": to_prior.detach().mean()}


@dataclass
class PlainConfig:
    """Plain KL(post || prior), both sides trained (DreamerV1; the 'no balancing' ablation)."""

    free: float = 0.0
    """Free nats: the KL below this is not penalised."""
    free_avg: bool = True
    """Clip the batch mean at ``free`` (DreamerV1's code) instead of each [b, t] value (the official
    DreamerV2 code's plain KL, its ``balance: 0.5`` branch: the V2 recipes set false)."""
    scale: float = 0.1
    """Weight of the KL term in the world-model loss (beta)."""

    def check(self) -> None:
        _check(self)


@register("kl", "plain", PlainConfig)
class Plain:
    """KL(post || prior) with gradients into both posterior and prior."""

    def __init__(self, cfg: PlainConfig):
        self.cfg = cfg

    def __call__(self, latent, post: torch.Tensor, prior: torch.Tensor):
        kl = latent.kl(post, prior)
        return self.cfg.scale * _free(kl, self.cfg.free, self.cfg.free_avg), {"kl": kl.detach().mean()}


@dataclass
class FreeBitsConfig:
    """DreamerV3's two KL terms, each with free bits; ``dyn``/``rep`` weigh them (official v1: 0.5 / 0.1)."""

    dyn: float = 0.5
    """Weight of the dynamics term KL(sg(post) || prior), which trains the prior."""
    rep: float = 0.1
    """Weight of the representation term KL(post || sg(prior)), which trains the posterior."""
    free: float = 1.0
    """Free bits: each term is clipped below at this many nats, so below it it has no gradient."""
    free_avg: bool = False
    """Clip the batch mean of each term (true) or each [b, t] value (false, as DreamerV3 does)."""
    scale: float = 1.0
    """Scale of the whole KL loss (DreamerV3 puts its weights in dyn and rep, so 1)."""

    def check(self) -> None:
        if min(self.dyn, self.rep, self.free, self.scale) < 0:
            raise ConfigError(
                f"dyn, rep, free and scale: must be >= 0, got {self.dyn}, {self.rep}, {self.free}, {self.scale}"
            )


@register("kl", "free_bits", FreeBitsConfig)
class FreeBits:
    """dyn * max(free, KL(sg(post) || prior)) + rep * max(free, KL(post || sg(prior))) (DreamerV3, eq. 5)."""

    def __init__(self, cfg: FreeBitsConfig):
        self.cfg = cfg

    def __call__(self, latent, post: torch.Tensor, prior: torch.Tensor):
        c = self.cfg
        dyn = latent.kl(post.detach(), prior)  # trains the prior only
        rep = latent.kl(post, prior.detach())  # trains the posterior only
        loss = c.dyn * _free(dyn, c.free, c.free_avg) + c.rep * _free(rep, c.free, c.free_avg)
        return c.scale * loss, {"kl": dyn.detach().mean()}
