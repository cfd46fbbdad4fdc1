"""The world model: encoder -> RSSM -> decoder, reward and discount heads, trained with a KL scheme.

    loss = sum_k scale_k * -log p_k(target_k | features) + kl_scheme(posterior, prior)

for k in decoder (every observation key), reward (after ``reward_transform``)
and discount (target gamma * (1 - is_terminal), or 1 - is_terminal for DreamerV3's
continue head). A head not in ``grad_heads`` still learns, but on features with the
gradient stopped, so it does not shape the representation (the paper's "no image/reward
gradients" ablations).
"""

from __future__ import annotations

import torch
from torch import nn

from components.nets import compiled
from components.rssm import RSSM
from components.transforms import REWARD_TRANSFORMS
from recipes.config import HEAD_NAMES, ModelConfig
from registry import build


class WorldModel(nn.Module):
    """Learns latent dynamics from replayed sequences; the behavior imagines inside it."""

    def __init__(self, cfg: ModelConfig, components: dict, obs_space: dict, action_dim: int, discount: float):
        super().__init__()
        self.cfg, self.discount = cfg, discount
        self.latent = build("latent", components["latent"])
        self.kl = build("kl", components["kl"])
        self.encoder = build("encoder", components["encoder"], obs_space=obs_space)
        self.rssm = RSSM(cfg.rssm, self.latent, action_dim, self.encoder.out_dim)
        feat = self.rssm.feat_dim
        self.decoder = build("decoder", components["decoder"], feat_dim=feat, obs_space=obs_space)
        self.reward_head = build("head", cfg.reward_head, path="model.reward_head", in_dim=feat)
        self.discount_head = (
            build("head", cfg.discount_head, path="model.discount_head", in_dim=feat) if cfg.discount_head else None
        )
        self.heads = [h for h in HEAD_NAMES if h != "discount" or self.discount_head is not None]

    def compile_parts(self) -> None:
        """Compile the RSSM's filtering step and the decoder's loss (preprocessing the targets and
        the squared error over every pixel, one fused pass forward and one backward) with
        :func:`components.nets.compiled` (train.compile)."""
        self.rssm.compile_steps()
        self.decoder.loss = compiled(self.decoder.loss)

    def loss(self, batch) -> tuple[torch.Tensor, dict, dict]:
        """World-model loss on a ``[B, T]`` batch; returns (loss, posterior states, metrics)."""
        embed = self.encoder(batch)
        post, prior_params = self.rssm.observe(embed, batch["action"], batch["is_first"])
        feat = self.rssm.features(post)
        inputs = {h: feat if h in self.cfg.grad_heads else feat.detach() for h in self.heads}
        nll = {"decoder": sum(v.mean() for v in self.decoder.loss(self.decoder(inputs["decoder"]), batch).values())}
        reward = REWARD_TRANSFORMS[self.cfg.reward_transform](batch["reward"].float())
        nll["reward"] = -self.reward_head(inputs["reward"]).log_prob(reward).mean()
        if self.discount_head is not None:
            scale = self.discount if self.cfg.discount_target == "discount" else 1.0
            target = scale * (1.0 - batch["is_terminal"].float())
            nll["discount"] = -self.discount_head(inputs["discount"]).log_prob(target).mean()
        kl_loss, kl_metrics = self.kl(self.latent, post["params"], prior_params)
        loss = kl_loss + sum(self.cfg.loss_scales.get(k, 1.0) * v for k, v in nll.items())
        metrics = {f"model/{k}_loss": v.detach() for k, v in nll.items()}
        metrics.update({f"model/{k}": v for k, v in kl_metrics.items()})
        metrics["model/kl_loss"] = kl_loss.detach()
        metrics["model/loss"] = loss.detach()
        return loss, post, metrics

    def imagined_discount(self, feat: torch.Tensor) -> torch.Tensor:
        """gamma * P(continue) at imagined features: the discount head's mean, or for a continue head
        (``discount_target=continue``) gamma times its mode, 0 or 1, without gradient (DreamerV3)."""
        if self.cfg.discount_target == "discount":
            return self.discount_head(feat).mean
        with torch.no_grad():  # the mode passes no gradient: keep no graph of the head either
            probs = self.discount_head(feat).mean
        return self.discount * (probs > 0.5).to(probs.dtype)

    @torch.no_grad()
    def act_step(self, state, obs, action: torch.Tensor):
        """Filter one environment step ``[N]`` for acting: posterior state from obs and the previous action."""
        embed = self.encoder({k: v[:, None] for k, v in obs.items()})[:, 0]
        post, _ = self.rssm.obs_step(state, action, embed, obs["is_first"])
        return post

    @torch.no_grad()
    def decode_image(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder's mean ``image`` for ``features [B, T, F]``, in [0, 1] pixel units (not clamped)."""
        return self.decoder(features)["image"].mean + 0.5

    @torch.no_grad()
    def open_loop(self, batch, context: int = 5) -> torch.Tensor:
        """Open-loop video prediction of the ``image`` key, in the official layout.

        The posterior filters the first ``context`` frames, then the prior alone predicts
        the rest from the recorded actions. Returns uint8 ``[T, 3H, N*W, C]``: rows are
        truth, model and error ((model - truth + 1) / 2), one column per sequence.
        """
        embed = self.encoder({k: v[:, :context] for k, v in batch.items()})
        post, _ = self.rssm.observe(embed, batch["action"][:, :context], batch["is_first"][:, :context])
        state = {k: v[:, -1] for k, v in post.items()}
        feats = [self.rssm.features(post)]
        for t in range(context, batch["action"].shape[1]):
            state = self.rssm.img_step(state, batch["action"][:, t])
            feats.append(self.rssm.features(state)[:, None])
        model = self.decode_image(torch.cat(feats, 1))
        truth = batch["image"].float() / 255.0
        error = (model - truth + 1) / 2
        video = torch.cat([truth, model, error], -2).clamp(0, 1)  # [N, T, C, 3H, W]
        video = torch.cat(list(video), -1)  # sequences side by side: [T, C, 3H, N*W]
        return (video.permute(0, 2, 3, 1) * 255).to(torch.uint8).cpu()
