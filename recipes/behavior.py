"""Actor and critic learned from imagined trajectories of the world model.

Time layout of one imagined trajectory (time-major, H = horizon, N = start states)::

    t          0      1      2    ...   H-1     H
    state      z0 --> z1 --> z2   ...   zH-1 -> zH      z0 = replayed posterior
    action          a1     a2     ...   aH-1    aH      a_{t+1} ~ pi(.|z_t), leads z_t -> z_{t+1}
    reward     r0     r1     r2   ...   rH-1    rH      r_t = reward head at z_t
    discount   d0     d1     d2   ...   dH-1    dH      d0 = gamma * (1 - replayed is_terminal)
    weight     1      d0     d0d1 ...                    cumulative discount (no gradient)
    target     V0     V1     V2   ...   VH-1            lambda-return from r, d, v; VH = v(zH)
                                                         v = slow critic (V2) or critic (V3, slow_target=false)

    critic:  (-log p(V_t | z_t) - slow_reg * log p(slow(z_t) | z_t)) * w_t          t = 0 .. H-1
    actor:   objective(pi(.|z_t), a_{t+1}, V_{t+1} / S, v(z_t) / S) + eta * H[pi(.|z_t)], weighted by w_t,
             t = 0 .. H-2 (zH-1 has no target after its action, zH has no action);
             S = return_norm(V) (1 in V1/V2, the percentile range in V3)

With ``return_timing=v3`` (DreamerV3) the return at z_t starts from the next step's reward and
continue, and each weight includes its own state's discount (a terminal start weighs 0)::

    target   R_t = r_{t+1} + d_{t+1} ((1 - lambda) v_{t+1} + lambda R_{t+1}),  R_H = v(zH)   t = 0 .. H-1
    weight   w_t = d0 d1 ... dt / gamma
    critic:  as above with R_t;   actor: objective(pi(.|z_t), a_{t+1}, R_t / S, v(z_t) / S), t = 0 .. H-1
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

import components.normalize  # noqa: F401  (registers the return normalisers Behavior builds)
from components.nets import compiled
from components.returns import lambda_return
from recipes.config import BehaviorConfig
from registry import build


@contextmanager
def frozen(module: nn.Module):
    """Stop parameter gradients of ``module`` while gradients still flow through it."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class Behavior(nn.Module):
    """Actor, critic and slow (target) critic, with the configured actor-gradient estimator."""

    def __init__(self, cfg: BehaviorConfig, actor_grad_cfg, feat_dim: int, action_dim: int, discrete: bool):
        super().__init__()
        self.cfg = cfg
        actor_cfg = dict(cfg.actor)
        if actor_cfg.get("name") == "auto":
            actor_cfg["name"] = cfg.auto_actor(discrete)
        self.actor = build("head", actor_cfg, path="behavior.actor", in_dim=feat_dim, out_dim=action_dim)
        self.critic = build("head", cfg.critic, path="behavior.critic", in_dim=feat_dim)
        # Its own initial weights, as the official target critic: the first update copies the critic.
        self.slow_critic = build("head", cfg.critic, path="behavior.critic", in_dim=feat_dim).requires_grad_(False)
        self.actor_grad = build("actor_grad", actor_grad_cfg)
        self.return_norm = build("return_norm", cfg.return_norm, path="behavior.return_norm")
        self.action_dim = action_dim

    def compile_imagination(self) -> None:
        """Compile :meth:`imagine` as one graph with :func:`components.nets.compiled`: the horizon
        loop unrolled (actor, prior step, sampling), its backward one graph too (train.compile)."""
        self.imagine = compiled(self.imagine)

    def imagine(self, world_model, start: dict) -> dict:
        """Roll the prior forward ``horizon`` steps from ``start`` with actions from the actor.

        Returns time-major ``feat`` and ``action`` (``H + 1`` steps) and ``policy``, the actor's
        outputs at z_0 .. z_{H-1} (``H`` steps): the actor loss reads its policy from them rather
        than running the actor again over the same detached features.
        """
        rssm = world_model.rssm
        feat = rssm.features(start)
        seq = {"feat": [feat], "action": [feat.new_zeros(feat.shape[0], self.action_dim)], "policy": []}
        state = start  # no action leads to z0
        for _ in range(self.cfg.horizon):
            policy = self.actor.net(seq["feat"][-1].detach())
            action = self.actor.dist(policy).rsample()
            state = rssm.img_step(state, action)
            seq["feat"].append(rssm.features(state))
            seq["action"].append(action)
            seq["policy"].append(policy)
        return {k: torch.stack(v, 0) for k, v in seq.items()}

    def trajectory(self, world_model, post: dict, is_terminal: torch.Tensor) -> dict:
        """Imagine from every posterior state and score the trajectory (time-major, the diagram above).

        Returns :meth:`imagine`'s ``feat``, ``action`` and ``policy`` with ``reward`` and ``discount``
        (``H + 1`` steps), ``value`` (the critic's or slow critic's, its gradient reaching the features
        but not the critic), the lambda-return ``target`` (``H`` steps) and the critic's ``weight``.
        ``world_model`` provides ``rssm``, ``reward_head``, ``discount_head`` (or None) and, with a
        discount head, ``imagined_discount(feat)`` (:class:`recipes.world_model.WorldModel`'s)."""
        start = {k: v.detach().flatten(0, 1) for k, v in post.items()}
        with frozen(world_model):
            seq = self.imagine(world_model, start)
            feat = seq["feat"]
            reward = world_model.reward_head(feat).mean
            if world_model.discount_head is not None:
                disc = world_model.imagined_discount(feat)
                # d0: the replayed terminal flag, known at the start state (official: only with the head)
                first = self.cfg.discount * (1.0 - is_terminal.flatten().to(disc.dtype))
                disc = torch.cat([first[None], disc[1:]], 0)
            else:
                disc = torch.full_like(reward, self.cfg.discount)
        critic = self.slow_critic if self.cfg.slow_target else self.critic
        with frozen(critic):  # the actor's gradient flows through the values into the features, not the critic
            value = critic(feat).mean
        if self.cfg.return_timing == "v3":
            target = lambda_return(reward[1:], value[:-1], disc[1:], value[-1], self.cfg.lambda_)
            weight = (torch.cumprod(disc, 0) / self.cfg.discount).detach()
        else:
            target = lambda_return(reward[:-1], value[:-1], disc[:-1], value[-1], self.cfg.lambda_)
            weight = torch.cumprod(torch.cat([torch.ones_like(disc[:1]), disc[:-1]], 0), 0).detach()
        return {**seq, "reward": reward, "discount": disc, "value": value, "target": target, "weight": weight}

    def loss(self, world_model, post: dict, is_terminal: torch.Tensor, step: int):
        """Actor and critic losses from imagination started at every posterior state (:meth:`trajectory`)."""
        traj = self.trajectory(world_model, post, is_terminal)
        feat, value, target, weight = traj["feat"], traj["value"], traj["target"], traj["weight"]
        if self.cfg.return_timing == "v3":
            policy = self.actor.dist(traj["policy"])  # pi(.|z_t), t = 0 .. H-1
            actor_target, baseline, action, actor_weight = target, value[:-1], traj["action"][1:], weight[:-1]
        else:
            policy = self.actor.dist(traj["policy"][:-1])  # pi(.|z_t), t = 0 .. H-2
            actor_target, baseline, action, actor_weight = target[1:], value[:-2], traj["action"][1:-1], weight[:-2]
        scale = self.return_norm(target)
        objective = self.actor_grad(policy, action, actor_target / scale, baseline / scale, step)
        entropy = policy.entropy()
        actor_loss = -(actor_weight * (objective + self.cfg.ent_scale * entropy)).mean()

        critic_dist = self.critic(feat[:-1].detach())
        critic_nll = -critic_dist.log_prob(target.detach())
        if self.cfg.slow_reg:
            with torch.no_grad():
                slow = self.slow_critic(feat[:-1].detach()).mean
            critic_nll = critic_nll - self.cfg.slow_reg * critic_dist.log_prob(slow)
        critic_loss = (critic_nll * weight[:-1]).mean()
        metrics = {
            "behavior/actor_loss": actor_loss.detach(),
            "behavior/critic_loss": critic_loss.detach(),
            "behavior/entropy": entropy.detach().mean(),
            "behavior/return": target.detach().mean(),
            "behavior/imag_reward": traj["reward"].detach().mean(),
        }
        if torch.is_tensor(scale):
            metrics["behavior/return_scale"] = scale
        return actor_loss, critic_loss, metrics

    @torch.no_grad()
    def update_slow_critic(self, updates: int) -> None:
        """After actor-critic update ``updates`` (counted from 1): move the slow critic to the critic
        after update 1, 1 + every, 1 + 2 * every, ... by ``slow_critic_fraction``, the first time by 1
        (the official counter starts at 0 and copies before it counts)."""
        if (updates - 1) % self.cfg.slow_critic_every:
            return
        mix = 1.0 if updates == 1 else self.cfg.slow_critic_fraction
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.mul_(1 - mix).add_(fast, alpha=mix)
