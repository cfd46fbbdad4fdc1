"""Shared network pieces: activations and the MLP used by heads, encoders and the RSSM."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from registry import ConfigError

_ACTS = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}
NORM_EPS = 1e-3
"""Epsilon of every LayerNorm: Keras's default, which the official DreamerV2 uses."""


def activation(name: str) -> nn.Module:
    """An activation module by name (elu, relu, silu, tanh, gelu)."""
    try:
        return _ACTS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; valid: {', '.join(_ACTS)}") from None


def dense(in_dim: int, out_dim: int, act: str, norm: bool) -> nn.Sequential:
    """Linear (with bias) -> activation, or Linear (no bias) -> LayerNorm -> activation if ``norm``."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=not norm)]
    if norm:
        layers.append(nn.LayerNorm(out_dim, eps=NORM_EPS))
    layers.append(activation(act))
    return nn.Sequential(*layers)


@dataclass
class MLPConfig:
    """Dense layers shared by the MLP encoder, the MLP decoder and every head."""

    layers: int = 4
    """Hidden dense layers."""
    units: int = 400
    """Units of each hidden layer."""
    act: str = "elu"
    """Activation after each hidden layer (elu, relu, silu, tanh, gelu)."""
    norm: bool = False
    """LayerNorm (and no bias) in each hidden layer; off in the official DreamerV2, on in DreamerV3."""


class MLP(nn.Sequential):
    """``layers`` hidden dense layers of ``units``, then a linear output of ``out_dim`` (if given)."""

    def __init__(self, in_dim: int, out_dim: int | None, layers: int, units: int, act: str = "elu", norm: bool = False):
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers):
            blocks.append(dense(dim, units, act, norm))
            dim = units
        if out_dim is not None:
            blocks.append(nn.Linear(dim, out_dim))
            dim = out_dim
        super().__init__(*blocks)
        self.out_dim = dim
