"""The math, pinned against hand-computed values: returns, KL schemes, free nats, straight-through
gradients, actor-gradient estimators, slow critic, truncated normal, RSSM resets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from components.actor_grads import Dynamics, Mix, MixConfig, Reinforce, Schedule
from components.heads import TruncatedNormal
from components.kl import Balanced, BalancedConfig, Plain, PlainConfig
from components.latents import Categorical, CategoricalConfig, Gaussian, GaussianConfig
from components.returns import lambda_return
from components.rssm import RSSM, RSSMConfig
from recipes.behavior import Behavior
from recipes.config import BehaviorConfig

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


def test_plain_kl_trains_both_sides_fully():
    post, prior = _params()
    loss, _ = Plain(PlainConfig(scale=1.0))(LATENT, post, prior)
    g_post, g_prior = torch.autograd.grad(loss, (post, prior))
    ref_post, ref_prior = _params()
    kl = _categorical_kl(ref_post.view(3, 2, 4), ref_prior.view(3, 2, 4)).mean()
    r_post, r_prior = torch.autograd.grad(kl, (ref_post, ref_prior))
    torch.testing.assert_close(g_post, r_post)
    torch.testing.assert_close(g_prior, r_prior)


def test_gaussian_latent_kl_closed_form():
    latent = Gaussian(GaussianConfig(size=2, min_std=0.1))
    post = torch.tensor([[0.5, -1.0, 0.2, 0.3]])
    prior = torch.tensor([[0.0, 1.0, -0.4, 1.0]])
    std = lambda raw: torch.nn.functional.softplus(raw) + 0.1  # noqa: E731
    m1, s1, m2, s2 = post[0, :2], std(post[0, 2:]), prior[0, :2], std(prior[0, 2:])
    expected = (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum()
    torch.testing.assert_close(latent.kl(post, prior)[0], expected)


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


# ---------------------------------------------------------------------------------------------- straight-through


def test_categorical_sample_is_one_hot_with_straight_through_gradient():
    torch.manual_seed(1)
    logits = torch.randn(5, 3 * 4, requires_grad=True)
    latent = Categorical(CategoricalConfig(variables=3, classes=4))
    sample = latent.sample(logits)
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(sample.view(5, 3, 4).sum(-1) == 1)
    w = torch.randn(5, 12)
    grad = torch.autograd.grad((sample * w).sum(), logits)[0]
    ref_logits = logits.detach().clone().requires_grad_()
    ref = torch.autograd.grad((ref_logits.view(5, 3, 4).softmax(-1).view(5, 12) * w).sum(), ref_logits)[0]
    torch.testing.assert_close(grad, ref)


# ---------------------------------------------------------------------------------------------- actor gradients


class TinyWorldModel(torch.nn.Module):
    """The pieces of a world model that imagination uses, at toy sizes."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.rssm = RSSM(RSSMConfig(deter=6, hidden=5), Categorical(CategoricalConfig(2, 3)), action_dim, 4)
        self.reward_head = _head("normal", self.rssm.feat_dim)
        self.discount_head = _head("bernoulli", self.rssm.feat_dim)


def _head(name, in_dim, out_dim=1):
    import registry

    return registry.build("head", {"name": name, "layers": 1, "units": 8}, in_dim=in_dim, out_dim=out_dim)


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


def test_reinforce_gradient_comes_only_from_log_probabilities():
    """With REINFORCE the returns are constants: scaling the reward head moves the loss value
    but the gradient is the score function weighted by the same advantages, so it does not flow
    through the imagined trajectory (the straight-through action path is cut by detach)."""
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


@pytest.mark.parametrize("rho, pure", [("1.0", "reinforce"), ("0.0", "dynamics")])
def test_mix_endpoints_equal_the_pure_estimators(rho, pure):
    _, mixed = _actor_grads({"name": "mix", "rho": rho}, discrete=False, seed=3)
    _, ref = _actor_grads({"name": pure}, discrete=False, seed=3)
    for a, b in zip(mixed.actor.parameters(), ref.actor.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


def test_estimator_objectives_by_hand():
    policy = D.Normal(torch.tensor([0.0, 1.0], requires_grad=True), 1.0)
    actions, returns, baseline = torch.tensor([0.5, 0.5]), torch.tensor([2.0, 3.0]), torch.tensor([1.0, 1.0])
    logp = policy.log_prob(actions)
    torch.testing.assert_close(Reinforce()(policy, actions, returns, baseline), logp * torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(Dynamics()(policy, actions, returns, baseline), returns)
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
def test_slow_critic_moves_every_n_updates(fraction):
    _, beh, _ = _behavior({"name": "reinforce"}, slow_critic_every=3, slow_critic_fraction=fraction)
    with torch.no_grad():
        for p in beh.critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in beh.slow_critic.parameters()]
    for updates in (1, 2, 4, 5):
        beh.update_slow_critic(updates)
        for b, p in zip(before, beh.slow_critic.parameters()):
            torch.testing.assert_close(p, b)
    beh.update_slow_critic(6)
    for b, slow, fast in zip(before, beh.slow_critic.parameters(), beh.critic.parameters()):
        torch.testing.assert_close(slow, (1 - fraction) * b + fraction * fast)


# ---------------------------------------------------------------------------------------------- distributions and RSSM


def test_truncated_normal_is_a_density_on_the_interval():
    dist = TruncatedNormal(torch.tensor(0.7), torch.tensor(0.4))
    x = torch.linspace(-1, 1, 20001)
    mass = torch.trapezoid(dist.log_prob(x).exp(), x)
    assert mass.item() == pytest.approx(1.0, abs=1e-4)
    samples = dist.rsample((100_000,))
    assert samples.min() >= -1 and samples.max() <= 1
    assert samples.mean().item() == pytest.approx(dist.mean.item(), abs=0.01)
    assert (-dist.log_prob(samples).mean()).item() == pytest.approx(dist.entropy().item(), abs=0.01)


def test_rssm_is_first_resets_state_and_action():
    torch.manual_seed(0)
    rssm = RSSM(RSSMConfig(deter=6, hidden=5), Gaussian(GaussianConfig(3)), 2, 4)
    embed, action = torch.randn(2, 4), torch.randn(2, 2)
    stale = {k: torch.randn_like(v) for k, v in rssm.initial(2).items()}
    first = torch.ones(2, dtype=torch.bool)
    torch.manual_seed(1)
    post, _ = rssm.obs_step(stale, action, embed, first)
    torch.manual_seed(1)
    ref, _ = rssm.obs_step(rssm.initial(2), torch.zeros(2, 2), embed, first)
    torch.testing.assert_close(post["deter"], ref["deter"])
    torch.testing.assert_close(post["params"], ref["params"])
    torch.manual_seed(1)
    carried, _ = rssm.obs_step(stale, action, embed, ~first)
    assert not torch.allclose(carried["deter"], ref["deter"])
