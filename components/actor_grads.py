"""Actor-gradient estimators: REINFORCE, dynamics backpropagation and their mix (paper eq. 6).

Each is ``objective = estimator(policy, actions, returns, baseline, step)``, a
per-step quantity the actor maximises (the behavior assembly adds the entropy
bonus, weights by the cumulative discount and negates)::

    objective = rho * log pi(a|z) * sg(V_lambda - v(z)) + (1 - rho) * V_lambda

rho = 1 is REINFORCE (Atari), rho = 0 dynamics backpropagation (continuous control).
``step`` counts agent steps (the official schedules' environment-step counter).

``reinforce`` takes the log-probability of detached actions (official code since 6504715);
``mix`` (the official ``both``) does not detach them, so its REINFORCE term also passes a
gradient through a reparameterised continuous action into the actor (a one-hot action's
log-probability stops it, as TensorFlow Probability's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from registry import ConfigError, register


def _reinforce(policy, actions, returns, baseline):
    return policy.log_prob(actions) * (returns - baseline).detach()


@register("actor_grad", "reinforce")
class Reinforce:
    """Score-function gradient with the critic as baseline; no gradient through the model."""

    def __call__(self, policy, actions, returns, baseline, step: int = 0) -> torch.Tensor:
        return _reinforce(policy, actions.detach(), returns, baseline)


@dataclass
class DynamicsConfig:
    """Dynamics backpropagation's objective."""

    baseline: bool = False
    """Maximise V_lambda - v(z) rather than V_lambda (DreamerV3 v1): the value at an imagined state is not
    detached, so its gradient through the state also reaches the actor (V2: false)."""


@register("actor_grad", "dynamics", DynamicsConfig)
class Dynamics:
    """Backpropagate the lambda-return through the learned dynamics into the actor."""

    def __init__(self, cfg: DynamicsConfig | None = None):
        self.cfg = cfg or DynamicsConfig()

    def __call__(self, policy, actions, returns, baseline, step: int = 0) -> torch.Tensor:
        return returns - baseline if self.cfg.baseline else returns


class Schedule:
    """A number, or ``linear(start, end, steps)`` interpolated over agent steps (official form)."""

    _LINEAR = re.compile(r"^\s*linear\(\s*([^,]+),\s*([^,]+),\s*([^,)]+)\)\s*$")

    def __init__(self, spec: str | float, key: str = "rho"):
        """Parse ``spec``; a malformed one raises ``ConfigError("<key>: ...")``."""
        self.spec = str(spec)
        match = self._LINEAR.match(self.spec)
        try:
            if match:
                self.start, self.end, self.steps = (float(g) for g in match.groups())
            else:
                self.start = self.end = float(self.spec)
                self.steps = 1.0
        except ValueError:
            raise ConfigError(f"{key}: cannot read {self.spec!r}; use a number or 'linear(start,end,steps)'") from None
        if self.steps <= 0:
            raise ConfigError(f"{key}: steps in {self.spec!r} must be positive")

    def __call__(self, step: int) -> float:
        frac = min(max(step / self.steps, 0.0), 1.0)
        return self.start + frac * (self.end - self.start)


@dataclass
class MixConfig:
    """Weights of the two estimators."""

    rho: str = "linear(0.9,1.0,2.5e6)"
    """Weight of REINFORCE: a number or ``linear(start,end,steps)`` over agent steps."""

    def check(self) -> None:
        rho = Schedule(self.rho)
        if not (0 <= rho.start <= 1 and 0 <= rho.end <= 1):
            raise ConfigError(f"rho: values in {self.rho!r} must lie in [0, 1]")


@register("actor_grad", "mix", MixConfig)
class Mix:
    """rho * REINFORCE (actions not detached) + (1 - rho) * dynamics backpropagation, rho on a schedule."""

    def __init__(self, cfg: MixConfig):
        self.rho = Schedule(cfg.rho)

    def __call__(self, policy, actions, returns, baseline, step: int = 0) -> torch.Tensor:
        rho = self.rho(step)
        return rho * _reinforce(policy, actions, returns, baseline) + (1 - rho) * returns
