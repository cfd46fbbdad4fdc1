"""Return normalisers: the scale ``S`` that divides the actor's returns and baselines.

    none        S = 1 (DreamerV1/V2)
    percentile  S = max(limit, EMA(P_high) - EMA(P_low)) of the lambda-returns (DreamerV3, v1 code's
                ``perc_ema``): returns spread over more than ``limit`` are scaled down to it, small
                returns are never scaled up, so sparse rewards are not amplified into noise.

A normaliser is ``scale = norm(returns)``: it updates its statistics from the returns
of the current update and gives the scale to use for them. Its statistics are buffers,
so they reach checkpoints with the module's state_dict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from registry import ConfigError, register


@register("return_norm", "none")
class NoNorm(nn.Module):
    """No normalisation: S = 1."""

    def forward(self, returns: torch.Tensor) -> float:
        return 1.0


@dataclass
class PercentileConfig:
    """Percentile range of the returns, smoothed over updates (official v1 retnorm)."""

    decay: float = 0.99
    """EMA decay of the two percentiles per update."""
    low: float = 5.0
    """Lower percentile, in percent."""
    high: float = 95.0
    """Upper percentile, in percent."""
    limit: float = 1.0
    """The scale never falls below this: returns within a range of ``limit`` are not scaled up."""

    def check(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"decay: must lie in [0, 1), got {self.decay}")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ConfigError(f"low, high: need 0 <= low < high <= 100, got {self.low}, {self.high}")
        if self.limit <= 0:
            raise ConfigError(f"limit: must be > 0, got {self.limit}")


@register("return_norm", "percentile", PercentileConfig)
class Percentile(nn.Module):
    """S = max(limit, P_high - P_low), each percentile an EMA over updates that starts at 0."""

    def __init__(self, cfg: PercentileConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @torch.no_grad()
    def forward(self, returns: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        q = torch.tensor([c.low / 100, c.high / 100], device=returns.device)
        low, high = torch.quantile(returns.detach().float().flatten(), q)
        self.low.lerp_(low, 1 - c.decay)
        self.high.lerp_(high, 1 - c.decay)
        return (self.high - self.low).clamp(min=c.limit)
