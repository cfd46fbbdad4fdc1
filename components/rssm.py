"""Recurrent state-space model (RSSM) with a swappable stochastic latent kind.

    h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])      deter
    prior      p(z_t | h_t)                      img_step (observe keeps only its parameters)
    posterior  q(z_t | h_t, e_t)                 obs_step
    features = concat(h_t, z_t)

A state is a plain dict ``{"deter", "stoch", "params"}`` where ``params`` are
the latent's distribution parameters (logits, or mean/std). The RSSM never asks
which latent kind it holds: it calls ``latent.params_dim``, ``sample``, ``size``.

Conventions: ``action[t]`` is the action that led to observation ``t`` (zeros
at an episode start) and ``is_first[t]`` resets state and action to zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.nets import NORM_EPS, BlockLinear, check_activation, compiled, dense, hidden
from registry import ConfigError

State = dict[str, torch.Tensor]


@dataclass
class RSSMConfig:
    """Sizes and layer options of the recurrent model (paper Atari: deter 600, hidden 600)."""

    deter: int = 600
    """Size of the deterministic state h (the GRU)."""
    hidden: int = 600
    """Units of the dense layers before the GRU and before the prior and posterior parameters."""
    act: str = "elu"
    """Activation of those dense layers."""
    norm: bool = False
    """LayerNorm (and no bias) in those dense layers; the official DreamerV2 has none there."""
    gru_norm: bool = True
    """LayerNorm inside the GRU cell, the only one of the official nets; false is the paper's
    "no layer norm" ablation."""
    gru_bias: bool = True
    """Bias in the GRU's dense layer, before its LayerNorm (the official DreamerV2 has one, DreamerV3 none)."""
    blocks: int = 1
    """Split the GRU into this many blocks with block-diagonal recurrent weights (DreamerV3's current
    code: 8), each seeing the whole input and its own slice of h: 1/blocks of the GRU's multiply-adds."""
    learned_initial: bool = False
    """Start episodes from a learned deter (tanh of a parameter) and its prior's mode, not zeros (DreamerV3)."""
    action_clip: float = 0.0
    """Scale each action component beyond +-action_clip back to it before the RSSM reads it, the scale
    without gradient (DreamerV3: 1, its actor's samples are unbounded); 0 = off."""

    def check(self) -> None:
        for name in ("deter", "hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        check_activation("act", self.act)
        if self.action_clip < 0:
            raise ConfigError(f"action_clip: must be >= 0 (0 = off), got {self.action_clip}")
        if self.blocks < 1 or self.deter % self.blocks:
            raise ConfigError(f"blocks: must be >= 1 and divide deter ({self.deter}), got {self.blocks}")


class GRUCell(nn.Module):
    """GRU cell: one dense layer (with or without bias) over [x, h] to the reset, candidate and update parts,
    optional LayerNorm (Keras epsilon) over all three, update gate biased towards keeping h (-1).
    With ``blocks > 1`` the dense layer is a :class:`BlockLinear`: block ``g`` computes the three
    parts of its own slice of h."""

    def __init__(
        self,
        in_dim: int,
        size: int,
        norm: bool = True,
        update_bias: float = -1.0,
        blocks: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        self.blocks = blocks
        if blocks == 1:
            self.linear = hidden(nn.Linear(in_dim + size, 3 * size, bias=bias))
        else:
            self.linear = hidden(BlockLinear(in_dim, size, 3 * size, blocks, bias))
        self.norm = nn.LayerNorm(3 * size, eps=NORM_EPS) if norm else nn.Identity()
        self.update_bias = update_bias

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.blocks == 1:
            parts = self.norm(self.linear(torch.cat([x, h], -1)))
        else:  # normalise all parts together, as unblocked; then gather each part over the blocks
            parts = self.norm(self.linear(x, h).flatten(-2))  # [..., (g 3 k)]
            parts = parts.unflatten(-1, (self.blocks, 3, -1)).transpose(-3, -2).flatten(-3)  # [..., (3 g k)]
        reset, cand, update = parts.chunk(3, -1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update + self.update_bias)
        return update * cand + (1 - update) * h


class RSSM(nn.Module):
    """The world model's recurrent dynamics: observe (posterior) and imagine (prior) steps."""

    def __init__(self, cfg: RSSMConfig, latent, action_dim: int, embed_dim: int):
        super().__init__()
        self.latent, self.deter = latent, cfg.deter
        self.img_in = dense(latent.size + action_dim, cfg.hidden, cfg.act, cfg.norm)
        self.cell = GRUCell(cfg.hidden, cfg.deter, cfg.gru_norm, blocks=cfg.blocks, bias=cfg.gru_bias)
        self.img_out = nn.Sequential(
            dense(cfg.deter, cfg.hidden, cfg.act, cfg.norm), nn.Linear(cfg.hidden, latent.params_dim)
        )
        self.obs_out = nn.Sequential(
            dense(cfg.deter + embed_dim, cfg.hidden, cfg.act, cfg.norm), nn.Linear(cfg.hidden, latent.params_dim)
        )
        self.feat_dim = cfg.deter + latent.size
        self.learned_initial, self.action_clip = cfg.learned_initial, cfg.action_clip
        if cfg.learned_initial:
            self.initial_deter = nn.Parameter(torch.zeros(cfg.deter))

    def compile_steps(self) -> None:
        """Compile the filtering step (observe and acting call it) with :func:`components.nets.compiled`.

        Only the step: a compiled ``observe`` unrolls all ``T`` steps into one graph (the whole
        world-model loss at T = 64 had not compiled after 20 minutes on a 2-core CPU). The imagine
        step is compiled inside the whole imagination rollout (``Behavior.compile_imagination``).
        """
        self.obs_step = compiled(self.obs_step)

    def initial(self, batch: int, device=None, dtype=torch.float32) -> State:
        """The state at an episode start: all zeros, or the learned deter with its prior's mode."""
        if self.learned_initial:
            deter = torch.tanh(self.initial_deter).to(device=device, dtype=dtype)[None]
            params = self.img_out(deter)
            state = {"deter": deter, "stoch": self.latent.mode(params), "params": params}
            return {k: v.expand(batch, -1) for k, v in state.items()}
        return {
            "deter": torch.zeros(batch, self.deter, device=device, dtype=dtype),
            "stoch": torch.zeros(batch, self.latent.size, device=device, dtype=dtype),
            "params": torch.zeros(batch, self.latent.params_dim, device=device, dtype=dtype),
        }

    @staticmethod
    def features(state: State) -> torch.Tensor:
        """concat(deter, stoch): the input of every head."""
        return torch.cat([state["deter"], state["stoch"]], -1)

    def _advance(self, state: State, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h_t from (h_{t-1}, z_{t-1}, a_{t-1}) and the prior's parameters at h_t."""
        if self.action_clip:  # the gradient still reaches the action, scaled by clip / |a| beyond it
            action = action * (self.action_clip / action.abs().clamp(min=self.action_clip)).detach()
        x = self.img_in(torch.cat([state["stoch"], action.to(state["stoch"].dtype)], -1))
        deter = self.cell(x, state["deter"])
        return deter, self.img_out(deter)

    def img_step(self, state: State, action: torch.Tensor) -> State:
        """One step of the prior: advance h with the previous (z, a) and sample z from p(z | h)."""
        deter, params = self._advance(state, action)
        return {"deter": deter, "stoch": self.latent.sample(params), "params": params}

    def obs_step(
        self,
        state: State,
        action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
        initial: State | None = None,
    ):
        """One filtering step: reset at ``is_first``, advance h, then sample the posterior q(z | h, e).

        Returns the posterior state and the prior's parameters at the same h (the KL needs
        only those, so no prior sample is drawn). ``initial`` is the learned episode start
        (``self.initial(1)``): :meth:`observe` computes it once per sequence, a lone step here.
        """
        keep = (~is_first.bool()).to(embed.dtype).unsqueeze(-1)
        if self.learned_initial:
            if initial is None:
                initial = self.initial(1, embed.device, embed.dtype)
            state = {k: v * keep + initial[k] * (1 - keep) for k, v in state.items()}
        else:
            state = {k: v * keep for k, v in state.items()}
        deter, prior_params = self._advance(state, action * keep)
        params = self.obs_out(torch.cat([deter, embed], -1))
        return {"deter": deter, "stoch": self.latent.sample(params), "params": params}, prior_params

    def observe(self, embed: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor, state: State | None = None):
        """Filter sequences ``[B, T]``: posterior states ``[B, T, ...]`` and prior parameters ``[B, T, P]``."""
        initial = self.initial(1, embed.device, embed.dtype) if self.learned_initial else None
        if state is None:
            state = self.initial(embed.shape[0], embed.device, embed.dtype)
        posts, prior_params = [], []
        for t in range(embed.shape[1]):
            state, params = self.obs_step(state, action[:, t], embed[:, t], is_first[:, t], initial)
            posts.append(state)
            prior_params.append(params)
        return {k: torch.stack([s[k] for s in posts], 1) for k in posts[0]}, torch.stack(prior_params, 1)
