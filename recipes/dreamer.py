"""The Dreamer agent as a Lightning module: world model, actor and critic with three optimizers.

One training step is one update on a replayed ``[B, T]`` batch:

1. world model: reconstruction, reward, discount and KL losses -> model optimizer
2. behavior: imagine ``horizon`` steps from every posterior state -> actor and critic optimizers
3. after actor-critic update 1, 1 + ``slow_critic_every``, ..., refresh the slow critic

The first ``world_model_pretrain`` updates (``train.world_model_pretrain``; 0 in
the paper's recipes) stop after step 1: they teach the world model the prefill
data at about half the cost of a full update, before the actor learns from it.

The batches come from :class:`recipes.experience.Experience`, which steps the
environments with :meth:`policy` between updates (train ratio). Lightning gives
the loop, precision, devices, checkpoints and loggers; optimization is manual.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch.profiler import record_function

from components.nets import initialize
from recipes.behavior import Behavior
from recipes.checkpoint import NonFiniteLoss
from recipes.config import BehaviorConfig, ModelConfig, OptimConfig
from recipes.world_model import WorldModel
from registry import ConfigError, register

log = logging.getLogger(__name__)
NONFINITE = ("stop", "skip")


def adamw(params, c: OptimConfig) -> torch.optim.AdamW:
    """The optimizer of one part (world model, actor or critic); its gradient clip is applied in the update.

    The official decay multiplies every variable by ``1 - wd`` before the Adam step. AdamW does
    ``p *= 1 - lr * weight_decay`` before its Adam step, so ``weight_decay = wd / lr`` is exactly that
    (the learning rate is constant here).
    """
    return torch.optim.AdamW(params, lr=c.lr, eps=c.eps, weight_decay=c.wd / c.lr)


def action_noise(action: torch.Tensor, amount: float, discrete: bool) -> torch.Tensor:
    """The official exploration noise: a one-hot action is resampled from ``amount / n + (1 - amount) *
    action`` (a uniform action with probability ``amount``); a continuous one gets Gaussian noise of std
    ``amount`` and is clipped to [-1, 1]."""
    if discrete:
        probs = amount / action.shape[-1] + (1 - amount) * action
        return F.one_hot(torch.multinomial(probs, 1)[:, 0], action.shape[-1]).to(action.dtype)
    return (action + amount * torch.randn_like(action)).clamp(-1, 1)


@register("recipe", "dreamer")
class Dreamer(L.LightningModule):
    """DreamerV1/V2-family agent; which variant is decided by the components it is given."""

    def __init__(
        self,
        model: ModelConfig,
        behavior: BehaviorConfig,
        components: dict,
        env_info,
        log_every: int = 100,
        nonfinite: str = "stop",
        world_model_pretrain: int = 0,
    ):
        super().__init__()
        if nonfinite not in NONFINITE:
            raise ConfigError(f"train.nonfinite: unknown {nonfinite!r}; valid: {', '.join(NONFINITE)}")
        self.automatic_optimization = False
        self.model_cfg, self.behavior_cfg, self.log_every, self.nonfinite = model, behavior, log_every, nonfinite
        self.world_model_pretrain = world_model_pretrain
        self.world_model = WorldModel(model, components, env_info.obs_space, env_info.action_dim, behavior.discount)
        self.behavior = Behavior(
            behavior, components["actor_grad"], self.world_model.rssm.feat_dim, env_info.action_dim, env_info.discrete
        )
        initialize(self, model.init)
        self.env_info = env_info
        self.experience = None  # attached by recipes.train before fitting
        self.skipped_updates = 0
        self.updates_made = 0
        self._agent_state = None

    @property
    def updates(self) -> int:
        """Batches the experience pipeline has scheduled: ``updates_made`` plus the one Lightning fetches
        ahead of the update it is making (none after the last)."""
        return self.experience.updates if self.experience is not None else 0

    # -- acting ---------------------------------------------------------------------------------
    @torch.no_grad()
    def policy(self, obs: TensorDict, mode: bool = False, explore: bool = False) -> torch.Tensor:
        """Actions for one step of every env ``[N]``: filter the observation, then sample (or take the mode);
        ``explore`` (collecting experience) adds ``behavior.expl_noise``."""
        obs = obs.to(self.device)
        n = obs.batch_size[0]
        if self._agent_state is None or self._agent_state[1].shape[0] != n:
            self._agent_state = (
                self.world_model.rssm.initial(n, self.device),
                torch.zeros(n, self.env_info.action_dim, device=self.device),
            )
        state, action = self._agent_state
        state = self.world_model.act_step(state, obs, action)
        dist = self.behavior.actor(self.world_model.rssm.features(state))
        action = dist.mode if mode else dist.sample()
        if explore and self.behavior_cfg.expl_noise > 0:
            action = action_noise(action, self.behavior_cfg.expl_noise, self.env_info.discrete)
        self._agent_state = (state, action)
        return action

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
        self.updates_made += 1
        with record_function("world_model.forward"):
            model_loss, post, metrics = self.world_model.loss(batch)
        if not self._finite({**metrics, "model/loss": model_loss}, "model/"):
            return
        self._step("world_model", model_opt, model_loss, self.model_cfg.opt.clip)
        if self.updates_made <= self.world_model_pretrain:
            self._log(metrics)
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
        self.behavior.update_slow_critic(self.updates_made - self.world_model_pretrain)
        metrics.update(behavior_metrics)
        self._log(metrics)

    def _finite(self, metrics: dict, prefix: str) -> bool:
        """Stop (or skip the update) before an optimizer step on a NaN/Inf loss, naming the term."""
        losses = {k: v.detach() for k, v in metrics.items() if k.startswith(prefix) and k.endswith("loss")}
        if torch.stack(list(losses.values())).isfinite().all():  # one host sync per loss group
            return True
        bad = ", ".join(k for k, v in losses.items() if not torch.isfinite(v))
        where = f"non-finite {bad} at update {self.updates_made} (agent step {self.experience.global_steps})"
        if self.nonfinite == "stop":
            raise NonFiniteLoss(f"{where}; training stopped, the last good checkpoint is kept")
        self.skipped_updates += 1
        log.warning("%s; update skipped (%d skipped so far)", where, self.skipped_updates)
        return False

    def on_train_epoch_end(self) -> None:
        # One epoch is one pass of the experience iterable, which ends at ``train.steps``.
        self.trainer.should_stop = True

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every rank's counters, sampler and RNG state, so a data-parallel run resumes each shard.
        state = {
            "experience": self.experience.state_dict(),
            "skipped_updates": self.skipped_updates,
            "updates_made": self.updates_made,
            "torch_rng": torch.get_rng_state(),
        }
        ranks = [state]
        if self.trainer.world_size > 1:
            ranks = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(ranks, state)
        checkpoint["dreamer"] = {"ranks": ranks}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        ranks = checkpoint["dreamer"]["ranks"]
        if len(ranks) != self.trainer.world_size:
            raise ConfigError(
                f"this checkpoint was written by {len(ranks)} rank(s); resume it with the same world size "
                f"(train.devices x train.num_nodes = {len(ranks)}), not {self.trainer.world_size}"
            )
        state = ranks[self.trainer.global_rank]
        self.experience.load_state_dict(state["experience"])
        self.skipped_updates = state["skipped_updates"]
        self.updates_made = state.get("updates_made", self.experience.updates)  # older checkpoints: the batch count
        torch.set_rng_state(state["torch_rng"])

    def _log(self, metrics: dict) -> None:
        exp = self.experience
        bar = {"env_steps": float(exp.global_steps), "updates": float(self.updates_made), "fps": exp.fps}
        if not math.isnan(exp.last_return):
            bar["return"] = exp.last_return
        self.log_dict(bar, prog_bar=True, logger=False, batch_size=1)
        if self.logger is None:
            return
        while exp.finished:
            steps, ret, length = exp.finished.popleft()
            self.logger.log_metrics(
                {"episode/return": ret, "episode/length": length},
                step=steps * exp.world_size * self.env_info.action_repeat,
            )
        if self.updates_made % self.log_every == 0:
            scalars = {k: float(v) for k, v in metrics.items()}
            scalars.update(
                {"train/updates": self.updates_made, "train/env_steps": exp.global_steps, "train/fps": exp.fps}
            )
            self.logger.log_metrics(scalars, step=exp.frames)
