"""Observation encoders: ``embed = encoder(obs)`` over ``[B, T]`` dicts of observations -> ``[B, T, E]``.

    conv   images (every key of shape C x H x W, stacked on channels): strided CNN (paper: depth 48, kernels 4;
           DreamerV3: padded, 64x64 down to 4x4)
    mlp    vectors (every key of shape D, concatenated): MLP
    multi  conv for the image keys and mlp for the vector keys, concatenated (the default)

Built with ``registry.build("encoder", cfg, obs_space={key: shape})``; exposes ``out_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from components.nets import MLP, NORM_EPS, ChannelNorm, MLPConfig, activation, check_conv, hidden
from components.transforms import symlog
from registry import ConfigError, register


def image_keys(obs_space: dict) -> list[str]:
    """Observation keys holding images (C, H, W)."""
    return sorted(k for k, shape in obs_space.items() if len(shape) == 3)


def vector_keys(obs_space: dict) -> list[str]:
    """Observation keys holding flat vectors (D,)."""
    return sorted(k for k, shape in obs_space.items() if len(shape) == 1)


def preprocess_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-0.5, 0.5] (the paper's image scaling)."""
    return image.float() / 255.0 - 0.5


@dataclass
class ConvEncoderConfig:
    """Strided convolutions, doubling the channels after each layer."""

    depth: int = 48
    """Channels of the first layer (doubling per layer)."""
    kernels: list[int] = field(default_factory=lambda: [4, 4, 4, 4])
    """Kernel size of each layer (stride 2)."""
    act: str = "elu"
    """Activation: elu, relu, silu, tanh or gelu."""
    norm: bool = False
    """LayerNorm over the channels of each pixel after each convolution (DreamerV3), without conv biases."""
    pad: bool = False
    """Pad each layer to halve the size exactly (DreamerV3: 64 -> 4); false: no padding (DreamerV2: 64 -> 2).
    Each layer is padded by (kernel - 2) / 2, so the kernels must be even."""

    def check(self) -> None:
        check_conv(self.depth, self.kernels, self.act, self.pad)


class ConvEncoder(nn.Module):
    """CNN over all image keys (stacked on channels), one call for all B*T frames."""

    def __init__(self, cfg: ConvEncoderConfig, obs_space: dict):
        super().__init__()
        self.keys = image_keys(obs_space)
        if not self.keys:
            raise ConfigError(f"encoder: conv needs an image observation; got {obs_space}")
        channels = sum(obs_space[k][0] for k in self.keys)
        size = obs_space[self.keys[0]][1:]
        layers: list[nn.Module] = []
        for i, kernel in enumerate(cfg.kernels):
            out = cfg.depth * 2**i
            padding = (kernel - 2) // 2 if cfg.pad else 0
            layers += [hidden(nn.Conv2d(channels, out, kernel, stride=2, padding=padding, bias=not cfg.norm))]
            if cfg.norm:
                layers.append(ChannelNorm(out, eps=NORM_EPS))
            layers.append(activation(cfg.act))
            channels = out
        # Channels-last (NHWC) weights: oneDNN's and cuDNN's preferred layout; the outputs follow it.
        # 1.3x faster forward and backward of the conv encoder + decoder on a CPU (BENCHMARKS.md).
        self.net = nn.Sequential(*layers, nn.Flatten()).to(memory_format=torch.channels_last)
        with torch.no_grad():
            self.out_dim = self.net(torch.zeros(1, sum(obs_space[k][0] for k in self.keys), *size)).shape[-1]

    def forward(self, obs) -> torch.Tensor:
        x = torch.cat([preprocess_image(obs[k]) for k in self.keys], -3)
        lead = x.shape[:-3]
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(*lead, -1)


@dataclass
class MLPEncoderConfig(MLPConfig):
    """MLP over the vector observations."""

    symlog: bool = False
    """Feed symlog(x) instead of x, so inputs of any scale stay near [-10, 10] (DreamerV3)."""


class MLPEncoder(nn.Module):
    """MLP over all vector keys, concatenated."""

    def __init__(self, cfg: MLPEncoderConfig, obs_space: dict):
        super().__init__()
        self.keys = vector_keys(obs_space)
        if not self.keys:
            raise ConfigError(f"encoder: mlp needs a vector observation; got {obs_space}")
        in_dim = sum(obs_space[k][0] for k in self.keys)
        self.net = MLP(in_dim, None, cfg.layers, cfg.units, cfg.act, cfg.norm)
        self.out_dim = self.net.out_dim
        self.symlog = cfg.symlog

    def forward(self, obs) -> torch.Tensor:
        x = torch.cat([obs[k].float() for k in self.keys], -1)
        return self.net(symlog(x) if self.symlog else x)


@dataclass
class MultiEncoderConfig:
    """Settings of the image (conv) and vector (mlp) parts."""

    conv: ConvEncoderConfig = field(default_factory=ConvEncoderConfig)
    """The conv encoder of the image keys."""
    mlp: MLPEncoderConfig = field(default_factory=MLPEncoderConfig)
    """The MLP encoder of the vector keys."""


class MultiEncoder(nn.Module):
    """Concatenates a conv encoder for image keys and an MLP encoder for vector keys (either may be absent)."""

    def __init__(self, cfg: MultiEncoderConfig, obs_space: dict):
        super().__init__()
        parts = {}
        if image_keys(obs_space):
            parts["conv"] = ConvEncoder(cfg.conv, obs_space)
        if vector_keys(obs_space):
            parts["mlp"] = MLPEncoder(cfg.mlp, obs_space)
        if not parts:
            raise ConfigError(f"encoder: no image (C,H,W) or vector (D,) observations in {obs_space}")
        self.parts = nn.ModuleDict(parts)
        self.out_dim = sum(p.out_dim for p in parts.values())

    def forward(self, obs) -> torch.Tensor:
        return torch.cat([part(obs) for part in self.parts.values()], -1)


register("encoder", "conv", ConvEncoderConfig)(ConvEncoder)
register("encoder", "mlp", MLPEncoderConfig)(MLPEncoder)
register("encoder", "multi", MultiEncoderConfig)(MultiEncoder)
