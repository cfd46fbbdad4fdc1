"""Shared network pieces: activations, the MLP used by heads, encoders and the RSSM, initialisation,
and ``compiled`` (torch.compile with an eager fallback)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from registry import ConfigError, unknown

_ACTS = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}
NORM_EPS = 1e-3
"""Epsilon of every LayerNorm: Keras's default, which the official DreamerV2 uses."""
INITS = ("keras", "dreamerv3", "torch")
log = logging.getLogger(__name__)


def activation(name: str) -> nn.Module:
    """An activation module by name (elu, relu, silu, tanh, gelu)."""
    check_activation("act", name)
    return _ACTS[name]()


def check_activation(path: str, name: str) -> None:
    """Raise the unknown-choice error for an activation name not in ``_ACTS`` (schemas' ``check``)."""
    if name not in _ACTS:
        raise unknown(path, name, _ACTS)


def check_conv(depth: int, kernels: list[int], act: str, pad: bool) -> None:
    """The checks a conv encoder's and decoder's schemas share: depth, kernel sizes (even to pad), activation."""
    if depth < 1:
        raise ConfigError(f"depth: must be >= 1, got {depth}")
    if not kernels or min(kernels) < 1:
        raise ConfigError(f"kernels: must be a non-empty list of sizes >= 1, got {kernels}")
    if pad and any(k % 2 for k in kernels):
        raise ConfigError(f"kernels: with pad: true each must be even (e.g. [4, 4, 4, 4]), got {kernels}")
    check_activation("act", act)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an ``[N, C, H, W]`` map (DreamerV3's conv norm).
    On a channels-last map the permutes are views: the norm runs on contiguous ``[N, H, W, C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def hidden(layer: nn.Module) -> nn.Module:
    """Mark ``layer`` as a hidden layer (a dense or conv layer inside a net, not its output), which
    ``initialize(..., "dreamerv3")`` draws from a truncated normal."""
    layer.hidden_layer = True
    return layer


def dense(in_dim: int, out_dim: int, act: str, norm: bool) -> nn.Sequential:
    """Linear (with bias) -> activation, or Linear (no bias) -> LayerNorm -> activation if ``norm``."""
    layers: list[nn.Module] = [hidden(nn.Linear(in_dim, out_dim, bias=not norm))]
    if norm:
        layers.append(nn.LayerNorm(out_dim, eps=NORM_EPS))
    layers.append(activation(act))
    return nn.Sequential(*layers)


class ConcatLinear(nn.Linear):
    """One Linear standing for several output layers side by side (the official code builds them
    separately, e.g. the mean and std of the actor); each part is initialised as its own layer."""

    def __init__(self, in_dim: int, out_dims: Sequence[int]):
        super().__init__(in_dim, sum(out_dims))
        self.out_dims = list(out_dims)


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

    def check(self) -> None:
        if self.layers < 0:
            raise ConfigError(f"layers: must be >= 0, got {self.layers}")
        if self.units < 1:
            raise ConfigError(f"units: must be >= 1, got {self.units}")
        check_activation("act", self.act)


class MLP(nn.Sequential):
    """``layers`` hidden dense layers of ``units``, then a linear output of ``out_dim`` (if given).

    ``out_dim`` may be a list of sizes: one output layer per entry, concatenated (``ConcatLinear``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | Sequence[int] | None,
        layers: int,
        units: int,
        act: str = "elu",
        norm: bool = False,
    ):
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers):
            blocks.append(dense(dim, units, act, norm))
            dim = units
        if isinstance(out_dim, int):
            blocks.append(nn.Linear(dim, out_dim))
            dim = out_dim
        elif out_dim is not None:
            blocks.append(ConcatLinear(dim, out_dim))
            dim = sum(out_dim)
        super().__init__(*blocks)
        self.out_dim = dim


class BlockLinear(nn.Module):
    """``blocks`` linear layers side by side: block ``g`` maps the shared input ``x`` and its own slice
    ``h[g]`` of ``h`` to its own output ``[..., g, out // blocks]`` (block-diagonal weights in ``h``).
    Initialised as ``blocks`` separate ``nn.Linear`` layers would be (see :func:`components.nets.initialize`)."""

    def __init__(self, shared: int, size: int, out: int, blocks: int, bias: bool = True):
        super().__init__()
        self.blocks, in_dim = blocks, shared + size // blocks
        self.weight = nn.Parameter(torch.empty(blocks, in_dim, out // blocks))
        self.bias = nn.Parameter(torch.empty(blocks, out // blocks)) if bias else None
        bound = 1 / math.sqrt(in_dim)  # torch's nn.Linear default, per block
        nn.init.uniform_(self.weight, -bound, bound)
        if bias:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = h.unflatten(-1, (self.blocks, -1))  # [..., g, size / g]
        x = x.unsqueeze(-2).expand(*h.shape[:-1], x.shape[-1])  # [..., g, shared]
        out = torch.einsum("...gi,gio->...go", torch.cat([x, h], -1), self.weight)
        return out if self.bias is None else out + self.bias


def _trunc_normal_(weight: torch.Tensor, fan_avg: float) -> None:
    """DreamerV3's ``winit: normal, fan: avg``: a normal cut at +-2 std, scaled to variance 1 / fan_avg."""
    std = math.sqrt(1.0 / fan_avg) / 0.87962566103423978  # the std of N(0, 1) cut at +-2
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


@torch.no_grad()
def initialize(module: nn.Module, scheme: str, path: str = "model.init") -> None:
    """Initialise every Linear, BlockLinear (block by block) and (transposed) convolution of ``module``.

    ``keras`` (the official DreamerV2's): Glorot-uniform weights, bound sqrt(6 / (fan_in + fan_out))
    with the kernel's receptive field in both fans, and zero biases. ``dreamerv3`` (v1's ``winit:
    normal, fan: avg``): hidden layers (marked by :func:`hidden`) from a truncated normal of the same
    variance, 1 / fan_avg, the output layers as ``keras``. ``torch``: leave torch's defaults
    (Kaiming-uniform with a = sqrt(5), biases uniform in +-1/sqrt(fan_in)).
    LayerNorms start at scale 1 and shift 0 under all. A layer with an ``outscale`` attribute (the
    two-hot heads' output layers, DreamerV3's ``outscale``) has its initial weights multiplied by it.
    """
    if scheme not in INITS:
        raise unknown(path, scheme, INITS)
    if scheme == "torch":
        return
    for layer in module.modules():
        normal = scheme == "dreamerv3" and getattr(layer, "hidden_layer", False)
        if isinstance(layer, BlockLinear):
            for block in layer.weight:  # [in, out]: Glorot's bound and fan_avg are symmetric in the fans
                if normal:
                    _trunc_normal_(block, sum(block.shape) / 2)
                else:
                    nn.init.xavier_uniform_(block)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
            continue
        if not isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            continue
        if isinstance(layer, ConcatLinear):
            for part in layer.weight.split(layer.out_dims, 0):
                nn.init.xavier_uniform_(part)
        elif normal:
            receptive = layer.weight[0, 0].numel()  # kernel pixels (1 for a Linear)
            _trunc_normal_(layer.weight, (layer.weight.shape[0] + layer.weight.shape[1]) * receptive / 2)
        else:
            nn.init.xavier_uniform_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        layer.weight.mul_(getattr(layer, "outscale", 1.0))


def compiled(fn: Callable) -> Callable:
    """``torch.compile(fn)`` with static shapes that falls back to ``fn`` for good if compiling fails
    (no C++ compiler, an op the compiler cannot take), with one warning."""
    fast = torch.compile(fn, dynamic=False)

    def call(*args, **kwargs):
        nonlocal fast
        if fast is not fn:
            try:
                return fast(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as err:
                name = getattr(fn, "__qualname__", repr(fn))
                log.warning("torch.compile failed for %s, running it eagerly: %s", name, str(err)[:300])
                fast = fn
        return fn(*args, **kwargs)

    return call
