"""Value transforms of DreamerV3: symlog / symexp and two-hot encoding over bins.

    symlog(x) = sign(x) * ln(|x| + 1)        compresses large magnitudes, identity-like near 0
    symexp(x) = sign(x) * (exp(|x|) - 1)     its inverse

``twohot(x, bins)`` spreads each value over its two neighbouring bins so that the
weighted mean of the bins is the value again (values outside the bins go to the edge bin).
``REWARD_TRANSFORMS`` are the world model's choices for its reward targets (``model.reward_transform``).
"""

from __future__ import annotations

import torch


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * ln(|x| + 1)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * (exp(|x|) - 1), the inverse of symlog."""
    return torch.sign(x) * torch.expm1(x.abs())


def twohot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Weights ``[..., K]`` over sorted ``bins [K]``: ``x`` split between the two bins around it.

    The weight of a bin falls linearly with the distance to ``x``, so ``sum(w * bins) == x``
    inside the bins; a value at or beyond an edge puts all its weight on that edge bin.
    """
    x = x.clamp(bins[0], bins[-1])
    above = torch.bucketize(x, bins, right=True).clamp(1, len(bins) - 1)  # first bin above x (the last at the top)
    below = above - 1
    w_above = (x - bins[below]) / (bins[above] - bins[below])
    weights = torch.zeros(*x.shape, len(bins), dtype=x.dtype, device=x.device)
    weights.scatter_(-1, below[..., None], (1 - w_above)[..., None])
    return weights.scatter_(-1, above[..., None], w_above[..., None])


REWARD_TRANSFORMS = {"tanh": torch.tanh, "identity": lambda r: r}
"""The reward head's target transforms by name: tanh squashes Atari's rewards, identity keeps DMC's."""
