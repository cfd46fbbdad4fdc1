"""Stochastic latent kinds for the RSSM: categorical (DreamerV2) and Gaussian (DreamerV1).

A latent kind turns a parameter vector (what the prior/posterior nets output)
into a distribution over the stochastic state ``stoch`` and flattens samples
into the feature vector. The RSSM talks only to this interface:

    params_dim   outputs the prior/posterior nets must produce
    size         length of a flat ``stoch`` sample
    dist(params) a torch Distribution whose event is the whole latent
    sample / mode(params) -> flat stoch;  kl(post, prior) -> KL summed over the latent
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import distributions as D

from registry import ConfigError, register, unknown


@dataclass
class CategoricalConfig:
    """32 categorical variables of 32 classes each (paper); ``unimix`` mixes in a uniform (0 = off)."""

    variables: int = 32
    """Categorical variables of the stochastic state."""
    classes: int = 32
    """Classes per variable."""
    unimix: float = 0.0
    """Share of a uniform distribution mixed into each variable's probabilities (0 = off)."""

    def check(self) -> None:
        if self.variables < 1:
            raise ConfigError(f"variables: must be >= 1, got {self.variables}")
        if self.classes < 2:
            raise ConfigError(f"classes: must be >= 2, got {self.classes}")
        if not 0.0 <= self.unimix < 1.0:
            raise ConfigError(f"unimix: must lie in [0, 1), got {self.unimix}")


@register("latent", "categorical", CategoricalConfig)
class Categorical:
    """Vector of one-hot categoricals with straight-through sample gradients (DreamerV2)."""

    def __init__(self, cfg: CategoricalConfig):
        self.variables, self.classes, self.unimix = cfg.variables, cfg.classes, cfg.unimix
        self.params_dim = self.size = cfg.variables * cfg.classes

    def _split(self, params: torch.Tensor) -> torch.Tensor:
        return params.reshape(*params.shape[:-1], self.variables, self.classes)

    def _log_probs(self, params: torch.Tensor) -> torch.Tensor:
        """Normalised log-probabilities ``[..., variables, classes]``, with the uniform mixed in."""
        logits = self._split(params).float()
        if self.unimix > 0:
            return ((1 - self.unimix) * logits.softmax(-1) + self.unimix / self.classes).log()
        return logits.log_softmax(-1)

    def dist(self, params: torch.Tensor) -> D.Independent:
        return D.Independent(D.OneHotCategoricalStraightThrough(logits=self._log_probs(params)), 1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """One-hot sample + probs - stop_grad(probs): the straight-through estimator.

        Drawn by Gumbel-max (argmax of logits + Gumbel noise), the same distribution as
        ``dist(params).rsample()`` at a quarter of the cost of torch's multinomial on CPU.
        """
        log_probs = self._log_probs(params)
        gumbel = -torch.log(-torch.log(torch.rand_like(log_probs).clamp_(min=1e-20)))
        probs = log_probs.exp()
        one_hot = F.one_hot((log_probs.detach() + gumbel).argmax(-1), self.classes).to(probs.dtype)
        return (one_hot + (probs - probs.detach())).flatten(-2).to(params.dtype)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The most likely class of each variable (mixing in a uniform never changes it)."""
        return F.one_hot(self._split(params).argmax(-1), self.classes).flatten(-2).to(params.dtype)

    def kl(self, post: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """KL(post || prior) summed over the variables: sum p * (log p - log q) of the normalised
        log-probabilities. torch's categorical KL gives the same value at two masked writes more (a
        host sync each, and their backward), except where a prior probability underflows to 0:
        torch's is inf there, this one stays finite (its log-probabilities come from log-softmax)."""
        log_p, log_q = self._log_probs(post), self._log_probs(prior)
        return (log_p.exp() * (log_p - log_q)).sum((-2, -1))


STD_ACTS = {
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "sigmoid2": lambda raw: 2 * torch.sigmoid(raw / 2),
}


@dataclass
class GaussianConfig:
    """Diagonal Gaussian of ``size`` dims; std = std_act(raw) + min_std."""

    size: int = 32
    """Dimensions of the latent."""
    min_std: float = 0.1
    """Added to the standard deviation."""
    std_act: str = "sigmoid2"
    """Map from the raw output to the std: sigmoid2 = 2 * sigmoid(raw / 2) (official DreamerV2),
    softplus (DreamerV1), sigmoid."""

    def check(self) -> None:
        if self.size < 1:
            raise ConfigError(f"size: must be >= 1, got {self.size}")
        if self.min_std < 0:
            raise ConfigError(f"min_std: must be >= 0, got {self.min_std}")
        if self.std_act not in STD_ACTS:
            raise unknown("std_act", self.std_act, STD_ACTS)


@register("latent", "gaussian", GaussianConfig)
class Gaussian:
    """Diagonal Gaussian latent with reparameterised samples (DreamerV1; the DreamerV2 ablation)."""

    def __init__(self, cfg: GaussianConfig):
        self.size, self.min_std = cfg.size, cfg.min_std
        self.std_act = STD_ACTS[cfg.std_act]
        self.params_dim = 2 * cfg.size

    def dist(self, params: torch.Tensor) -> D.Independent:
        mean, raw_std = params.float().chunk(2, -1)
        return D.Independent(D.Normal(mean, self.std_act(raw_std) + self.min_std), 1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return self.dist(params).rsample().to(params.dtype)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        return params.chunk(2, -1)[0]

    def kl(self, post: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return D.kl_divergence(self.dist(post), self.dist(prior))
