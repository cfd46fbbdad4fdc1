"""The interface of every built-in kind: what an option of that kind must provide.

An option is registered with ``@register(kind, name, Schema)`` on a class (or on a factory
whose return annotation names the class); ``register`` checks the class against the kind's
interface below and names any missing method. Attributes (``out_dim``, ``params_dim``) are
read when the component is built. ``B`` is the batch, ``T`` time, ``N`` environments; the
leading dimensions of a tensor argument may be any (``...``) where the interface says so.

A component is built as ``target(cfg, **deps)``, ``cfg`` an instance of its schema (a dataclass
whose fields carry one-line attribute docstrings, and which may define ``check(self)`` raising
``ConfigError("<field>: ...")`` for a value out of range). A component whose state must survive a
resume is an ``nn.Module`` holding that state in buffers: it then reaches the agent's
``state_dict`` and so the checkpoints.

A plug-in adds a kind of its own the same way: ``registry.define_kind("transform", Transform)``
with its own Protocol, then ``@register("transform", ...)`` options of it.

This module imports no torch: the annotations are strings, read by people and type checkers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from registry.core import define_kind

if TYPE_CHECKING:
    import gymnasium
    from torch import Tensor
    from torch.distributions import Distribution


@runtime_checkable
class Encoder(Protocol):
    """Observations to one embedding vector per step.

    Built as ``target(cfg, obs_space={key: shape})`` (``shape`` without batch dims: ``(C, H, W)``
    for images, ``(D,)`` for vectors). ``encoder(obs)`` takes a mapping of ``[..., *shape]``
    tensors (images uint8) and returns ``[..., out_dim]`` float; ``out_dim`` is an attribute.

    Examples:
        >>> import torch, registry
        >>> enc = registry.build("encoder", {"name": "mlp", "layers": 1, "units": 8}, obs_space={"vector": (3,)})
        >>> enc({"vector": torch.zeros(2, 5, 3)}).shape, enc.out_dim
        (torch.Size([2, 5, 8]), 8)
    """

    out_dim: int

    def __call__(self, obs: Mapping[str, Tensor]) -> Tensor: ...


@runtime_checkable
class Decoder(Protocol):
    """Model features to one distribution per observation key, and their negative log-likelihood.

    Built as ``target(cfg, feat_dim=F, obs_space={key: shape})``. ``decoder(features [..., F])``
    returns ``{key: Distribution}`` with events of the key's shape; ``decoder.loss(dists, obs)``
    returns ``{key: -log p(obs[key]) [...]}`` (targets preprocessed as the decoder defines).

    Examples:
        >>> import torch, registry
        >>> dec = registry.build("decoder", {"name": "mlp", "layers": 1, "units": 8}, feat_dim=4,
        ...                      obs_space={"vector": (3,)})
        >>> dists = dec(torch.zeros(2, 5, 4))
        >>> dec.loss(dists, {"vector": torch.zeros(2, 5, 3)})["vector"].shape
        torch.Size([2, 5])
    """

    def __call__(self, features: Tensor) -> dict[str, Distribution]: ...

    def loss(self, dists: dict[str, Distribution], obs: Mapping[str, Tensor]) -> dict[str, Tensor]: ...


@runtime_checkable
class Latent(Protocol):
    """The stochastic state of the RSSM: parameters (what the prior and posterior nets output) to samples.

    Built as ``target(cfg)``. Attributes: ``params_dim`` (size of a parameter vector) and ``size``
    (size of a flat ``stoch`` sample). ``params`` are ``[..., params_dim]``; ``sample`` (with
    gradients: straight-through or reparameterised) and ``mode`` give ``[..., size]``; ``dist``
    a Distribution whose event is the whole latent; ``kl(post, prior)`` the KL summed over the
    latent, ``[...]``.

    Examples:
        >>> import torch, registry
        >>> latent = registry.build("latent", {"name": "categorical", "variables": 2, "classes": 3})
        >>> params = torch.zeros(4, latent.params_dim)
        >>> latent.sample(params).shape, latent.kl(params, params)
        (torch.Size([4, 6]), tensor([0., 0., 0., 0.]))
    """

    params_dim: int
    size: int

    def dist(self, params: Tensor) -> Distribution: ...

    def sample(self, params: Tensor) -> Tensor: ...

    def mode(self, params: Tensor) -> Tensor: ...

    def kl(self, post: Tensor, prior: Tensor) -> Tensor: ...


@runtime_checkable
class KL(Protocol):
    """The KL term of the world-model loss: balancing, free nats and its scale live here.

    Built as ``target(cfg)``. ``scheme(latent, post, prior)`` takes the latent (a ``Latent``)
    and its posterior and prior parameters ``[B, T, params_dim]``; returns ``(loss, metrics)``:
    the scaled scalar loss and a dict of scalar tensors logged under ``model/``.

    Examples:
        >>> import torch, registry
        >>> latent = registry.build("latent", {"name": "categorical", "variables": 2, "classes": 3})
        >>> kl = registry.build("kl", {"name": "balanced", "free": 1.0})
        >>> loss, metrics = kl(latent, torch.zeros(2, 5, 6), torch.zeros(2, 5, 6))
        >>> round(float(loss), 6), sorted(metrics)  # KL 0, clipped at 1 free nat, times scale 0.1
        (0.1, ['kl'])
    """

    def __call__(self, latent: Latent, post: Tensor, prior: Tensor) -> tuple[Tensor, dict[str, Tensor]]: ...


@runtime_checkable
class ReturnNorm(Protocol):
    """The scale ``S`` that divides the actor's returns and baseline (DreamerV3's return normalisation).

    Built as ``target(cfg)`` (or ``target()`` without a schema), an ``nn.Module`` so that any
    statistics it keeps are buffers that reach checkpoints. ``norm(returns)`` takes the
    lambda-returns ``[H, N]`` of the current update, updates its statistics and returns the scale
    (a float or a scalar tensor, > 0) to divide them by.

    Examples:
        >>> import torch, registry
        >>> norm = registry.build("return_norm", {"name": "percentile", "decay": 0.0})
        >>> float(norm(torch.linspace(0, 100, 101)))  # P95 - P5 of 0..100, no smoothing
        90.0
    """

    def __call__(self, returns: Tensor) -> Tensor | float: ...


@runtime_checkable
class ActorGrad(Protocol):
    """The actor's objective at each imagined step, which the behavior maximises.

    Built as ``target(cfg)`` (or ``target()`` without a schema). ``estimator(policy, actions,
    returns, baseline, step)``: ``policy`` the actor's Distribution over ``[H-1, N]`` start states,
    ``actions [H-1, N, A]`` taken, ``returns`` the lambda-returns and ``baseline`` the critic's
    values ``[H-1, N]``, ``step`` the update count (for schedules). Returns ``[H-1, N]``; the behavior
    adds the entropy bonus, weights by the cumulative discount and negates.

    Examples:
        >>> import torch, registry
        >>> est = registry.build("actor_grad", {"name": "dynamics"})
        >>> est(None, None, torch.ones(3, 2), torch.zeros(3, 2), step=0).shape
        torch.Size([3, 2])
    """

    def __call__(
        self, policy: Distribution, actions: Tensor, returns: Tensor, baseline: Tensor, step: int
    ) -> Tensor: ...


@runtime_checkable
class Head(Protocol):
    """Model features to a distribution: reward, discount, critic and actor heads.

    Built as ``target(cfg, in_dim=F, out_dim=D)`` (``out_dim`` defaults to 1 for scalar heads).
    ``head(features [..., F])`` returns a Distribution with batch shape ``[...]`` (scalar heads)
    or event ``[D]``; the behavior uses ``mean``, ``mode``, ``log_prob``, ``entropy``, ``rsample``.

    Examples:
        >>> import torch, registry
        >>> head = registry.build("head", {"name": "normal", "layers": 1, "units": 8}, in_dim=4)
        >>> head(torch.zeros(2, 5, 4)).mean.shape
        torch.Size([2, 5])
    """

    def __call__(self, features: Tensor) -> Distribution: ...


@runtime_checkable
class Replay(Protocol):
    """Experience storage: vector-env steps in, ``[B, T]`` windows out.

    Built as ``target(cfg, num_envs=N, length=T, directory=<run dir>/replay or None, seed=...)``.
    ``add(step)`` stores one TensorDict ``[N]`` (observation keys, ``action``, ``reward``, flags);
    ``sample(B)`` returns a TensorDict ``[B, T]`` of consecutive steps; ``steps`` is the stored
    steps per env; ``state_dict`` / ``load_state_dict`` keep the sampling position across a
    resume (``load_state_dict`` returns whether the stored data came back).

    Examples:
        >>> import logging, torch, registry
        >>> from tensordict import TensorDict
        >>> replay = registry.build("replay", {"name": "uniform", "capacity": 100}, num_envs=2, length=3)
        >>> logging.getLogger("torchrl").setLevel(logging.WARNING)  # imported by build: no storage notice
        >>> for _ in range(4):
        ...     replay.add(TensorDict({"reward": torch.zeros(2)}, batch_size=[2]))
        >>> replay.sample(5).batch_size, replay.steps
        (torch.Size([5, 3]), 4)
    """

    def add(self, step: Any) -> None: ...

    def sample(self, batch: int) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> bool: ...


@runtime_checkable
class Env(Protocol):
    """A gymnasium environment with dict observations and episode flags.

    Built as ``target(cfg, seed=...)``. Observations: ``image`` uint8 ``(C, H, W)`` and/or float32
    vectors ``(D,)``, plus bool ``is_first``, ``is_last``, ``is_terminal`` (wrap with
    ``components.envs.base.finish``, which adds them); actions ``Discrete`` or ``Box(-1, 1)``;
    ``metadata["action_repeat"]`` counts frames per agent step.

    Examples:
        >>> import registry
        >>> env = registry.build("env", {"name": "gym", "task": "CartPole-v1"}, seed=0)
        >>> sorted(env.reset(seed=0)[0])
        ['is_first', 'is_last', 'is_terminal', 'vector']
    """

    observation_space: gymnasium.spaces.Dict
    action_space: gymnasium.Space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]: ...

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]: ...

    def close(self) -> None: ...


@runtime_checkable
class Agent(Protocol):
    """What training, evaluation, checkpoints and videos use of an agent (a ``LightningModule``).

    Built as ``target(run, components, env_info)``: the validated run config
    (``runner.config.RunConfig``; the agent reads its own sections, e.g. ``run.model``), the
    validated component sections ``{kind: schema-checked mapping}`` and the env's ``EnvInfo``
    (``obs_space``, ``action_dim``, ``discrete``, ``action_repeat``).

    - ``policy(obs, state, mode)``: ``obs`` a TensorDict ``[N]`` of one step of every env,
      ``state`` the acting state it returned last (``None`` at the start), ``mode`` ``"explore"``
      (collecting experience: a sample plus any exploration noise), ``"sample"`` or ``"mode"``
      (evaluation); returns ``(action [N, A], state)`` with
      one-hot actions for discrete envs. The caller keeps the state, so evaluation episodes and
      training never share one.
    - ``training_step(batch [B, T])``: one update (Lightning; optimization may be manual).
    - ``updates``: the updates it has made, the one public update counter; it is saved in the
      checkpoint, with what ``state_dict`` holds (weights, buffers of stateful components).
    - ``experience``: set by ``runner.train`` before fitting, the ``Experience`` it can read
      counters from (``global_steps``, ``frames``) and whose state its checkpoints must carry
      (``recipes.agent.AgentModule`` does all of this; subclass it).
    - ``video(batch)``: uint8 ``[T, H, W, C]`` frames to write for a replayed ``[B, T]`` batch
      (Dreamer: the world model's open-loop prediction), or ``None`` for none.
    """

    updates: int

    def policy(self, obs: Any, state: Any, mode: str) -> tuple[Tensor, Any]: ...

    def training_step(self, batch: Any, batch_idx: int) -> Any: ...

    def video(self, batch: Any) -> Tensor | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, strict: bool = True) -> Any: ...


BUILTIN_KINDS = {
    "encoder": Encoder,
    "decoder": Decoder,
    "latent": Latent,
    "kl": KL,
    "actor_grad": ActorGrad,
    "head": Head,
    "return_norm": ReturnNorm,
    "replay": Replay,
    "env": Env,
    "agent": Agent,
}
for _name, _interface in BUILTIN_KINDS.items():
    define_kind(_name, _interface)
