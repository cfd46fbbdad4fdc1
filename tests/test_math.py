"""The math, pinned against hand-computed values: returns, KL schemes, free nats, straight-through
gradients, actor-gradient estimators, slow critic, truncated normal, RSSM resets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D
from torch import nn

from components.actor_grads import Dynamics, DynamicsConfig, Mix, MixConfig, Reinforce, Schedule
from components.heads import OneHot, TruncatedNormal, bernoulli, normal
from components.kl import Balanced, BalancedConfig, Plain, PlainConfig
from components.latents import Categorical, CategoricalConfig, Gaussian, GaussianConfig
from components.nets import MLPConfig
from components.returns import lambda_return
from components.rssm import RSSM, RSSMConfig
from recipes.behavior import Behavior
from recipes.config import BehaviorConfig
from registry import ConfigError, build
from registry import core as registry_core


@pytest.fixture(autouse=True)
def _registry_without_builtin_imports(monkeypatch):
    """Behavior builds its actor, critic and estimator through the registry, whose first lookup imports
    every built-in module (replay, envs, recipes: slow and irrelevant to the math). The components used
    here are registered by the imports above, so mark the built-ins as loaded for these tests only
    (monkeypatch restores the flag, so other test files still load them)."""
    monkeypatch.setattr(registry_core, "_builtins_loaded", True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add contention (seconds on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- returns


def test_lambda_return_by_hand():
    reward = torch.tensor([1.0, 2.0, 3.0])
    value = torch.tensor([10.0, 20.0, 30.0])
    disc = torch.tensor([0.9, 0.0, 0.5])  # the second step is terminal
    bootstrap = torch.tensor(40.0)
    # V2 = 3 + 0.5 * (0.5 * 40 + 0.5 * 40)           = 23
    # V1 = 2 + 0.0 * (...)                            = 2
    # V0 = 1 + 0.9 * (0.5 * 20 + 0.5 * V1 = 1)        = 1 + 0.9 * 11 = 10.9
    out = lambda_return(reward, value, disc, bootstrap, 0.5)
    torch.testing.assert_close(out, torch.tensor([10.9, 2.0, 23.0]))


def test_lambda_zero_is_one_step_td_and_one_is_monte_carlo():
    reward = torch.tensor([1.0, 2.0, 3.0])
    value = torch.tensor([10.0, 20.0, 30.0])
    disc = torch.tensor([0.9, 0.8, 0.5])
    bootstrap = torch.tensor(40.0)
    td = lambda_return(reward, value, disc, bootstrap, 0.0)
    torch.testing.assert_close(td, torch.tensor([1 + 0.9 * 20, 2 + 0.8 * 30, 3 + 0.5 * 40]))
    mc = lambda_return(reward, value, disc, bootstrap, 1.0)
    v2 = 3 + 0.5 * 40
    v1 = 2 + 0.8 * v2
    torch.testing.assert_close(mc, torch.tensor([1 + 0.9 * v1, v1, v2]))


def test_lambda_return_keeps_batch_dimensions():
    out = lambda_return(torch.ones(4, 3), torch.zeros(4, 3), torch.ones(4, 3), torch.zeros(3), 1.0)
    torch.testing.assert_close(out[:, 0], torch.tensor([4.0, 3.0, 2.0, 1.0]))


def test_lambda_return_batch_by_hand_and_first_value_unused():
    # column 0 is the example above; column 1 is terminal at its last step, so its bootstrap is ignored
    reward = torch.tensor([[1.0, 0.5], [2.0, -1.0], [3.0, 2.0]])
    value = torch.tensor([[10.0, 7.0], [20.0, 3.0], [30.0, 5.0]])
    disc = torch.tensor([[0.9, 0.5], [0.0, 1.0], [0.5, 0.0]])
    bootstrap = torch.tensor([40.0, 100.0])
    # column 1: V2 = 2 + 0 = 2;  V1 = -1 + 1.0 * (0.5 * 5 + 0.5 * 2) = 2.5;
    #           V0 = 0.5 + 0.5 * (0.5 * 3 + 0.5 * 2.5) = 1.875
    expected = torch.tensor([[10.9, 1.875], [2.0, 2.5], [23.0, 2.0]])
    torch.testing.assert_close(lambda_return(reward, value, disc, bootstrap, 0.5), expected)
    value[0] = -1e3  # v(z_0) never enters the targets: only value_{t+1} does
    torch.testing.assert_close(lambda_return(reward, value, disc, bootstrap, 0.5), expected)


# ---------------------------------------------------------------------------------------------- KL


def _categorical_kl(p_logits, q_logits):
    """KL(p || q) for one-hot categoricals summed over variables, by the textbook formula."""
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    return (p * (p.log() - q.log())).sum((-1, -2))


def _params():
    torch.manual_seed(0)
    post = torch.randn(3, 2 * 4, requires_grad=True)
    prior = torch.randn(3, 2 * 4, requires_grad=True)
    return post, prior


LATENT = Categorical(CategoricalConfig(variables=2, classes=4))


def test_balanced_kl_value_is_the_kl():
    post, prior = _params()
    loss, metrics = Balanced(BalancedConfig(alpha=0.8, scale=0.5))(LATENT, post, prior)
    kl = _categorical_kl(post.view(3, 2, 4), prior.view(3, 2, 4))
    torch.testing.assert_close(loss, 0.5 * kl.mean())
    torch.testing.assert_close(metrics["kl"], kl.mean())


@pytest.mark.parametrize("alpha", [0.8, 0.3])
def test_balanced_kl_sends_alpha_to_the_prior_and_the_rest_to_the_posterior(alpha):
    post, prior = _params()
    loss, _ = Balanced(BalancedConfig(alpha=alpha, scale=1.0))(LATENT, post, prior)
    g_post, g_prior = torch.autograd.grad(loss, (post, prior))
    ref_post, ref_prior = _params()
    kl = _categorical_kl(ref_post.view(3, 2, 4), ref_prior.view(3, 2, 4)).mean()
    r_post, r_prior = torch.autograd.grad(kl, (ref_post, ref_prior))
    torch.testing.assert_close(g_prior, alpha * r_prior)
    torch.testing.assert_close(g_post, (1 - alpha) * r_post)


@pytest.mark.parametrize("unimix", [0.0, 0.01])
def test_categorical_kl_matches_torch_value_and_gradients(unimix):
    """The latent's own KL (no masked writes) against torch's kl_divergence of its distributions."""
    latent = Categorical(CategoricalConfig(variables=2, classes=4, unimix=unimix))
    post, prior = _params()
    ours = latent.kl(post, prior)
    ref = D.kl_divergence(latent.dist(post), latent.dist(prior))
    assert ours.shape == ref.shape == (3,)
    torch.testing.assert_close(ours, ref)
    for g, r in zip(torch.autograd.grad(ours.sum(), (post, prior)), torch.autograd.grad(ref.sum(), (post, prior))):
        torch.testing.assert_close(g, r)


def test_plain_kl_trains_both_sides_fully():
    post, prior = _params()
    loss, _ = Plain(PlainConfig(scale=1.0))(LATENT, post, prior)
    g_post, g_prior = torch.autograd.grad(loss, (post, prior))
    ref_post, ref_prior = _params()
    kl = _categorical_kl(ref_post.view(3, 2, 4), ref_prior.view(3, 2, 4)).mean()
    r_post, r_prior = torch.autograd.grad(kl, (ref_post, ref_prior))
    torch.testing.assert_close(g_post, r_post)
    torch.testing.assert_close(g_prior, r_prior)


@pytest.mark.parametrize(
    "std_act, std",
    [
        ("sigmoid2", lambda raw: 2 / (1 + torch.exp(-raw / 2)) + 0.1),  # official DreamerV2
        ("softplus", lambda raw: torch.log1p(torch.exp(raw)) + 0.1),  # DreamerV1
    ],
)
def test_gaussian_latent_kl_closed_form(std_act, std):
    latent = Gaussian(GaussianConfig(size=2, min_std=0.1, std_act=std_act))
    post = torch.tensor([[0.5, -1.0, 0.2, 0.3]])
    prior = torch.tensor([[0.0, 1.0, -0.4, 1.0]])
    m1, s1, m2, s2 = post[0, :2], std(post[0, 2:]), prior[0, :2], std(prior[0, 2:])
    expected = (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum()
    torch.testing.assert_close(latent.kl(post, prior)[0], expected)
    # the std itself, by hand at raw 0: sigmoid2 gives 2 * 1/2 + 0.1, softplus log 2 + 0.1
    zero_std = latent.dist(torch.zeros(1, 4)).base_dist.scale[0, 0].item()
    assert zero_std == pytest.approx({"sigmoid2": 1.1, "softplus": math.log(2) + 0.1}[std_act])


# ---------------------------------------------------------------------------------------------- free nats


def test_free_nats_averaged_clip_the_batch_mean():
    post, prior = _params()
    kl = _categorical_kl(post.view(3, 2, 4), prior.view(3, 2, 4)).mean().item()
    high = Plain(PlainConfig(free=kl + 1.0, free_avg=True, scale=1.0))
    loss, _ = high(LATENT, post, prior)
    assert loss.item() == pytest.approx(kl + 1.0)
    assert all(g.abs().max() == 0 for g in torch.autograd.grad(loss, (post, prior)))
    low = Plain(PlainConfig(free=kl - 1e-3, free_avg=True, scale=1.0))
    loss, _ = low(LATENT, post, prior)
    assert loss.item() == pytest.approx(kl) and torch.autograd.grad(loss, post)[0].abs().max() > 0


def test_free_nats_per_element_clip_each_value():
    post, prior = _params()
    per = _categorical_kl(post.view(3, 2, 4), prior.view(3, 2, 4)).detach()
    free = per.median().item()  # one element below, one at, one above
    loss, _ = Plain(PlainConfig(free=free, free_avg=False, scale=1.0))(LATENT, post, prior)
    torch.testing.assert_close(loss, per.clamp(min=free).mean())
    grad = torch.autograd.grad(loss, post)[0]
    below = per < free
    assert grad[below].abs().max() == 0 and grad[per > free].abs().max() > 0


def test_free_nats_clip_both_sides_of_the_balanced_kl():
    post, prior = _params()
    kl = _categorical_kl(post.view(3, 2, 4), prior.view(3, 2, 4)).detach()
    free = kl.mean().item() + 0.5
    loss, _ = Balanced(BalancedConfig(alpha=0.8, free=free, free_avg=True, scale=0.1))(LATENT, post, prior)
    assert loss.item() == pytest.approx(0.1 * (0.8 * free + 0.2 * free))
    assert all(g.abs().max() == 0 for g in torch.autograd.grad(loss, (post, prior)))
    # per element: the element with the largest KL is the only one above ``free`` and the only one trained
    free = (kl.sort().values[-2] + kl.sort().values[-1]).item() / 2
    loss, _ = Balanced(BalancedConfig(alpha=0.8, free=free, free_avg=False, scale=1.0))(LATENT, post, prior)
    torch.testing.assert_close(loss, kl.clamp(min=free).mean())
    g_post, g_prior = torch.autograd.grad(loss, (post, prior))
    top = kl.argmax()
    for g in (g_post, g_prior):
        assert g[top].abs().max() > 0
        assert g[torch.arange(3) != top].abs().max() == 0


# ---------------------------------------------------------------------------------------------- straight-through


@pytest.mark.parametrize("unimix", [0.0, 0.1])
def test_categorical_sample_is_one_hot_with_straight_through_gradient(unimix):
    torch.manual_seed(1)
    logits = torch.randn(5, 3 * 4, requires_grad=True)
    latent = Categorical(CategoricalConfig(variables=3, classes=4, unimix=unimix))
    sample = latent.sample(logits)
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(sample.view(5, 3, 4).sum(-1) == 1)
    w = torch.randn(5, 12)
    grad = torch.autograd.grad((sample * w).sum(), logits)[0]
    ref_logits = logits.detach().clone().requires_grad_()
    probs = (1 - unimix) * ref_logits.view(5, 3, 4).softmax(-1) + unimix / 4  # uniform mix over 4 classes
    ref = torch.autograd.grad((probs.view(5, 12) * w).sum(), ref_logits)[0]
    torch.testing.assert_close(grad, ref)


def test_categorical_sample_frequencies_match_the_distribution():
    """The Gumbel-max sampler draws each class with its softmax probability (unimix applied)."""
    torch.manual_seed(2)
    latent = Categorical(CategoricalConfig(variables=2, classes=4, unimix=0.1))
    params = torch.tensor([[2.0, 0.0, -1.0, 0.5, -3.0, 1.0, 1.0, 0.0]])
    n = 40_000
    freq = latent.sample(params.expand(n, -1)).view(n, 2, 4).mean(0)
    probs = latent.dist(params).base_dist.probs[0]
    assert torch.allclose(freq, probs, atol=5 * (0.25 / n) ** 0.5), (freq, probs)


def test_unit_normal_log_prob_and_gradient_match_torch():
    from components.decoders import UnitNormal

    mean = torch.randn(2, 3, 3, 8, 8, requires_grad=True)
    x = torch.randn(2, 3, 3, 8, 8)
    ours = UnitNormal(mean, 3).log_prob(x)
    ref = torch.distributions.Independent(torch.distributions.Normal(mean, 1.0), 3).log_prob(x)
    torch.testing.assert_close(ours, ref)
    (g1,) = torch.autograd.grad(ours.sum(), mean)
    (g2,) = torch.autograd.grad(ref.sum(), mean)
    torch.testing.assert_close(g1, g2)


# ---------------------------------------------------------------------------------------------- actor gradients


class TinyWorldModel(torch.nn.Module):
    """The pieces of a world model that imagination uses, at toy sizes."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.rssm = RSSM(RSSMConfig(deter=6, hidden=5), Categorical(CategoricalConfig(2, 3)), action_dim, 4)
        self.reward_head = _head("normal", self.rssm.feat_dim)
        self.discount_head = _head("bernoulli", self.rssm.feat_dim)

    def imagined_discount(self, feat):  # a discount head (DreamerV2's): used by its mean
        return self.discount_head(feat).mean


def _head(name, in_dim, out_dim=1):
    return {"normal": normal, "bernoulli": bernoulli}[name](MLPConfig(layers=1, units=8), in_dim, out_dim)


def _behavior(actor_grad, discrete=True, action_dim=3, **kw):
    torch.manual_seed(0)
    wm = TinyWorldModel(action_dim)
    cfg = BehaviorConfig(
        actor={"name": "onehot" if discrete else "trunc_normal", "layers": 1, "units": 8},
        critic={"name": "normal", "layers": 1, "units": 8},
        horizon=4,
        **kw,
    )
    beh = Behavior(cfg, actor_grad, wm.rssm.feat_dim, action_dim, discrete)
    post = {
        "deter": torch.randn(2, 3, 6),
        "stoch": torch.nn.functional.one_hot(torch.randint(3, (2, 3, 2)), 3).float().view(2, 3, 6),
        "params": torch.randn(2, 3, 6),
    }
    return wm, beh, post


def _actor_grads(actor_grad, discrete=True, seed=0):
    wm, beh, post = _behavior(actor_grad, discrete)
    torch.manual_seed(seed)
    actor_loss, _, _ = beh.loss(wm, post, torch.zeros(2, 3), step=0)
    actor_loss.backward()
    return wm, beh


def test_reinforce_reaches_the_actor_but_never_the_world_model():
    wm, beh = _actor_grads({"name": "reinforce"})
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in beh.actor.parameters())
    assert all(p.grad is None for p in wm.parameters())
    assert all(p.grad is None for p in beh.critic.parameters())
    assert all(p.grad is None for p in beh.slow_critic.parameters())
    # the world model is frozen only for the duration of imagination: it trains again afterwards
    assert all(p.requires_grad for p in wm.parameters())


def test_reinforce_gradient_comes_only_from_log_probabilities():
    """With REINFORCE the advantages are constants and the log-probabilities are taken of detached
    actions under a policy of detached features: the actor loss has no path back into the imagined
    states (their straight-through / reparameterised graph is unused)."""
    wm, beh, post = _behavior({"name": "reinforce"})
    torch.manual_seed(0)
    seq_feat = []
    orig = beh.imagine

    def spy(world_model, start):
        seq = orig(world_model, start)
        seq_feat.append(seq["feat"])
        return seq

    beh.imagine = spy
    actor_loss, _, _ = beh.loss(wm, post, torch.zeros(2, 3), step=0)
    feat = seq_feat[0]
    (g,) = torch.autograd.grad(actor_loss, feat, allow_unused=True, retain_graph=True)
    assert g is None or g.abs().max() == 0  # no path from the actor loss back into the imagined states


def test_dynamics_backprop_flows_through_the_model_into_the_actor():
    wm, beh = _actor_grads({"name": "dynamics"}, discrete=False)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in beh.actor.parameters())
    assert all(p.grad is None for p in wm.parameters())  # frozen during imagination
    # the same loss with the reward head's output scaled changes the actor gradient: it flows through it
    wm2, beh2, post = _behavior({"name": "dynamics"}, discrete=False)
    with torch.no_grad():
        wm2.reward_head.net[-1].weight.mul_(5.0)
    torch.manual_seed(0)
    beh2.loss(wm2, post, torch.zeros(2, 3), step=0)[0].backward()
    g1 = torch.cat([p.grad.flatten() for p in beh.actor.parameters()])
    g2 = torch.cat([p.grad.flatten() for p in beh2.actor.parameters()])
    assert not torch.allclose(g1, g2)


def test_dynamics_backprop_with_straight_through_onehot_actions():
    wm, beh = _actor_grads({"name": "dynamics"}, discrete=True)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in beh.actor.parameters())
    assert all(p.grad is None for p in wm.parameters())
    # the actor sees detached features, so its gradient can only come through the sampled one-hot actions
    # (straight-through) and the dynamics: scaling the reward head changes it
    wm2, beh2, post = _behavior({"name": "dynamics"}, discrete=True)
    with torch.no_grad():
        wm2.reward_head.net[-1].weight.mul_(5.0)
    torch.manual_seed(0)
    beh2.loss(wm2, post, torch.zeros(2, 3), step=0)[0].backward()
    g1 = torch.cat([p.grad.flatten() for p in beh.actor.parameters()])
    g2 = torch.cat([p.grad.flatten() for p in beh2.actor.parameters()])
    assert not torch.allclose(g1, g2)


@pytest.mark.parametrize("discrete", [False, True])
def test_the_actor_sees_stopped_features_so_dynamics_gradients_arrive_only_through_its_actions(discrete):
    """pi(.|sg(z_t)) as in the paper: the imagined features that reach the actor carry no gradient,
    while the trajectory itself does (the actions are reparameterised / straight-through)."""
    wm, beh, post = _behavior({"name": "dynamics"}, discrete=discrete)
    seen = []
    beh.actor.net.register_forward_pre_hook(lambda module, args: seen.append(args[0].requires_grad))
    feats = []
    orig = beh.imagine
    beh.imagine = lambda world_model, start: feats.append(orig(world_model, start)) or feats[-1]
    beh.loss(wm, post, torch.zeros(2, 3), step=0)
    assert len(seen) >= beh.cfg.horizon and not any(seen)
    assert feats[0]["feat"][1:].requires_grad


@pytest.mark.parametrize("discrete", [False, True])
def test_the_actor_loss_reads_the_policy_the_actor_imagined_with(discrete):
    """The actor loss takes pi(.|z_t), t = 0 .. H-2, from the outputs kept by imagination: the same
    distribution as the actor run again over the detached features z_0 .. z_{H-2}."""
    wm, beh, post = _behavior({"name": "reinforce"}, discrete=discrete)
    seqs, policies = [], []
    imagine, estimator = beh.imagine, beh.actor_grad
    beh.imagine = lambda world_model, start: seqs.append(imagine(world_model, start)) or seqs[-1]
    beh.actor_grad = lambda policy, *args: policies.append(policy) or estimator(policy, *args)
    beh.loss(wm, post, torch.zeros(2, 3), step=0)
    (seq,), (kept,) = seqs, policies
    again = beh.actor(seq["feat"][:-2].detach())
    actions = seq["action"][1:-1]  # a_{t+1} ~ pi(.|z_t)
    assert kept.batch_shape == again.batch_shape == (beh.cfg.horizon - 1, 6)
    torch.testing.assert_close(kept.log_prob(actions), again.log_prob(actions))
    torch.testing.assert_close(kept.entropy(), again.entropy())


# A hand-checkable imagination: the heads are replaced by tables indexed by imagined time t = 0..H
# (H = 3), so every target, weight and loss below is written out by hand.


class _TableHead(nn.Module):
    """Normal whose mean is ``table[t]`` for time-major features ``[T, N, F]``; remembers its means."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.tensor(table))
        self.bias = nn.Parameter(torch.zeros(()))  # a parameter that must never receive a gradient
        self.means = []

    def forward(self, feat):
        # ``0 * feat`` keeps the output on the imagined trajectory's graph without changing its value
        mean = self.table[: feat.shape[0], None] + self.bias + 0 * feat.sum(-1)
        self.means.append(mean)
        return D.Normal(mean, 1.0)


class _UniformActor(nn.Module):
    """One-hot policy over 3 actions with uniform logits: log pi(a) = -log 3 and entropy = log 3.
    Behavior calls an actor as a head: ``net`` to its outputs, ``dist`` of those outputs."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))

    def net(self, feat):
        return self.logits.expand(*feat.shape[:-1], 3)

    def dist(self, out):
        return OneHot(logits=out)


class _TableWorldModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.rssm = RSSM(RSSMConfig(deter=6, hidden=5), Categorical(CategoricalConfig(2, 3)), 3, 4)
        self.reward_head = _TableHead([1.0, 2.0, 3.0, 4.0])
        self.discount_head = _TableHead([0.5, 0.9, 0.8, 0.7])  # d_0 is replaced by gamma * (1 - is_terminal)

    def imagined_discount(self, feat):
        return self.discount_head(feat).mean


def _table_behavior(actor_grad, ent_scale):
    torch.manual_seed(0)
    wm = _TableWorldModel()
    cfg = BehaviorConfig(
        actor={"name": "onehot", "layers": 1, "units": 8},
        critic={"name": "normal", "layers": 1, "units": 8},
        horizon=3,
        discount=0.99,
        lambda_=0.5,
        ent_scale=ent_scale,
    )
    beh = Behavior(cfg, actor_grad, wm.rssm.feat_dim, 3, True)
    beh.actor = _UniformActor()
    beh.critic = _TableHead([0.0, 0.0, 0.0])  # predicts 0: -log p(V) = V^2 / 2 + log(2 pi) / 2
    beh.slow_critic = _TableHead([10.0, 20.0, 30.0, 40.0]).requires_grad_(False)
    post = {  # two start states (B=1, T=2); the second one is terminal
        "deter": torch.randn(1, 2, 6),
        "stoch": torch.nn.functional.one_hot(torch.randint(3, (1, 2, 2)), 3).float().view(1, 2, 6),
        "params": torch.randn(1, 2, 6),
    }
    return wm, beh, post, torch.tensor([[0.0, 1.0]])


# By hand, lambda = 0.5, r = (1, 2, 3), v = (10, 20, 30), bootstrap v_3 = 40, d = (0.99 | 0, 0.9, 0.8):
#   V2 = 3 + 0.8 * (0.5 * 40 + 0.5 * 40)        = 35
#   V1 = 2 + 0.9 * (0.5 * 30 + 0.5 * 35)        = 31.25
#   V0 = 1 + 0.99 * (0.5 * 20 + 0.5 * 31.25)    = 26.36875   (start 0)
#   V0 = 1 + 0                                  = 1          (start 1, terminal)
# weights w_t = prod_{k<t} d_k: (1, 0.99, 0.891) and (1, 0, 0).
_TARGET = [[26.36875, 1.0], [31.25, 31.25], [35.0, 35.0]]
_WEIGHT = [[1.0, 1.0], [0.99, 0.0], [0.891, 0.0]]
_LOG3 = math.log(3)


def _by_hand_actor_loss(objective, ent_scale):
    """-mean over t = 0..H-2 and both starts of w_t * (objective(t, n) + ent_scale * log 3)."""
    terms = [_WEIGHT[t][n] * (objective(t, n) + ent_scale * _LOG3) for t in range(2) for n in range(2)]
    return -sum(terms) / len(terms)


_BASELINE = [10.0, 20.0]  # slow critic at z_0, z_1
_OBJECTIVES = {  # objective(t, n) for a_{t+1} ~ pi(.|z_t): log pi = -log 3, advantage V_{t+1} - v(z_t)
    "reinforce": lambda t, n: -_LOG3 * (_TARGET[t + 1][n] - _BASELINE[t]),
    "dynamics": lambda t, n: _TARGET[t + 1][n],
}


def _mixed(t, n, rho=0.25):
    return rho * _OBJECTIVES["reinforce"](t, n) + (1 - rho) * _OBJECTIVES["dynamics"](t, n)


@pytest.mark.parametrize(
    "actor_grad, step, objective",
    [
        ({"name": "reinforce"}, 0, _OBJECTIVES["reinforce"]),
        ({"name": "dynamics"}, 0, _OBJECTIVES["dynamics"]),
        ({"name": "mix", "rho": "0.25"}, 0, _mixed),
        ({"name": "mix", "rho": "linear(1.0,0.0,8)"}, 6, _mixed),  # rho(6) = 1 - 6/8 = 0.25: the step arrives
    ],
    ids=["reinforce", "dynamics", "mix", "mix-scheduled"],
)
def test_behavior_losses_by_hand(actor_grad, step, objective):
    wm, beh, post, is_terminal = _table_behavior(actor_grad, ent_scale=0.1)
    actor_loss, critic_loss, metrics = beh.loss(wm, post, is_terminal, step=step)
    assert actor_loss.item() == pytest.approx(_by_hand_actor_loss(objective, 0.1), rel=1e-5)
    nll = lambda v: 0.5 * v**2 + 0.5 * math.log(2 * math.pi)  # noqa: E731  (critic predicts 0, unit variance)
    critic_terms = [_WEIGHT[t][n] * nll(_TARGET[t][n]) for t in range(3) for n in range(2)]
    assert critic_loss.item() == pytest.approx(sum(critic_terms) / 6, rel=1e-5)
    assert metrics["behavior/return"].item() == pytest.approx(sum(map(sum, _TARGET)) / 6, rel=1e-6)
    assert metrics["behavior/entropy"].item() == pytest.approx(_LOG3, rel=1e-6)


# return_timing=v3 on the same table, R_t = r_{t+1} + d_{t+1} (0.5 v_{t+1} + 0.5 R_{t+1}), R_3 = v_3 = 40:
#   R2 = 4 + 0.7 * (20 + 20) = 32;  R1 = 3 + 0.8 * (15 + 16) = 27.8;  R0 = 2 + 0.9 * (10 + 13.9) = 23.51
# (both starts: R never reads d_0); weights d_0 .. d_t / 0.99: (1, 0.9, 0.72) and (0, 0, 0) for the terminal start.
_TARGET_V3 = [23.51, 27.8, 32.0]
_WEIGHT_V3 = [[1.0, 0.0], [0.9, 0.0], [0.72, 0.0]]


@pytest.mark.parametrize("name", ["reinforce", "dynamics"])
def test_v3_return_timing_by_hand(name):
    wm, beh, post, is_terminal = _table_behavior({"name": name}, ent_scale=0.1)
    beh.cfg.return_timing = "v3"
    actor_loss, critic_loss, metrics = beh.loss(wm, post, is_terminal, step=0)
    objective = {  # a_{t+1} ~ pi(.|z_t) for t = 0 .. H-1 against R_t and the slow critic's v(z_t) = 10, 20, 30
        "reinforce": lambda t: -_LOG3 * (_TARGET_V3[t] - 10.0 * (t + 1)),
        "dynamics": lambda t: _TARGET_V3[t],
    }[name]
    terms = [_WEIGHT_V3[t][n] * (objective(t) + 0.1 * _LOG3) for t in range(3) for n in range(2)]
    assert actor_loss.item() == pytest.approx(-sum(terms) / 6, rel=1e-5)
    nll = lambda v: 0.5 * v**2 + 0.5 * math.log(2 * math.pi)  # noqa: E731  (critic predicts 0)
    critic_terms = [_WEIGHT_V3[t][n] * nll(_TARGET_V3[t]) for t in range(3) for n in range(2)]
    assert critic_loss.item() == pytest.approx(sum(critic_terms) / 6, rel=1e-5)
    assert metrics["behavior/return"].item() == pytest.approx(sum(_TARGET_V3) / 3, rel=1e-6)
    with pytest.raises(ConfigError, match="return_timing: unknown 'v4'; valid: v2, v3"):
        BehaviorConfig(return_timing="v4").check()


def test_without_a_discount_head_every_discount_is_gamma_even_after_a_terminal():
    """As the official code: the replayed is_terminal sets d0 only when a discount head predicts the
    others. With d = (0.99, 0.99, 0.99) the terminal start 1 gets start 0's targets:
    V2 = 3 + 0.99 * 40 = 42.6; V1 = 2 + 0.99 * (15 + 21.3) = 37.937; V0 = 1 + 0.99 * (10 + 18.9685)."""
    wm, beh, post, is_terminal = _table_behavior({"name": "dynamics"}, ent_scale=0.0)
    wm.discount_head = None
    _, _, metrics = beh.loss(wm, post, is_terminal, step=0)
    v0 = 1 + 0.99 * (10 + 0.5 * 37.937)
    assert metrics["behavior/return"].item() == pytest.approx((v0 + 37.937 + 42.6) / 3, rel=1e-5)


@pytest.mark.parametrize("name", ["reinforce", "dynamics"])
def test_actor_loss_depends_on_the_imagined_rewards_only_under_dynamics_backprop(name):
    """d actor_loss / d r_s by hand: dynamics backprop gives -1/4 * sum_t w_t * dV_{t+1}/dr_s with
    dV_{t+1}/dr_s = lambda^(s-t-1) * prod_{t<k<s} d_k; REINFORCE has no path from the rewards."""
    wm, beh, post, is_terminal = _table_behavior({"name": name}, ent_scale=0.0)
    actor_loss, _, _ = beh.loss(wm, post, is_terminal, step=0)
    (reward,) = wm.reward_head.means
    (grad,) = torch.autograd.grad(actor_loss, reward, allow_unused=True)
    if name == "reinforce":
        assert grad is None or grad.abs().max() == 0
        return
    # s = 1: only t = 0 (w_0 = 1).  s = 2: t = 0 gives w_0 * lambda * d_1 = 0.45, t = 1 gives w_1 = 0.99 | 0.
    # r_0 (before the first action) and r_3 (after the last target) do not enter the actor loss.
    expected = -torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.45 + 0.99, 0.45], [0.0, 0.0]]) / 4
    torch.testing.assert_close(grad, expected)
    assert wm.reward_head.bias.grad is None and wm.discount_head.bias.grad is None


@pytest.mark.parametrize("discrete", [False, True])
def test_mix_at_rho_0_equals_dynamics_backprop(discrete):
    _, mixed = _actor_grads({"name": "mix", "rho": "0.0"}, discrete=discrete, seed=3)
    _, ref = _actor_grads({"name": "dynamics"}, discrete=discrete, seed=3)
    for a, b in zip(mixed.actor.parameters(), ref.actor.parameters()):
        assert b.grad is not None and b.grad.abs().sum() > 0
        torch.testing.assert_close(a.grad, b.grad)


def test_mix_reinforce_term_passes_a_continuous_actions_gradient_not_a_one_hot_ones():
    """The official ``both`` estimator takes log pi(a) of the action as sampled. A reparameterised
    a = mu(z) passes d/dz [adv * log N(a; m, s)] = adv * -(a - m) / s^2; TensorFlow Probability's
    one-hot log-probability stops the gradient of a straight-through a = onehot + p - sg(p).
    REINFORCE detaches the action either way."""
    returns, baseline = torch.tensor([3.0]), torch.tensor([1.0])
    z = torch.tensor([0.5], requires_grad=True)
    Mix(MixConfig(rho="1.0"))(D.Normal(torch.tensor([0.2]), 2.0), z * 1.0, returns, baseline).sum().backward()
    torch.testing.assert_close(z.grad, 2.0 * -(0.5 - 0.2) / 4.0 * torch.ones(1))
    logits = torch.tensor([[0.2, -0.4, 1.0]])
    p = torch.tensor([[0.5, 0.1, -0.3]], requires_grad=True).softmax(-1)
    action = torch.tensor([[0.0, 1.0, 0.0]]) + p - p.detach()
    value = Mix(MixConfig(rho="1.0"))(OneHot(logits=logits), action, returns, baseline)
    assert not value.requires_grad  # no path to z
    torch.testing.assert_close(value, 2.0 * logits.log_softmax(-1)[:, 1])  # log pi(a) * advantage
    assert not Reinforce()(D.Normal(torch.tensor([0.2]), 2.0), z * 1.0, returns, baseline).requires_grad


def test_estimator_objectives_by_hand():
    policy = D.Normal(torch.tensor([0.0, 1.0], requires_grad=True), 1.0)
    actions, returns, baseline = torch.tensor([0.5, 0.5]), torch.tensor([2.0, 3.0]), torch.tensor([1.0, 1.0])
    logp = policy.log_prob(actions)
    torch.testing.assert_close(Reinforce()(policy, actions, returns, baseline), logp * torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(Dynamics()(policy, actions, returns, baseline), returns)
    # DreamerV3's backprop objective R - v: both keep their gradients (+1 and -1 per step)
    returns_, baseline_ = returns.clone().requires_grad_(), baseline.clone().requires_grad_()
    objective = Dynamics(DynamicsConfig(baseline=True))(policy, actions, returns_, baseline_)
    torch.testing.assert_close(objective.detach(), torch.tensor([1.0, 2.0]))
    objective.sum().backward()
    assert returns_.grad.tolist() == [1.0, 1.0] and baseline_.grad.tolist() == [-1.0, -1.0]
    mix = Mix(MixConfig(rho="0.25"))(policy, actions, returns, baseline)
    torch.testing.assert_close(mix, 0.25 * logp * torch.tensor([1.0, 2.0]) + 0.75 * returns)


def test_linear_schedule_official_form():
    s = Schedule("linear(0.9,1.0,100)")
    assert [s(0), s(50), s(100), s(200)] == pytest.approx([0.9, 0.95, 1.0, 1.0])
    assert Schedule("0.3")(10_000) == 0.3


def test_critic_loss_reaches_only_the_critic():
    wm, beh, post = _behavior({"name": "reinforce"})
    _, critic_loss, _ = beh.loss(wm, post, torch.zeros(2, 3), step=0)
    critic_loss.backward()
    assert all(p.grad is not None for p in beh.critic.parameters())
    assert all(p.grad is None for p in beh.actor.parameters())
    assert all(p.grad is None for p in beh.slow_critic.parameters())
    assert all(p.grad is None for p in wm.parameters())


# ---------------------------------------------------------------------------------------------- slow critic


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_slow_critic_moves_after_updates_1_then_every_n(fraction):
    """The official counter starts at 0 and copies at 0, every, 2 * every before it counts: after
    update 1, 1 + every, ... (1, 4, 7 for every = 3); the first move is a copy whatever the fraction."""
    _, beh, _ = _behavior({"name": "reinforce"}, slow_critic_every=3, slow_critic_fraction=fraction)
    slow, fast = list(beh.slow_critic.parameters()), list(beh.critic.parameters())
    assert any((s != f).any() for s, f in zip(slow, fast))  # its own initial weights, as the official
    beh.update_slow_critic(1)
    for s, f in zip(slow, fast):
        torch.testing.assert_close(s, f)
    with torch.no_grad():
        for p in fast:
            p.add_(1.0)
    before = [p.clone() for p in slow]
    for updates in (2, 3):
        beh.update_slow_critic(updates)
        for b, p in zip(before, slow):
            torch.testing.assert_close(p, b)
    beh.update_slow_critic(4)
    for b, s, f in zip(before, slow, fast):
        torch.testing.assert_close(s, (1 - fraction) * b + fraction * f)


# ---------------------------------------------------------------------------------------------- distributions and RSSM


@pytest.mark.parametrize("loc, scale", [(0.7, 0.4), (-0.2, 1.5), (0.95, 0.1)])
def test_truncated_normal_is_a_density_on_the_interval(loc, scale):
    torch.manual_seed(0)
    dist = TruncatedNormal(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    x = torch.linspace(-1, 1, 200_001, dtype=torch.float64)
    density = dist.log_prob(x).exp()
    assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-6)
    # closed-form mean and entropy against the numerical integrals over [-1, 1]
    assert dist.mean.item() == pytest.approx(torch.trapezoid(x * density, x).item(), abs=1e-6)
    assert dist.entropy().item() == pytest.approx(torch.trapezoid(-density * dist.log_prob(x), x).item(), abs=1e-6)
    samples = dist.rsample((100_000,))
    assert samples.min() >= -1 and samples.max() <= 1
    assert samples.mean().item() == pytest.approx(dist.mean.item(), abs=0.01)
    assert (-dist.log_prob(samples).mean()).item() == pytest.approx(dist.entropy().item(), abs=0.02)
    # the probability of a sub-interval matches the sample frequency (the sampler follows the density)
    inside = (x >= 0.0) & (x <= 0.5)
    mass = torch.trapezoid(density[inside], x[inside]).item()
    assert ((samples >= 0.0) & (samples <= 0.5)).double().mean().item() == pytest.approx(mass, abs=0.01)


@pytest.mark.parametrize(
    "latent", [Gaussian(GaussianConfig(3)), Categorical(CategoricalConfig(2, 3))], ids=["gaussian", "categorical"]
)
def test_rssm_is_first_resets_state_and_action(latent):
    torch.manual_seed(0)
    rssm = RSSM(RSSMConfig(deter=6, hidden=5), latent, 2, 4)
    embed = torch.randn(2, 4)
    first = torch.ones(2, dtype=torch.bool)
    torch.manual_seed(1)
    ref, ref_prior = rssm.obs_step(rssm.initial(2), torch.zeros(2, 2), embed, first)
    for _ in range(2):  # any previous state and action: the result is that of the zero start
        stale = {k: 3 * torch.randn_like(v) for k, v in rssm.initial(2).items()}
        action = torch.randn(2, 2)
        torch.manual_seed(1)
        post, prior = rssm.obs_step(stale, action, embed, first)
        for key in ("deter", "stoch", "params"):
            torch.testing.assert_close(post[key], ref[key])
        torch.testing.assert_close(prior, ref_prior)
    torch.manual_seed(1)
    carried, _ = rssm.obs_step(stale, action, embed, ~first)
    assert not torch.allclose(carried["deter"], ref["deter"])
    # the reset is per batch element: only the flagged row starts over
    torch.manual_seed(1)
    mixed, _ = rssm.obs_step(stale, action, embed, torch.tensor([True, False]))
    torch.testing.assert_close(mixed["deter"][0], ref["deter"][0])
    torch.testing.assert_close(mixed["deter"][1], carried["deter"][1])


# ------------------------------------------------------------------------------- DreamerV3 behavior options

# V3 (slow_target=false): the returns bootstrap from the critic itself, here the table (10, 20, 30, 40), so the
# targets are _TARGET again. The percentile normaliser with decay 0 takes this update's P5 and P95 of the six
# targets, sorted (1, 26.36875, 31.25, 31.25, 35, 35): P5 = 1 + 0.25 * 25.36875, P95 = 35.
_SCALE = 35.0 - (1.0 + 0.25 * 25.36875)


def _v3_table_behavior(actor_grad):
    wm, beh, post, is_terminal = _table_behavior(actor_grad, ent_scale=0.1)
    beh.cfg.slow_target, beh.cfg.slow_reg = False, 1.0
    beh.critic = _TableHead([10.0, 20.0, 30.0, 40.0])
    beh.slow_critic = _TableHead([0.0, 0.0, 0.0, 0.0]).requires_grad_(False)
    beh.return_norm = build("return_norm", {"name": "percentile", "decay": 0.0})
    return wm, beh, post, is_terminal


@pytest.mark.parametrize("name", ["reinforce", "dynamics"])
def test_v3_returns_from_the_critic_normalised_and_the_slow_critic_regulariser_by_hand(name):
    wm, beh, post, is_terminal = _v3_table_behavior({"name": name})
    actor_loss, critic_loss, metrics = beh.loss(wm, post, is_terminal, step=0)
    assert metrics["behavior/return_scale"].item() == pytest.approx(_SCALE)
    objective = {  # advantages and returns divided by S; the baseline is the critic at z_0, z_1
        "reinforce": lambda t, n: -_LOG3 * (_TARGET[t + 1][n] - _BASELINE[t]) / _SCALE,
        "dynamics": lambda t, n: _TARGET[t + 1][n] / _SCALE,
    }[name]
    assert actor_loss.item() == pytest.approx(_by_hand_actor_loss(objective, 0.1), rel=1e-5)
    # critic (10, 20, 30 at t = 0, 1, 2): -log N(V_t; c_t, 1) plus slow_reg * -log N(0; c_t, 1), the slow critic's 0
    c = [10.0, 20.0, 30.0]
    nll = lambda x: 0.5 * x**2 + 0.5 * math.log(2 * math.pi)  # noqa: E731
    terms = [_WEIGHT[t][n] * (nll(_TARGET[t][n] - c[t]) + nll(c[t])) for t in range(3) for n in range(2)]
    assert critic_loss.item() == pytest.approx(sum(terms) / 6, rel=1e-5)
    actor_loss.backward()  # the actor's gradient passes through the critic's values, never into the critic
    assert beh.critic.bias.grad is None and beh.critic.bias.requires_grad


def test_slow_critic_moves_two_percent_toward_the_critic_every_update():
    """DreamerV3's EMA (fraction 0.02 after every update), whose first move is a copy (official
    SlowUpdater, as DreamerV2's): slow 0 -> copy of the critic's 1 -> 0.98 * 1 + 0.02 * 2 = 1.02."""
    _, beh, _ = _behavior({"name": "reinforce"}, slow_critic_every=1, slow_critic_fraction=0.02)
    with torch.no_grad():
        for p, slow in zip(beh.critic.parameters(), beh.slow_critic.parameters()):
            p.fill_(1.0)
            slow.zero_()
    beh.update_slow_critic(1)
    with torch.no_grad():
        for p in beh.critic.parameters():
            p.fill_(2.0)
    beh.update_slow_critic(2)
    for slow in beh.slow_critic.parameters():
        torch.testing.assert_close(slow, torch.full_like(slow, 1.02))
