"""DreamerV3's parts, each pinned to hand-computed values (symlog, two-hot, unimix, free bits,
return normalisation, slow-critic regulariser, learned initial state)."""

from __future__ import annotations

import math

import pytest
import torch

from components.decoders import MSE, SymlogMSE
from components.heads import OneHot, TruncatedNormal, TwoHotSymlog
from components.kl import FreeBits, FreeBitsConfig
from components.rssm import RSSM, RSSMConfig
from components.transforms import symexp, symlog, twohot
from registry import ConfigError, build

BINS = torch.linspace(-20, 20, 255)  # the DreamerV3 bins, in symlog space: 40 / 254 apart, bin 127 at 0


def test_symlog_values_and_symexp_round_trip():
    x = torch.tensor([0.0, math.e - 1, -(math.e**2 - 1), 1e6])
    assert torch.allclose(symlog(x), torch.tensor([0.0, 1.0, -2.0, math.log(1e6 + 1)]))
    y = torch.linspace(-1e4, 1e4, 1001, dtype=torch.float64)
    assert torch.allclose(symexp(symlog(y)), y, rtol=1e-12, atol=1e-9)


def test_twohot_between_bins_at_and_beyond_the_edges():
    spacing = 40 / 254
    w = twohot(torch.tensor([0.1, -0.25, 20.0, 25.0, -20.0, -30.0]), BINS)
    assert torch.allclose(w.sum(-1), torch.ones(6))
    assert w[0, 128] == pytest.approx(0.1 / spacing, abs=1e-5) and w[0, 127] == pytest.approx(
        1 - 0.1 / spacing, abs=1e-5
    )
    # -0.25 lies between bin 125 (-2 * spacing) and bin 126 (-spacing)
    assert w[1, 125] == pytest.approx((0.25 - spacing) / spacing, abs=1e-5)
    assert w[1, 126] == pytest.approx(1 - (0.25 - spacing) / spacing, abs=1e-5)
    for row, edge in ((2, 254), (3, 254), (4, 0), (5, 0)):  # at or beyond an edge: all on the edge bin
        assert w[row, edge] == 1.0 and w[row].count_nonzero() == 1
    assert torch.allclose((w[:2] * BINS).sum(-1), torch.tensor([0.1, -0.25]), atol=1e-6)


def test_twohot_distribution_mean_and_cross_entropy_by_hand():
    bins = torch.tensor([-1.0, 0.0, 1.0])
    dist = TwoHotSymlog(torch.tensor([0.5, 0.25, 0.25]).log(), bins)
    assert dist.mean.item() == pytest.approx(-(math.exp(0.25) - 1))  # symexp(-0.5 + 0 + 0.25)
    # symlog(symexp(0.5)) = 0.5 is half on bin 0.0, half on bin 1.0: 0.5 ln 0.25 + 0.5 ln 0.25
    assert dist.log_prob(symexp(torch.tensor(0.5))).item() == pytest.approx(math.log(0.25))
    assert dist.log_prob(torch.tensor(-1e9)).item() == pytest.approx(math.log(0.5))  # below the bins: bin -1


def test_twohot_head_starts_at_zero_and_learns_by_cross_entropy():
    head = build("head", {"name": "twohot", "layers": 1, "units": 8}, in_dim=4)
    features = torch.randn(6, 4)
    dist = head(features)
    assert torch.allclose(
        dist.mean, torch.zeros(6), atol=1e-6
    )  # zero-initialised output layer: uniform over symmetric bins
    assert torch.allclose(dist.log_prob(torch.randn(6) * 100), torch.full((6,), -math.log(255)))
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    for _ in range(100):
        opt.zero_grad()
        (-head(features).log_prob(torch.full((6,), 300.0)).mean()).backward()
        opt.step()
    assert torch.allclose(head(features).mean, torch.full((6,), 300.0), rtol=0.05)
    with pytest.raises(ConfigError, match="behavior.critic.bins"):
        build("head", {"name": "twohot", "bins": 1}, path="behavior.critic", in_dim=4)


def test_unimix_mixes_one_percent_uniform_into_actor_and_latent():
    # softmax([ln 3, 0, 0, 0]) = [1/2, 1/6, 1/6, 1/6]; 0.99 p + 0.01 / 4
    expected = torch.tensor([0.4975, 0.1675, 0.1675, 0.1675])
    actor = build("head", {"name": "onehot", "layers": 0, "unimix": 0.01}, in_dim=4, out_dim=4)
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.copy_(torch.tensor([math.log(3), 0, 0, 0]))
    assert torch.allclose(actor(torch.randn(2, 4)).probs, expected.expand(2, 4))
    latent = build("latent", {"name": "categorical", "variables": 1, "classes": 4, "unimix": 0.01})
    probs = latent.dist(torch.tensor([[math.log(3), 0.0, 0.0, 0.0]])).base_dist.probs
    assert torch.allclose(probs, expected[None, None])
    with pytest.raises(ConfigError, match="behavior.actor.unimix"):
        build("head", {"name": "onehot", "unimix": 1.0}, path="behavior.actor", in_dim=4, out_dim=4)


def test_bounded_normal_actor_tanh_mean_std_between_bounds_and_unbounded_samples():
    actor = build("head", {"name": "bounded_normal", "layers": 0}, in_dim=2, out_dim=1)
    out = torch.tensor([[0.0, 0.0], [1.0, -50.0], [3.0, 50.0]])  # (raw mean, raw std) per row
    dist = actor.dist(out)
    # mean tanh(raw); std (1 - 0.1) * sigmoid(raw + 2) + 0.1: sigmoid(2) = 0.880797 -> 0.892717
    assert torch.allclose(dist.mean, torch.tensor([[0.0], [math.tanh(1.0)], [math.tanh(3.0)]]))
    assert torch.allclose(dist.stddev, torch.tensor([[0.892717], [0.1], [1.0]]), atol=1e-6)
    torch.manual_seed(0)
    samples = dist.rsample((2000,))[:, 2]  # mean 0.995, std 1: about 1/2 of the samples above 1
    assert 0.4 < (samples > 1).float().mean() < 0.6
    raw = out.clone().requires_grad_()
    actor.dist(raw).rsample().sum().backward()
    assert raw.grad[:, 0].abs().min() > 0  # reparameterised: the sample moves with the mean
    with pytest.raises(ConfigError, match="behavior.actor.min_std, max_std"):
        build("head", {"name": "bounded_normal", "min_std": 2.0}, path="behavior.actor", in_dim=2, out_dim=1)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ((), "bounded_normal"),  # DreamerV3 v1: actor_dist_cont normal
        (("env=gym", "env.task=CartPole-v1"), "onehot"),  # auto still follows a discrete env
        (("behavior.actor_continuous=trunc_normal",), "trunc_normal"),  # the V2 head as an ablation
    ],
)
def test_v3_dmc_actor_auto_picks_bounded_normal_for_continuous_actions(make_cfg, overrides, expected):
    from recipes.behavior import Behavior
    from runner.train import validate

    run, components = validate(make_cfg("recipe=dreamerv3_dmc_proprio", "size=tiny", *overrides))
    discrete = "env=gym" in overrides
    behavior = Behavior(run.behavior, components["actor_grad"], feat_dim=8, action_dim=2, discrete=discrete)
    dist = behavior.actor(torch.zeros(3, 8))
    kinds = {"bounded_normal": torch.distributions.Normal, "trunc_normal": TruncatedNormal, "onehot": OneHot}
    assert isinstance(getattr(dist, "base_dist", dist), kinds[expected])


class SquaredLatent:
    """A stand-in latent whose KL is the squared distance of the parameters: easy to differentiate by hand."""

    @staticmethod
    def kl(post, prior):
        return (post - prior).square().sum(-1)


def test_free_bits_clips_each_term_below_one_nat_and_trains_each_side_with_its_weight():
    scheme = build("kl", {"name": "free_bits"})
    assert isinstance(scheme, FreeBits) and (scheme.cfg.dyn, scheme.cfg.rep, scheme.cfg.free) == (0.5, 0.1, 1.0)
    # two [b, t] values: KL 2.25 (above 1 nat) and 0.25 (below: clipped to 1, no gradient)
    post = torch.tensor([[2.0], [1.0]], requires_grad=True)
    prior = torch.tensor([[0.5], [0.5]], requires_grad=True)
    loss, metrics = scheme(SquaredLatent, post, prior)
    assert loss.item() == pytest.approx((0.5 + 0.1) * (2.25 + 1.0) / 2)
    assert metrics["kl"].item() == pytest.approx((2.25 + 0.25) / 2)
    loss.backward()
    # the prior's gradient comes only from dyn: 0.5 * 1/2 * 2 (prior - post);
    # the posterior's only from rep: 0.1 * 1/2 * 2 (post - prior)
    assert torch.allclose(prior.grad, torch.tensor([[0.5 * (0.5 - 2.0)], [0.0]]))
    assert torch.allclose(post.grad, torch.tensor([[0.1 * (2.0 - 0.5)], [0.0]]))


def test_free_bits_dyn_term_alone_trains_only_the_prior_and_rep_alone_only_the_posterior():
    for dyn, rep, trained, frozen in ((1.0, 0.0, "prior", "post"), (0.0, 1.0, "post", "prior")):
        params = {"post": torch.tensor([[3.0]], requires_grad=True), "prior": torch.tensor([[0.0]], requires_grad=True)}
        loss, _ = FreeBits(FreeBitsConfig(dyn=dyn, rep=rep))(SquaredLatent, params["post"], params["prior"])
        loss.backward()
        assert loss.item() == pytest.approx(9.0)
        assert params[trained].grad.abs().item() == pytest.approx(6.0) and params[frozen].grad.item() == 0.0


def test_percentile_return_norm_ema_and_its_floor_by_hand():
    norm = build("return_norm", {"name": "percentile"})
    returns = torch.arange(101.0)  # P5 = 5, P95 = 95
    # first update: low = 0.01 * 5, high = 0.01 * 95, range 0.9 < 1: the scale stays 1
    assert norm(returns).item() == pytest.approx(1.0)
    assert (norm.low.item(), norm.high.item()) == pytest.approx((0.05, 0.95))
    # second: low = 0.99 * 0.05 + 0.05 = 0.0995, high = 0.99 * 0.95 + 0.95 = 1.8905
    assert norm(returns).item() == pytest.approx(1.8905 - 0.0995)
    resumed = build("return_norm", {"name": "percentile"})
    resumed.load_state_dict(norm.state_dict())  # buffers: the statistics survive a checkpoint
    assert set(norm.state_dict()) == {"low", "high"}
    assert resumed(returns).item() == pytest.approx(norm(returns).item())
    assert build("return_norm", {"name": "none"})(returns) == 1.0
    with pytest.raises(ConfigError, match="behavior.return_norm.decay"):
        build("return_norm", {"name": "percentile", "decay": 1.0}, path="behavior.return_norm")


def test_vector_encoder_symlog_inputs_and_decoder_losses_by_hand():
    encoder = build("encoder", {"name": "mlp", "layers": 0, "symlog": True}, obs_space={"vector": (2,)})
    x = torch.tensor([[math.e - 1, -(math.e**2 - 1)]])
    assert torch.allclose(encoder({"vector": x}), torch.tensor([[1.0, -2.0]]))  # no layers: the net's input
    # symlog_mse: the net predicts symlog(x); squared error in symlog space, the mean is symexp
    dist = SymlogMSE(torch.tensor([[0.0, 1.0]]), 1)
    assert dist.log_prob(torch.tensor([[math.e - 1, 0.0]])).item() == pytest.approx(-2.0)
    assert torch.allclose(dist.mean, torch.tensor([[0.0, math.e - 1]]))
    # the official tol: a squared error below 1e-8 counts as 0, with no gradient; 4e-8 counts
    pred = torch.tensor([[5e-5, 2e-4]], requires_grad=True)  # against a target of 0: errors 2.5e-9 and 4e-8
    loss = -SymlogMSE(pred, 1).log_prob(torch.zeros(1, 2))
    loss.backward()
    assert loss.item() == pytest.approx(4e-8) and pred.grad.tolist() == [[0.0, pytest.approx(4e-4)]]
    # images: plain squared error, summed over the pixels (no 1/2, no constant)
    assert MSE(torch.full((1, 2, 2), 0.5), 3).log_prob(torch.zeros(1, 2, 2)).item() == pytest.approx(-1.0)
    decoder = build("decoder", {"name": "multi", "mlp": {"dist": "symlog_mse"}, "conv": {"dist": "mse"}},
                    feat_dim=4, obs_space={"vector": (2,), "image": (3, 64, 64)})  # fmt: skip
    dists = decoder(torch.zeros(5, 4))
    assert isinstance(dists["vector"], SymlogMSE) and type(dists["image"]) is MSE
    with pytest.raises(ConfigError, match=r"decoder\.mlp\.dist: unknown 'gauss'; valid: normal, mse, symlog_mse"):
        build("decoder", {"name": "multi", "mlp": {"dist": "gauss"}}, feat_dim=4, obs_space={"vector": (2,)})


def test_learned_initial_state_replaces_the_state_at_episode_starts_and_learns():
    latent = build("latent", {"name": "categorical", "variables": 2, "classes": 3})
    assert "initial_deter" not in RSSM(RSSMConfig(deter=6, hidden=5), latent, 2, 4).state_dict()  # V2: zeros
    rssm = RSSM(RSSMConfig(deter=6, hidden=5, learned_initial=True), latent, 2, 4)
    with torch.no_grad():
        rssm.initial_deter.fill_(0.5)
    initial = rssm.initial(3)
    assert torch.allclose(initial["deter"], torch.full((3, 6), math.tanh(0.5)))
    assert torch.equal(initial["stoch"], latent.mode(initial["params"]))  # the prior's mode at that deter
    state = {k: torch.randn_like(v) for k, v in initial.items()}
    embed, action = torch.randn(3, 4), torch.randn(3, 2)
    torch.manual_seed(0)
    post, prior = rssm.obs_step(state, action, embed, torch.tensor([True, True, False]))
    torch.manual_seed(0)
    ref, ref_prior = rssm.obs_step(initial, torch.zeros(3, 2), embed, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(post["deter"][:2], ref["deter"][:2])  # reset rows start from the learned state
    torch.testing.assert_close(prior[:2], ref_prior[:2])
    assert not torch.allclose(post["deter"][2], ref["deter"][2])  # the continuing row keeps its own state
    prior.sum().backward()
    assert rssm.initial_deter.grad is not None and rssm.initial_deter.grad.abs().sum() > 0


def test_action_clip_scales_large_actions_to_the_bound_with_a_scaled_gradient():
    latent = build("latent", {"name": "categorical", "variables": 2, "classes": 3})
    torch.manual_seed(0)
    clipped = RSSM(RSSMConfig(deter=6, hidden=5, action_clip=1.0), latent, 2, 4)
    plain = RSSM(RSSMConfig(deter=6, hidden=5), latent, 2, 4)
    plain.load_state_dict(clipped.state_dict())
    state = {k: torch.randn_like(v) for k, v in plain.initial(1).items()}
    big = torch.tensor([[2.0, -0.5]], requires_grad=True)  # 2 -> 2 * sg(1 / 2) = 1; -0.5 stays
    bound = torch.tensor([[1.0, -0.5]], requires_grad=True)
    deter, params = clipped._advance(state, big)
    ref_deter, ref_params = plain._advance(state, bound)
    torch.testing.assert_close((deter, params), (ref_deter, ref_params))
    (deter.sum() + params.sum()).backward()
    (ref_deter.sum() + ref_params.sum()).backward()
    torch.testing.assert_close(big.grad, bound.grad * torch.tensor([[0.5, 1.0]]))  # d(a * sg(1/|a|))/da = 1/|a|
    with pytest.raises(ConfigError, match="action_clip"):
        RSSMConfig(action_clip=-1.0).check()


def test_twohot_output_layers_start_at_zero_in_a_built_agent(make_cfg):
    """The agent's Keras initialisation runs after the heads are built and must keep outscale 0."""
    from components.envs import EnvInfo
    from recipes.dreamer import Dreamer
    from runner.train import validate

    env = EnvInfo(obs_space={"vector": (5,)}, action_dim=1, discrete=False, action_repeat=2)
    for scale, zero in ((0.0, True), (0.5, False)):
        overrides = [f"++model.reward_head.outscale={scale}", f"++behavior.critic.outscale={scale}"]
        run, components = validate(make_cfg("recipe=dreamerv3_dmc_proprio", "size=tiny", *overrides))
        module = Dreamer(run, components, env)
        for head in (module.world_model.reward_head, module.behavior.critic, module.behavior.slow_critic):
            out = head.net[-1]
            assert (out.weight.abs().max() == 0) == zero and out.bias.abs().max() == 0
        hidden = module.world_model.reward_head.net[0]
        hidden = hidden if isinstance(hidden, torch.nn.Linear) else hidden[0]
        assert hidden.weight.abs().max() > 0  # the other layers are initialised as usual
    features = torch.randn(3, module.world_model.rssm.feat_dim)
    assert module.behavior.critic(features).mean.abs().max() > 0  # outscale 0.5: not all zero


def test_v3_vision_agent_norms_epsilon_conv_stack_and_gru_as_v1(make_cfg):
    """Keras' LayerNorm epsilon, 1e-3, in every norm; v1's padded convs (64x64 down to 4x4 and back), each
    pixel's channels normalised, no bias before a norm, none in the GRU (DreamerV2's GRU keeps one)."""
    from components.envs import EnvInfo
    from components.nets import ChannelNorm
    from recipes.dreamer import Dreamer
    from runner.train import validate

    env = EnvInfo(obs_space={"image": (3, 64, 64)}, action_dim=1, discrete=False, action_repeat=2)
    module = Dreamer(*validate(make_cfg("recipe=dreamerv3_dmc_vision", "size=tiny")), env)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm | torch.nn.GroupNorm)]
    assert sum(isinstance(m, ChannelNorm) for m in norms) == 7  # 4 in the encoder, 3 in the decoder
    assert all(m.eps == 1e-3 for m in norms) and not any(isinstance(m, torch.nn.GroupNorm) for m in norms)
    depth = 8  # size=tiny's cnn_depth
    assert module.world_model.encoder.out_dim == 4 * 4 * 8 * depth
    decoder = module.world_model.decoder.parts["conv"]
    assert decoder.start == (8 * depth, 4, 4)
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert [c.bias is None for c in convs] == [True] * 7 + [False]  # the decoder's output layer has one
    assert module.world_model.rssm.cell.linear.bias is None
    v2 = Dreamer(*validate(make_cfg("recipe=dreamerv2_dmc", "size=tiny")), env)
    assert v2.world_model.rssm.cell.linear.bias is not None


@pytest.mark.parametrize(
    "recipe", ["dreamerv3_dmc_vision", "dreamerv3_dmc_proprio", "dreamerv3_atari100k", "dreamerv3_crafter"]
)
def test_v3_recipes_start_every_replayed_window_from_the_initial_state(make_cfg, recipe):
    """v1 sets is_first on the first step of every sampled window (embodied/replay/generic.py)."""
    from runner.train import validate

    _, components = validate(make_cfg(f"recipe={recipe}"))
    assert components["replay"]["name"] == "uniform" and components["replay"]["reset_start"] is True


@pytest.mark.parametrize(
    ("overrides", "baseline"),
    [
        (("recipe=dreamerv3_dmc_proprio",), True),  # conf/tuning/<recipe>/actor_grad/dynamics.yaml
        (("recipe=dreamerv3_atari100k", "actor_grad=dynamics"), True),
        (("recipe=dreamerv2_dmc",), False),  # V2's backprop objective is the return alone
        (("recipe=dreamerv3_atari100k",), None),  # reinforce: no such setting
    ],
)
def test_v3_recipes_give_the_backprop_actor_its_baseline(make_cfg, overrides, baseline):
    from runner.train import validate

    _, components = validate(make_cfg(*overrides))
    estimator = build("actor_grad", components["actor_grad"])
    assert getattr(getattr(estimator, "cfg", None), "baseline", None) == baseline


@pytest.mark.parametrize(("recipe", "target_scale"), [("dreamerv3_dmc_proprio", 1.0), ("dreamerv2_atari", None)])
def test_continue_head_learns_one_minus_terminal_and_imagines_by_gamma_times_its_mode(make_cfg, recipe, target_scale):
    """v1's cont head: target 1 - terminal, imagination discount gamma * mode (no gradient);
    DreamerV2's discount head: target gamma * (1 - terminal), imagination by its mean."""
    from tensordict import TensorDict

    from components.envs import EnvInfo
    from recipes.dreamer import Dreamer
    from runner.train import validate

    env = EnvInfo(obs_space={"state": (5,)}, action_dim=1, discrete=False, action_repeat=2)
    module = Dreamer(*validate(make_cfg(f"recipe={recipe}", "size=tiny")), env)
    wm, gamma = module.world_model, module.world_model.discount
    terminal = torch.zeros(2, 6, dtype=torch.bool)
    terminal[0, 3] = True
    first = torch.zeros(2, 6, dtype=torch.bool)
    first[:, 0] = True
    batch = TensorDict(
        {
            "state": torch.randn(2, 6, 5),
            "action": torch.rand(2, 6, 1) * 2 - 1,
            "reward": torch.randn(2, 6),
            "is_first": first,
            "is_terminal": terminal,
        },
        [2, 6],
    )
    _, post, metrics = wm.loss(batch)
    scale = gamma if target_scale is None else target_scale
    expected = -wm.discount_head(wm.rssm.features(post)).log_prob(scale * (1.0 - terminal.float())).mean()
    torch.testing.assert_close(metrics["model/discount_loss"], expected.detach())

    out = wm.discount_head.net[-1]
    with torch.no_grad():
        out.weight.zero_()
    feat = torch.randn(2, wm.rssm.feat_dim, requires_grad=True)
    for p, continue_mode in ((0.6, gamma), (0.4, 0.0)):
        with torch.no_grad():
            out.bias.fill_(math.log(p / (1 - p)))
        disc = wm.imagined_discount(feat)
        if target_scale is None:  # the head's mean, with its gradient
            torch.testing.assert_close(disc, torch.full((2,), p))
            assert disc.requires_grad
        else:
            torch.testing.assert_close(disc, torch.full((2,), continue_mode))
            assert not disc.requires_grad


def test_dreamerv3_init_draws_hidden_layers_from_a_truncated_normal_and_outputs_glorot_uniform(make_cfg):
    """v1's ``winit: normal, fan: avg``: N(0, 1) cut at +-2, scaled to variance 1 / fan_avg, in every hidden
    dense, GRU and conv layer; output layers keep Glorot's uniform (the same variance)."""
    from components.encoders import ConvEncoder, ConvEncoderConfig
    from components.nets import MLP, initialize
    from components.rssm import GRUCell
    from runner.train import validate

    torch.manual_seed(0)
    mlp = MLP(512, 4, layers=2, units=512, act="silu", norm=True)
    gru = GRUCell(256, 256, bias=False)
    enc = ConvEncoder(ConvEncoderConfig(depth=32, kernels=[4] * 4, norm=True, pad=True), {"image": (3, 64, 64)})
    nets = torch.nn.ModuleList([mlp, gru, enc])
    hidden = [(mlp[1][0].weight, 512), (gru.linear.weight, (512 + 768) / 2), (enc.net[3].weight, (64 + 32) * 16 / 2)]
    for scheme in ("dreamerv3", "keras"):
        initialize(nets, scheme)
        for weight, fan_avg in hidden:
            std = math.sqrt(1 / fan_avg)
            assert weight.std().item() == pytest.approx(std, rel=0.03)
            if scheme == "dreamerv3":  # beyond Glorot's uniform bound sqrt(3) std, within the cut
                assert math.sqrt(3) * std < weight.abs().max() <= 2 * std / 0.87962566103423978 + 1e-7
            else:
                assert weight.abs().max() <= math.sqrt(3) * std
        assert mlp[-1].weight.abs().max() <= math.sqrt(6 / (512 + 4))  # the output layer: Glorot uniform
    assert validate(make_cfg("recipe=dreamerv3_dmc_vision"))[0].model.init == "dreamerv3"


@pytest.mark.parametrize(("recipe", "policy"), [("dreamerv3_dmc_proprio", "sample"), ("dreamerv2_dmc", "mode")])
def test_v3_recipes_evaluate_by_sampling_the_actor(make_cfg, recipe, policy):
    """v1's ``policy(mode='eval')`` samples the actor; DreamerV2's eval mode takes its mode."""
    from runner.train import validate

    assert validate(make_cfg(f"recipe={recipe}"))[0].eval.policy == policy
