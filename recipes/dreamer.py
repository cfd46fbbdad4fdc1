"""The Dreamer agent as a Lightning module: world model, actor and critic with three optimizers.

One training step is one update on a replayed ``[B, T]`` batch:

1. world model: reconstruction, reward, discount and KL losses -> model optimizer
2. behavior: imagine ``horizon`` steps from every posterior state -> actor and critic optimizers
3. after actor-critic update 1, 1 + ``slow_critic_every``, ..., refresh the slow critic

The first ``world_model_pretrain`` updates (``train.world_model_pretrain``; 0 in
the paper's recipes) stop after step 1: they teach the world model the prefill
data at about half the cost of a full update, before the actor learns from it.

The batches come from :class:`runner.experience.Experience`, which steps the
environments with :meth:`policy` between updates (train ratio). Lightning gives
the loop, precision, devices, checkpoints and loggers; optimization is manual.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch.profiler import record_function

from components.nets import initialize
from recipes.agent import AgentModule, NonFiniteLoss
from recipes.behavior import Behavior
from recipes.config import OptimConfig
from recipes.world_model import WorldModel
from registry import register

log = logging.getLogger(__name__)


class AdamW(torch.optim.AdamW):
    """torch's AdamW, with ``keras_eps`` its epsilon where Keras' Adam adds it.

    Keras steps ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, torch
    ``lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``: the same step once torch's
    epsilon is ``eps / sqrt(1 - b2^t)``, which :meth:`step` sets before each step. ``t`` is the
    step count of a group's first parameter (every parameter gets a gradient in every update).
    """

    def __init__(self, params, lr: float, eps: float, weight_decay: float, keras_eps: bool):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay)
        self.keras_eps = eps if keras_eps else None

    def step(self, closure=None):
        if self.keras_eps is not None:
            for group in self.param_groups:
                state = self.state.get(group["params"][0], {})
                t = int(state.get("step", 0)) + 1
                group["eps"] = self.keras_eps / math.sqrt(1 - group["betas"][1] ** t)
        return super().step(closure)


def adamw(params, c: OptimConfig) -> AdamW:
    """The optimizer of one part (world model, actor or critic); its gradient clip is applied in the update.

    The official decay multiplies every variable by ``1 - wd`` before the Adam step. AdamW does
    ``p *= 1 - lr * weight_decay`` before its Adam step, so ``weight_decay = wd / lr`` is exactly that
    (the learning rate is constant here).
    """
    return AdamW(params, lr=c.lr, eps=c.eps, weight_decay=c.wd / c.lr, keras_eps=c.keras_eps)


def action_noise(action: torch.Tensor, amount: float, discrete: bool) -> torch.Tensor:
    """The official exploration noise: a one-hot action is resampled from ``amount / n + (1 - amount) *
    action`` (a uniform action with probability ``amount``); a continuous one gets Gaussian noise of std
    ``amount`` and is clipped to [-1, 1]."""
    if discrete:
        probs = amount / action.shape[-1] + (1 - amount) * action
        return F.one_hot(torch.multinomial(probs, 1)[:, 0], action.shape[-1]).to(action.dtype)
    return (action + amount * torch.randn_like(action)).clamp(-1, 1)


@register("agent", "dreamer")
class Dreamer(AgentModule):
    """DreamerV1/V2-family agent; which variant is decided by the components it is given."""

    def __init__(self, run, components: dict, env_info):
        super().__init__(log_every=run.train.log_every)
        self.automatic_optimization = False
        self.model_cfg, self.behavior_cfg = run.model, run.behavior
        self.nonfinite, self.world_model_pretrain = run.train.nonfinite, run.train.world_model_pretrain
        self.world_model = WorldModel(
            run.model, components, env_info.obs_space, env_info.action_dim, run.behavior.discount
        )
        self.behavior = Behavior(
            run.behavior,
            components["actor_grad"],
            self.world_model.rssm.feat_dim,
            env_info.action_dim,
            env_info.discrete,
        )
        initialize(self, run.model.init)
        if run.train.compile:
            self.world_model.compile_parts()
            self.behavior.compile_imagination()
        self.env_info = env_info

    # -- acting ---------------------------------------------------------------------------------
    @torch.no_grad()
    def policy(self, obs: TensorDict, state=None, mode: str = "sample") -> tuple[torch.Tensor, tuple]:
        """Actions for one step of every env ``[N]``: filter the observation, then act.

        ``state`` is ``(RSSM state, previous action)``, ``None`` at the start. ``mode``: "sample" the
        actor, take its "mode", or "explore" (collecting experience): sample and add ``behavior.expl_noise``.
        """
        obs = obs.to(self.device)
        if state is None:
            n = obs.batch_size[0]
            state = (self.world_model.rssm.initial(n, self.device), torch.zeros(n, self.env_info.action_dim))
        latent, action = state
        latent = self.world_model.act_step(latent, obs, action.to(self.device))
        dist = self.behavior.actor(self.world_model.rssm.features(latent))
        action = dist.mode if mode == "mode" else dist.sample()
        if mode == "explore" and self.behavior_cfg.expl_noise > 0:
            action = action_noise(action, self.behavior_cfg.expl_noise, self.env_info.discrete)
        return action, (latent, action)

    def video(self, batch: TensorDict) -> torch.Tensor | None:
        """The world model's open-loop prediction of the ``image`` key (None without images)."""
        if "image" not in self.env_info.obs_space:
            return None
        return self.world_model.open_loop(batch.to(self.device))

    # -- learning -------------------------------------------------------------------------------
    def configure_optimizers(self):
        return [
            adamw(self.world_model.parameters(), self.model_cfg.opt),
            adamw(self.behavior.actor.parameters(), self.behavior_cfg.actor_opt),
            adamw(self.behavior.critic.parameters(), self.behavior_cfg.critic_opt),
        ]

    def _step(self, name: str, optimizer, loss: torch.Tensor, clip: float) -> None:
        with record_function(f"{name}.backward"):
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
        with record_function(f"{name}.optimizer"):
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            optimizer.step()

    def training_step(self, batch: TensorDict, batch_idx: int):
        model_opt, actor_opt, critic_opt = self.optimizers()
        self.count_update()
        with record_function("world_model.forward"):
            model_loss, post, metrics = self.world_model.loss(batch)
        if not self._finite({**metrics, "model/loss": model_loss}, "model/"):
            return
        self._step("world_model", model_opt, model_loss, self.model_cfg.opt.clip)
        if self.updates <= self.world_model_pretrain:
            self.log_update(metrics)
            return

        with record_function("imagine.forward"):
            actor_loss, critic_loss, behavior_metrics = self.behavior.loss(
                self.world_model, post, batch["is_terminal"], self.experience.global_steps
            )
        losses = {"behavior/actor_loss": actor_loss, "behavior/critic_loss": critic_loss}
        if not self._finite({**behavior_metrics, **losses}, "behavior/"):
            return
        self._step("actor", actor_opt, actor_loss, self.behavior_cfg.actor_opt.clip)
        self._step("critic", critic_opt, critic_loss, self.behavior_cfg.critic_opt.clip)
        self.behavior.update_slow_critic(self.updates - self.world_model_pretrain)
        metrics.update(behavior_metrics)
        self.log_update(metrics)

    def _finite(self, metrics: dict, prefix: str) -> bool:
        """Stop (or skip the update) before an optimizer step on a NaN/Inf loss, naming the term."""
        losses = {k: v.detach() for k, v in metrics.items() if k.startswith(prefix) and k.endswith("loss")}
        if torch.stack(list(losses.values())).isfinite().all():  # one host sync per loss group
            return True
        bad = ", ".join(k for k, v in losses.items() if not torch.isfinite(v))
        where = f"non-finite {bad} at update {self.updates} (agent step {self.experience.global_steps})"
        if self.nonfinite == "stop":
            raise NonFiniteLoss(f"{where}; training stopped, the last good checkpoint is kept")
        self.skip_update()
        log.warning("%s; update skipped (%d skipped so far)", where, self.skipped_updates)
        return False
