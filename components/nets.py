"""Shared network pieces: activations and the MLP used by heads, encoders and the RSSM."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from registry import ConfigError, unknown

_ACTS = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    """An activation module by name (elu, relu, silu, tanh, gelu)."""
    check_activation("act", name)
    return _ACTS[name]()


def check_activation(path: str, name: str) -> None:
    """Raise the unknown-choice error for an activation name not in ``_ACTS`` (schemas' ``check``)."""
    if name not in _ACTS:
        raise unknown(path, name, _ACTS)


def dense(in_dim: int, out_dim: int, act: str, norm: bool) -> nn.Sequential:
    """Linear -> optional LayerNorm -> activation (the layer norm is a paper ablation)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=not norm)]
    if norm:
        layers.append(nn.LayerNorm(out_dim))
    layers.append(activation(act))
    return nn.Sequential(*layers)


@dataclass
class MLPConfig:
    """Dense layers: ``layers`` x ``units`` with activation ``act``, LayerNorm if ``norm``.

    Shared by the MLP encoder, the MLP decoder and every head.
    """

    layers: int = 4
    """Hidden layers."""
    units: int = 400
    """Units per hidden layer."""
    act: str = "elu"
    """Activation: elu, relu, silu, tanh or gelu."""
    norm: bool = True
    """LayerNorm after each hidden layer's linear map."""

    def check(self) -> None:
        if self.layers < 0:
            raise ConfigError(f"layers: must be >= 0, got {self.layers}")
        if self.units < 1:
            raise ConfigError(f"units: must be >= 1, got {self.units}")
        check_activation("act", self.act)


class MLP(nn.Sequential):
    """``layers`` hidden dense layers of ``units``, then a linear output of ``out_dim`` (if given)."""

    def __init__(self, in_dim: int, out_dim: int | None, layers: int, units: int, act: str = "elu", norm: bool = True):
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
