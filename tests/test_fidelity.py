"""The paper recipes' networks and updates against the official DreamerV2 code (danijar/dreamerv2):
where the layer norms are, biases, Keras initialisation, the GRU, Adam and weight decay, the slow-critic
schedule, the truncated-normal clip, exploration noise and the behaviour step counter."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from components.envs import EnvInfo
from components.heads import TruncatedNormal
from components.nets import ConcatLinear, initialize
from components.rssm import GRUCell
from recipes.config import OptimConfig
from recipes.dreamer import Dreamer, action_noise, adamw
from registry import ConfigError
from runner.train import validate

ATARI = EnvInfo(obs_space={"image": (1, 64, 64)}, action_dim=6, discrete=True, action_repeat=4)
DMC = EnvInfo(obs_space={"image": (3, 64, 64)}, action_dim=1, discrete=False, action_repeat=2)
VECTOR = EnvInfo(obs_space={"state": (4,)}, action_dim=2, discrete=True, action_repeat=1)
ENVS = {
    "dreamerv2_atari": ATARI,
    "dreamerv2_atari_nokl": ATARI,
    "dreamerv2_dmc": DMC,
    "dreamerv1_dmc": DMC,
    "dreamerv2_cartpole": VECTOR,
}


def _dreamer(make_cfg, recipe: str, *overrides: str, env: EnvInfo | None = None) -> Dreamer:
    run, components = validate(make_cfg(f"recipe={recipe}", "size=tiny", *overrides))
    torch.manual_seed(0)
    return Dreamer(run, components, env or ENVS[recipe])


def _layers(module: nn.Module, kinds) -> dict[str, nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, kinds)}


# ---------------------------------------------------------------------------------------------- layer norm, biases


@pytest.mark.parametrize(
    "recipe, overrides, norms",
    [
        ("dreamerv2_atari", (), ["world_model.rssm.cell.norm"]),
        ("dreamerv2_atari_nokl", (), ["world_model.rssm.cell.norm"]),
        ("dreamerv2_dmc", (), ["world_model.rssm.cell.norm"]),
        ("dreamerv2_atari", ("model.rssm.gru_norm=false",), []),  # the paper's "no layer norm" ablation
        ("dreamerv1_dmc", (), []),  # DreamerV1's GRU has no layer norm
    ],
    ids=["atari", "atari_nokl", "dmc", "atari-no-layer-norm", "v1_dmc"],
)
def test_layer_norm_only_inside_the_gru_and_a_bias_everywhere(make_cfg, recipe, overrides, norms):
    """Official nets: LayerNorm only in the GRU (Keras epsilon 1e-3); every Dense, Conv2D and
    Conv2DTranspose, the GRU's included, has a bias."""
    module = _dreamer(make_cfg, recipe, *overrides)
    found = _layers(module, (nn.LayerNorm, nn.GroupNorm))
    assert sorted(found) == norms
    assert all(m.eps == 1e-3 for m in found.values())
    weighted = _layers(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    assert len(weighted) > 10 and all(m.bias is not None for m in weighted.values())
    assert module.world_model.rssm.cell.linear.bias is not None


@pytest.mark.parametrize("overrides", [(), ("encoder=mlp", "decoder=mlp")], ids=["multi", "mlp"])
def test_the_cartpole_recipe_has_layer_norm_in_every_mlp(make_cfg, overrides):
    """Not a paper recipe: CartPole's small model keeps LayerNorm (no bias before it) in the RSSM's
    dense layers, the MLP encoder and decoder and every head, whichever vector encoder is chosen."""
    module = _dreamer(make_cfg, "dreamerv2_cartpole", *overrides)
    norms = _layers(module, nn.LayerNorm)
    for part in ("rssm.img_in", "rssm.img_out", "rssm.obs_out", "encoder", "decoder", "reward_head", "discount_head"):
        assert any(name.startswith(f"world_model.{part}") for name in norms), part
    for part in ("behavior.actor", "behavior.critic", "behavior.slow_critic"):
        assert any(name.startswith(part) for name in norms), part
    assert module.world_model.rssm.img_in[0].bias is None  # the norm's shift replaces the bias


def test_gru_cell_by_hand():
    """parts = W [x, h] + b -> LayerNorm (eps 1e-3) -> reset, candidate, update (bias -1):
    h' = u * tanh(r * c) + (1 - u) * h. With W = 0, b = (1, 2, 3) and h = 0.5: the norm maps the parts
    to (-k, 0, k), k = 1 / sqrt(2/3 + 1e-3), so h' = (1 - sigmoid(k - 1)) * 0.5."""
    cell = GRUCell(1, 1, norm=True).double()
    with torch.no_grad():
        cell.linear.weight.zero_()
        cell.linear.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    out = cell(torch.zeros(1, 1, dtype=torch.float64), torch.full((1, 1), 0.5, dtype=torch.float64))
    k = 1 / math.sqrt(2 / 3 + 1e-3)
    assert out.item() == pytest.approx((1 - 1 / (1 + math.exp(-(k - 1)))) * 0.5, rel=1e-9)


# ---------------------------------------------------------------------------------------------- initialisation


def _glorot_bound(layer: nn.Module) -> float:
    """sqrt(6 / (fan_in + fan_out)) with the kernel's receptive field in both fans (Keras)."""
    if isinstance(layer, nn.Linear):
        return math.sqrt(6 / (layer.in_features + layer.out_features))
    field = layer.kernel_size[0] * layer.kernel_size[1]
    return math.sqrt(6 / (field * (layer.in_channels + layer.out_channels)))


@pytest.mark.parametrize("recipe", ["dreamerv2_atari", "dreamerv2_dmc"])
def test_keras_initialisation_glorot_uniform_and_zero_biases(make_cfg, recipe):
    module = _dreamer(make_cfg, recipe, "size.cnn_depth=16", "size.mlp_units=128")
    layers = _layers(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    # By hand for two layers: the first conv, C -> 16 channels with 4x4 kernels, and the GRU's dense layer.
    channels = ENVS[recipe].obs_space["image"][0]
    conv = module.world_model.encoder.parts["conv"].net[0]
    assert _glorot_bound(conv) == pytest.approx(math.sqrt(6 / (4 * 4 * (channels + 16))))
    gru = module.world_model.rssm.cell.linear
    assert _glorot_bound(gru) == pytest.approx(math.sqrt(6 / (64 + 64 + 3 * 64)))
    for name, layer in layers.items():
        assert torch.all(layer.bias == 0), name
        parts = [(layer.weight, _glorot_bound(layer))]
        if isinstance(layer, ConcatLinear):  # separate official layers (actor mean and std): each its own bound
            parts = [
                (w, math.sqrt(6 / (layer.in_features + n)))
                for w, n in zip(layer.weight.split(layer.out_dims), layer.out_dims)
            ]
        for weight, bound in parts:
            assert weight.abs().max() <= bound, name
            if weight.numel() >= 2000:  # uniform on [-bound, bound]: variance bound^2 / 3, the extremes reached
                assert weight.var().item() == pytest.approx(bound**2 / 3, rel=0.1), name
                assert weight.abs().max() > 0.98 * bound, name
    actor_out = module.behavior.actor.net[-1]
    assert isinstance(actor_out, ConcatLinear) == (recipe == "dreamerv2_dmc")  # trunc_normal: mean and std layers


def test_torch_initialisation_stays_reachable(make_cfg):
    module = _dreamer(make_cfg, "dreamerv2_atari", "model.init=torch")
    gru = module.world_model.rssm.cell.linear
    assert gru.bias.abs().max() > 0  # torch's biases are uniform in +-1/sqrt(fan_in)
    assert gru.weight.abs().max() <= 1 / math.sqrt(gru.in_features) < _glorot_bound(gru)


def test_unknown_init_is_refused(make_cfg):
    with pytest.raises(Exception, match="model.init: unknown 'xavier'; valid: keras, dreamerv3, torch"):
        _dreamer(make_cfg, "dreamerv2_atari", "model.init=xavier")


# ---------------------------------------------------------------------------------------------- Adam, weight decay


def test_adam_steps_as_keras_with_weight_decay_before_the_step():
    """Official (Keras Adam): var *= 1 - wd, then var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    By hand for p = (1, -2), g = (0.5, -0.25) then 0 (the momentum alone), wd 0.1, lr 0.01."""
    p = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = adamw([p], OptimConfig(lr=0.01, eps=1e-5, wd=0.1))
    g = torch.tensor([0.5, -0.25], dtype=torch.float64)
    m, v, expected = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), p.detach().clone()
    for t, grad in enumerate([g, torch.zeros(2, dtype=torch.float64)], 1):
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
        alpha = 0.01 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        expected = 0.9 * expected - alpha * m / (v.sqrt() + 1e-5)
        p.grad = grad
        opt.step()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)


def test_adam_without_keras_eps_is_torchs():
    """keras_eps=false (DreamerV3, optax's place): eps after the bias correction, as torch's AdamW."""
    p, q = (nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64)) for _ in range(2))
    ours = adamw([p], OptimConfig(lr=0.01, eps=1e-3, wd=0.0, keras_eps=False))
    torchs = torch.optim.AdamW([q], lr=0.01, eps=1e-3, weight_decay=0.0)
    for grad in ([0.5, -0.25], [0.1, 0.3]):
        p.grad = q.grad = torch.tensor(grad, dtype=torch.float64)
        ours.step()
        torchs.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0)


def test_every_trained_parameter_is_decayed_and_the_slow_critic_is_not(make_cfg):
    """The official ``wd_pattern`` is ``.*``: every variable of the world model, actor and critic."""
    module = _dreamer(make_cfg, "dreamerv2_atari")
    opts = module.configure_optimizers()
    parts = (module.world_model, module.behavior.actor, module.behavior.critic)
    for opt, part, c in zip(
        opts, parts, (module.model_cfg.opt, module.behavior_cfg.actor_opt, module.behavior_cfg.critic_opt)
    ):
        (group,) = opt.param_groups
        assert {id(p) for p in group["params"]} == {id(p) for p in part.parameters()}
        assert group["lr"] * group["weight_decay"] == pytest.approx(c.wd)
    slow = {id(p) for p in module.behavior.slow_critic.parameters()}
    assert not slow & {id(p) for opt in opts for p in opt.param_groups[0]["params"]}


# ---------------------------------------------------------------------------------------------- sampling, acting


def test_truncated_normal_clip_is_straight_through():
    """Samples above 1 - 1e-6 take that value but keep the gradient of the unclipped sample."""
    loc = torch.tensor([0.9999999] * 64, dtype=torch.float64, requires_grad=True)
    scale = torch.full((64,), 1e-6, dtype=torch.float64)
    torch.manual_seed(0)
    sample = TruncatedNormal(loc, scale).rsample()
    (grad,) = torch.autograd.grad(sample.sum(), loc)
    clipped = sample.detach() == 1 - 1e-6
    assert 10 < clipped.sum() < 60 and sample.max() <= 1 - 1e-6
    # the unclipped inverse-CDF sample from the same uniforms, differentiated by hand through autograd
    torch.manual_seed(0)
    dist = TruncatedNormal(loc, scale)
    u = torch.rand(64, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    raw = torch.special.ndtri(dist._cdf_a + u * dist._z) * scale + loc
    (raw_grad,) = torch.autograd.grad(raw.sum(), loc)
    torch.testing.assert_close(grad, raw_grad)
    assert raw_grad[clipped].abs().min() > 0  # clamping would have given 0 here


def test_exploration_noise_by_hand():
    torch.manual_seed(0)
    n = 40_000
    onehot = torch.zeros(n, 4)
    onehot[:, 0] = 1
    # discrete: resampled from amount / n + (1 - amount) * action = (0.625, 0.125, 0.125, 0.125)
    freq = action_noise(onehot, 0.5, discrete=True).mean(0)
    torch.testing.assert_close(freq, torch.tensor([0.625, 0.125, 0.125, 0.125]), atol=0.01, rtol=0)
    # continuous: N(0.9, 0.3) clipped to [-1, 1]: P(at 1) = 1 - Phi(1/3) = 0.3694
    noisy = action_noise(torch.full((n, 1), 0.9), 0.3, discrete=False)
    assert noisy.max() == 1.0 and (noisy == 1.0).float().mean().item() == pytest.approx(0.3694, abs=0.01)
    assert action_noise(torch.full((n, 1), 0.9), 0.3, discrete=False).min() >= -1


def test_policy_adds_exploration_noise_only_when_exploring(make_cfg):
    module = _dreamer(make_cfg, "dreamerv2_cartpole", "behavior.expl_noise=1.0")
    with torch.no_grad():  # an actor that always picks action 0
        out = module.behavior.actor.net[-1]
        out.weight.zero_()
        out.bias.copy_(torch.tensor([50.0, -50.0]))
    obs = TensorDict({"state": torch.zeros(2000, 4), "is_first": torch.ones(2000, dtype=torch.bool)}, [2000])
    assert module.policy(obs, None, "sample")[0][:, 0].all()
    assert module.policy(obs, None, "mode")[0][:, 0].all()
    assert module.policy(obs, None, "explore")[0][:, 1].mean().item() == pytest.approx(0.5, abs=0.05)


# ---------------------------------------------------------------------------------------------- update counters


class _Experience:
    global_steps = 12_345


def test_update_passes_agent_steps_to_the_actor_gradient_and_counts_behavior_updates(make_cfg, monkeypatch):
    """The official ``both`` schedule reads the environment-step counter; the slow critic counts the
    actor-critic updates (not the world-model-only ones before them)."""
    run, components = validate(make_cfg("recipe=dreamerv2_cartpole", "size=tiny", "train.world_model_pretrain=2"))
    module = Dreamer(run, components, VECTOR)
    module.experience = _Experience()
    seen = {"steps": [], "slow": []}

    def loss(world_model, post, is_terminal, step):
        seen["steps"].append(step)
        zero = torch.zeros(())
        return zero, zero, {}

    monkeypatch.setattr(module.behavior, "loss", loss)
    monkeypatch.setattr(module.behavior, "update_slow_critic", seen["slow"].append)
    monkeypatch.setattr(module, "optimizers", lambda: (None, None, None))
    monkeypatch.setattr(module, "_step", lambda *args: None)
    monkeypatch.setattr(module, "log_update", lambda metrics: None)
    b, t = 2, 3
    batch = TensorDict(
        {
            "state": torch.randn(b, t, 4),
            "action": torch.zeros(b, t, 2),
            "reward": torch.zeros(b, t),
            "is_first": torch.zeros(b, t, dtype=torch.bool),
            "is_terminal": torch.zeros(b, t, dtype=torch.bool),
        },
        [b, t],
    )
    for _ in range(4):
        module.training_step(batch, 0)
    assert seen["steps"] == [12_345, 12_345]  # updates 3 and 4; 1 and 2 train the world model only
    assert seen["slow"] == [1, 2]


def test_block_gru_is_the_gru_with_block_diagonal_recurrent_weights():
    """blocks=2 over deter 4: block g sees all of x and only h[2g:2g+2], and writes the reset,
    candidate and update parts of that slice. Written out as one unblocked GRU, its dense weight
    is the block weights placed into a matrix whose other block's h columns are zero."""
    torch.manual_seed(0)
    blocked, plain = GRUCell(3, 4, norm=True, blocks=2), GRUCell(3, 4, norm=True)
    w, b = blocked.linear.weight.detach(), blocked.linear.bias.detach()  # [2, 3 + 2, 6], [2, 6]
    full_w, full_b = torch.zeros(12, 7), torch.zeros(12)
    for part in range(3):  # reset, candidate, update
        for j in range(4):  # unit j of h belongs to block j // 2, position j % 2 inside it
            g, k, row = j // 2, j % 2, 4 * part + j
            full_w[row, :3] = w[g, :3, 2 * part + k]  # the shared input
            full_w[row, 3 + 2 * g : 5 + 2 * g] = w[g, 3:, 2 * part + k]  # only its own slice of h
            full_b[row] = b[g, 2 * part + k]
    with torch.no_grad():
        plain.linear.weight.copy_(full_w)
        plain.linear.bias.copy_(full_b)
    x, h = torch.randn(5, 3), torch.randn(5, 4)
    torch.testing.assert_close(blocked(x, h), plain(x, h))
    assert sum(p.numel() for p in blocked.linear.parameters()) == 2 * (5 * 6 + 6) < 7 * 12 + 12


def test_block_gru_setting_reaches_the_rssm_and_keras_init_is_per_block(make_cfg):
    cfg = make_cfg("recipe=dreamerv3_dmc_proprio", "size=v3_1m")
    assert cfg.model.rssm.blocks == 8  # the official size1m's block GRU
    assert make_cfg("recipe=dreamerv3_dmc_proprio").model.rssm.blocks == 1  # v1 small: one GRU
    run, _ = validate(make_cfg("recipe=dreamerv3_dmc_proprio", "size=v3_1m", "debug=smoke"))
    assert run.model.rssm.blocks == 8
    with pytest.raises(ConfigError, match=r"blocks: must be >= 1 and divide deter \(512\), got 3"):
        validate(make_cfg("recipe=dreamerv3_dmc_proprio", "size=v3_1m", "model.rssm.blocks=3"))

    cell = GRUCell(64, 512, blocks=8)
    initialize(cell, "keras")
    bound = math.sqrt(6 / (64 + 64 + 192))  # one block: in 64 + 512 / 8, out 3 * 512 / 8
    assert bound * 0.98 < cell.linear.weight.abs().max() <= bound and not cell.linear.bias.any()
