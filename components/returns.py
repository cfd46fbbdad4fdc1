"""Lambda-returns over an imagined trajectory (time-major)."""

from __future__ import annotations

import torch


def lambda_return(
    reward: torch.Tensor, value: torch.Tensor, discount: torch.Tensor, bootstrap: torch.Tensor, lambda_: float
) -> torch.Tensor:
    """TD(lambda) targets, computed backwards from ``bootstrap``.

    All inputs are ``[H, ...]`` except ``bootstrap`` (``[...]``, the value after
    the last step)::

        V_t = reward_t + discount_t * ((1 - lambda) * value_{t+1} + lambda * V_{t+1}),
        V_H = bootstrap   (so value_{H} := bootstrap in the first term)
    """
    next_value = torch.cat([value[1:], bootstrap[None]], 0)
    inputs = reward + discount * next_value * (1 - lambda_)
    returns = []
    last = bootstrap
    for t in reversed(range(reward.shape[0])):
        last = inputs[t] + discount[t] * lambda_ * last
        returns.append(last)
    return torch.stack(returns[::-1], 0)
