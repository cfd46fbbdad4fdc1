"""Shapes and wiring of the network components (the math lives in test_math.py)."""

from __future__ import annotations

import pytest
import torch

from components.decoders import ConvDecoder, ConvDecoderConfig, MultiDecoder, MultiDecoderConfig
from components.encoders import (
    ConvEncoder,
    ConvEncoderConfig,
    MLPEncoder,
    MLPEncoderConfig,
    MultiEncoder,
    MultiEncoderConfig,
)
from components.latents import Categorical, CategoricalConfig, Gaussian, GaussianConfig
from components.rssm import RSSM, RSSMConfig
from registry import ConfigError

SPACE = {"image": (3, 64, 64), "position": (3,), "velocity": (2,)}


def _obs(b=2, t=3):
    return {
        "image": torch.randint(0, 256, (b, t, 3, 64, 64), dtype=torch.uint8),
        "position": torch.randn(b, t, 3),
        "velocity": torch.randn(b, t, 2),
    }


def test_paper_conv_encoder_output_size():
    enc = MultiEncoder(MultiEncoderConfig(), {"image": (1, 64, 64)})
    assert enc.out_dim == 2 * 2 * 8 * 48  # 64 -> 31 -> 14 -> 6 -> 2 with depth 48 * 8 channels


def test_multi_encoder_concatenates_image_and_vectors():
    small = MultiEncoderConfig(conv=ConvEncoderConfig(depth=4), mlp=MLPEncoderConfig(layers=1, units=8))
    enc = MultiEncoder(small, SPACE)
    out = enc(_obs())
    assert out.shape == (2, 3, enc.out_dim) and enc.out_dim == 2 * 2 * 32 + 8


def test_encoders_reject_missing_observation_kinds():
    with pytest.raises(ConfigError, match="mlp needs a vector"):
        MLPEncoder(MLPEncoderConfig(), {"image": (1, 64, 64)})


def test_decoder_reconstructs_every_key_with_unit_gaussian_nll():
    dec = MultiDecoder(MultiDecoderConfig(), 10, SPACE)
    obs = _obs()
    dists = dec(torch.randn(2, 3, 10))
    assert dists["image"].mean.shape == (2, 3, 3, 64, 64) and dists["position"].mean.shape == (2, 3, 3)
    nll = dec.loss(dists, obs)
    assert set(nll) == set(SPACE) and nll["image"].shape == (2, 3)
    target = obs["position"]
    expected = 0.5 * ((target - dists["position"].mean) ** 2).sum(-1) + 1.5 * torch.log(torch.tensor(2 * torch.pi))
    torch.testing.assert_close(nll["position"], expected)


def test_conv_decoder_rejects_sizes_its_kernels_cannot_make():
    with pytest.raises(ConfigError, match="fit 64x64"):
        ConvDecoder(ConvDecoderConfig(), 10, {"image": (1, 32, 32)})
    with pytest.raises(ConfigError, match=r"halves \(40, 40\) images 4 times"):
        ConvDecoder(ConvDecoderConfig(kernels=[4] * 4, pad=True), 10, {"image": (1, 40, 40)})
    with pytest.raises(ConfigError, match=r"with pad: true each must be even.*\[4, 5, 4, 4\]"):
        ConvDecoderConfig(kernels=[4, 5, 4, 4], pad=True).check()


def test_padded_conv_nets_halve_and_double_the_size_exactly():
    """DreamerV3 v1: 64 -> 32 -> 16 -> 8 -> 4 with depth, 2, 4, 8 x depth channels, and back from 4x4."""
    space = {"image": (3, 64, 64)}
    enc = ConvEncoder(ConvEncoderConfig(depth=4, kernels=[4] * 4, norm=True, pad=True), space)
    x = torch.zeros(1, 3, 64, 64)
    sizes = [tuple((x := layer(x)).shape[1:]) for layer in enc.net if isinstance(layer, torch.nn.Conv2d)]
    assert sizes == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4)] and enc.out_dim == 32 * 4 * 4
    dec = ConvDecoder(ConvDecoderConfig(depth=4, kernels=[4] * 4, norm=True, pad=True), 10, space)
    assert dec.start == (32, 4, 4) and dec.linear.out_features == 512
    assert dec(torch.randn(2, 10))["image"].mean.shape == (2, 3, 64, 64)
    small = ConvDecoder(ConvDecoderConfig(depth=4, kernels=[4] * 4, pad=True), 10, {"image": (1, 48, 48)})
    assert small.start == (32, 3, 3)  # any size that halves four times


def test_channel_norm_normalises_each_pixels_channels():
    from components.nets import ChannelNorm

    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]]).reshape(1, 2, 1, 2)  # pixel 0: channels (1, 3); pixel 1: (0, 0)
    out = ChannelNorm(2, eps=1e-3)(x)
    edge = 1 / (1 + 1e-3) ** 0.5  # (x - mean) / sqrt(var + eps) with mean 2, var 1
    torch.testing.assert_close(out, torch.tensor([[-edge, 0.0], [edge, 0.0]]).reshape(1, 2, 1, 2))


@pytest.mark.parametrize("latent", [Categorical(CategoricalConfig(4, 5)), Gaussian(GaussianConfig(6))])
def test_rssm_observe_shapes(latent):
    rssm = RSSM(RSSMConfig(deter=16, hidden=8), latent, action_dim=2, embed_dim=7)
    b, t = 3, 5
    embed, action = torch.randn(b, t, 7), torch.randn(b, t, 2)
    post, prior_params = rssm.observe(embed, action, torch.zeros(b, t, dtype=torch.bool))
    assert post["deter"].shape == (b, t, 16)
    assert post["stoch"].shape == (b, t, latent.size)
    assert post["params"].shape == prior_params.shape == (b, t, latent.params_dim)
    assert rssm.features(post).shape == (b, t, 16 + latent.size)
    # the prior's parameters come from the same h_t as the posterior: img_out of each deter
    torch.testing.assert_close(prior_params, rssm.img_out(post["deter"]))


@pytest.mark.parametrize("v3", [False, True])
def test_channels_last_convs_match_the_contiguous_layout(v3):
    """The conv nets keep NHWC weights for speed; outputs and gradients equal those of NCHW weights
    (also through the padded layers and the per-pixel channel norms of DreamerV3's nets)."""
    space = {"image": (3, 64, 64)}
    torch.manual_seed(0)
    v3_kw = {"kernels": [4] * 4, "norm": True, "pad": True} if v3 else {}
    nets = [
        ConvEncoder(ConvEncoderConfig(depth=4, **v3_kw), space),
        ConvDecoder(ConvDecoderConfig(depth=4, **v3_kw), 10, space),
    ]
    kernels = [p for net in nets for p in net.parameters() if p.dim() == 4]
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)
    obs = {"image": torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8)}
    features = torch.randn(2, 3, 10)

    def run(encoder, decoder):
        loss = encoder(obs).square().sum() + decoder.loss(decoder(features), obs)["image"].sum()
        loss.backward()
        return loss, [p.grad for p in (*encoder.parameters(), *decoder.parameters())]

    loss, grads = run(*nets)
    for net in nets:
        net.zero_grad()
        net.net.to(memory_format=torch.contiguous_format)
    assert not any(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)
    ref_loss, ref_grads = run(*nets)
    torch.testing.assert_close(loss, ref_loss)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-5)
