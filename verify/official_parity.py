"""Number-by-number parity of dreamerkit's DreamerV2 with the official implementation (PyPI ``dreamerv2==2.2.0``).

    python verify/official_parity.py                        # every case, tiny size, batch 3 x 8
    python verify/official_parity.py --size small --batch 16 --length 50   # every case, 16 x 50
    python verify/official_parity.py --cases dmc --size small

For each case (``CASES``: ``atari``, recipe dreamerv2_atari, REINFORCE, discount head;
``atari_nokl``, the plain-KL ablation, free nats 0.2 on each value and discrete exploration
noise; ``atari_gaussian``, the Gaussian-latent ablation with the official sigmoid2 std and free
nats per value; ``atari_mix``, our ``actor_grad=mix`` (rho 0.9) against the official ``both``
on discrete actions; ``dmc``, dreamerv2_dmc, dynamics backpropagation, no discount head, the
world-model and critic gradients clipped at norm 1, free nats and continuous exploration noise;
``dmc_proprio``, vector observations through the MLP encoder and decoder, ``mix`` on continuous
actions) both implementations are built at ``--size`` from the same config, the official initial
weights (the reward head's output bias set to ``REWARD_BIAS``, see below) are copied into
ours, and both are trained ``UPDATES`` (3) times, each update on its own batch (``--batch`` x
``--length`` random observations, actions, rewards, episode starts and terminals) with the
same random draws: every categorical sample (posterior, prior, one-hot action, discrete action
noise) is the argmax of the logits plus Gumbel noise made from one fixed
uniform tensor, every truncated-normal action the inverse CDF of one, and every Gaussian sample
(the Gaussian latent, continuous action noise) mean + std * (the normal inverse CDF of one), on
both sides. Then it compares, fp32:

- in the first update: the embedding, the posterior and prior parameters over the whole
  sequence, the KL before balancing and the KL loss after balancing and free nats (before its
  scale), the reconstruction loss (summed over the observation keys), the reward and discount
  losses; the imagined features and actions, the discounts and the lambda-returns of the
  actor-critic update;
- after each update: the world-model, actor and critic losses, the gradient of every variable
  (before clipping), every weight and both Adam moments of every variable (each moved into our
  layout by the weight map), the slow critic's weights. Each optimizer steps from the official
  gradients and each update starts from the official weights (see :func:`run_ours`), so every
  update compares ours on the same state, and rounding does not carry from one to the next;
- the features the prior imagines from the last posterior state for ``--length`` fixed actions;
- acting: ``policy`` on the first batch's observations, step by step from no state, in each
  official mode (``explore``, ``train``, ``eval``; ours ``explore``, ``explore`` and ``mode``),
  with the same fixed draws for the posterior, the action and its exploration noise: the
  actions and the carried deterministic and stochastic states;
- the slow critic along its schedule to the official counter 202 (copies at 0, 100 and 200: after
  our updates 1, 101 and 201): after the three updates, each call of the official
  ``update_slow_target`` and of our ``update_slow_critic`` is preceded by setting the critic to
  its trained weights times ``1 + 1e-3 * counter``, and the slow critics are compared at the
  counters ``SLOW_CHECKS`` around each copy;
- the config values the official config section and our recipe should share.

A case that cannot show what it is there for is refused (``parity: FAIL``): free nats that clip
every KL value or none. Before the table the harness lists, per case, the share of KL values the
free nats clip, the gradient norms and the updates the optimizers clipped, the near ties broken,
and the tensors that are zero on both sides.

Every tensor is compared element by element: an element's relative difference is
``|ours - official| / max(|official|, FLOOR * rms(official))``, ``rms`` the root mean square of
the official tensor and ``FLOOR`` 1, so an element is measured against itself or, near zero,
against the tensor's scale, where fp32 rounding alone exceeds the tolerance (a sum over the batch
reproduces its large entries to ~1e-5 and its small ones only absolutely). A quantity fails
when one of its elements differs by more than ``--tol`` (1e-4). The table gives the quantity,
the official and our value (the root mean square over a row's tensors) and the largest relative
difference, and a failing row names the tensor and index of it; it ends with
``parity: OK (<n> numeric quantities in <k> cases, max rel diff <x>; <m> config values equal)``
or ``parity: FAIL (<first failing quantity>)`` (exit 1). ``n`` counts distinct quantities: a row
whose tensors equal an earlier row's on both sides (the slow critic between its copies, the
official ``train`` mode's acting where it equals ``explore``) is marked ``(= ...)`` and counts
once, and a row that is zero on both sides is not counted; the config values are echoes of the
two configs, counted apart.
Before the table it lists the weights that did not map one to one (an official variable with no
counterpart in ours, or a parameter of ours that no official variable sets), since those alone
can explain a failure.

The official side runs in its own virtual environment (``--venv``, default ``runs/official-venv``),
created on the first run and reused after; dreamerkit never imports it. It holds ``PINS``
(TensorFlow's CPU build with the TensorFlow Probability and tf-keras releases that go with it)
and ``dreamerv2==2.2.0`` installed with ``--no-deps`` (its own requirements pin nothing usable
today). This file run with the venv's Python (``--worker DIR``) builds the official agent and
talks to the main process through ``.npz`` files in ``DIR``: ``inputs.npz`` (batches and fixed
noise) and ``spec.json`` in, ``official.npz`` (by variable path: weights, gradients, Adam moments;
results) out.

What the worker patches to load 2021 code on today's TensorFlow (nothing else is changed):

- ``TF_USE_LEGACY_KERAS=1``: ``tensorflow.keras`` is tf-keras 2 (Keras 3 lacks the layers' API
  the code uses), and ``tensorflow.keras.mixed_precision.experimental`` (removed) is set to
  ``tensorflow.keras.mixed_precision``; precision 32 never reads it.
- an empty ``gym`` module where gym is not installed (``common/envs.py`` imports it at the top;
  no environment is built);
- the package folder on ``sys.path``, since its modules ``import common`` absolutely;
- eager execution (``tf.config.run_functions_eagerly(True)``: the official ``jit: False``).

What the harness instruments (the official code runs unchanged inside):

- the random draws, as above, at their sources (:func:`share_random_draws`): TFP's
  ``samplers.categorical`` and ``samplers.normal`` and TensorFlow's
  ``stateless_parameterized_truncated_normal`` op, which TFP's ``OneHotCategorical``, ``Normal``
  (inside ``MultivariateNormalDiag``) and ``TruncatedNormal`` call, return samples made from the
  fixed uniforms, in the order the posterior, prior and actor ask for them; TFP's distributions
  and the official ``OneHotDist`` and ``TruncNormalDist`` (straight-through gradient, clipping)
  run as shipped around them. The inverse-CDF sample's gradient equals the op's registered
  implicit reparameterisation gradient at the same sample. The prior samples the official
  ``obs_step`` draws and discards get fresh noise (ours draws none). On our side
  ``torch.rand_like``, ``torch.rand``, ``torch.multinomial``, ``torch.randn_like`` and
  ``Normal``'s ``_standard_normal`` are patched alike (:func:`shared_torch_draws`). A fixed
  draw left unused on either side is an error.
- the three official optimizers run as shipped (Keras Adam, global-norm clipping, weight decay),
  handed a tape that keeps the loss and each variable's gradient as the optimizer asks for them;
  the weights and Keras' Adam moments are read after each update, the initial ones at the first
  optimizer call of each part. Our ``Dreamer.training_step`` runs as shipped too, with Lightning's
  side of it filled in: ``optimizers`` are ours from ``configure_optimizers``, ``manual_backward``
  is ``loss.backward()`` (Lightning's fp32 strategy) and ``clip_gradients`` Lightning's fp32
  precision plugin's, after keeping each gradient.
- ``WorldModel.loss``, ``WorldModel.imagine`` and ``ActorCritic.target`` are wrapped to keep
  what they return (ours: ``WorldModel.loss``, ``RSSM.observe``, ``Behavior.imagine`` and
  ``lambda_return``).
- the reward head's output bias starts at ``REWARD_BIAS`` (1) instead of 0: with the official
  zero, the imagined rewards, the lambda-returns and the values all start near zero, and the
  critic's gradient, a mean of residuals ``value - return`` of either sign, comes out ~80 times
  smaller than its terms, so that the ~4e-6 fp32 differences of the imagined trajectories
  alone made it differ by 4e-4 at 16 x 50 (size small; recomputed in float64 from each side's
  own trajectories, each side's value came back). With rewards near 1 the residuals share a
  sign and the same gradients agree to 1e-5.
- near ties: where a categorical sample's best two classes are within ``TIE`` (1e-4) of each
  other on the official side, fp32 rounding of the logits could make ours pick the other one and
  send that trajectory elsewhere. The worker raises the winner's noise there by ``2 * TIE`` in
  the uniforms it hands ours (:func:`break_near_ties`) and counts them; a 16 x 50 update at
  size small has about 50.

2.2.0 is danijar/dreamerv2 at 3a711b4. It predates HEAD's "Stop action gradient in reinforce
estimator" (6504715), but TFP's ``OneHotCategorical.log_prob`` stops the gradient of its
argument itself, so both lines compute the same gradients (checked with this harness).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from venvs import ensure_venv

ROOT = Path(__file__).resolve().parent.parent
PINS = ["tensorflow-cpu==2.21.0", "tensorflow-probability==0.25.0", "tf-keras==2.21.0", "ruamel.yaml==0.17.40"]
OFFICIAL = "dreamerv2==2.2.0"


class Case(NamedTuple):
    """One comparison: our recipe with ``overrides`` beside the official config ``section`` with the
    official keys ``official`` set (the paper ablation's and the overrides' own, in official terms)."""

    recipe: str
    overrides: list[str]
    section: str
    official: dict
    obs: dict  # observation key -> shape in the official layout (H, W, C images; D vectors)


FREE = 0.2  # free nats of the cases that test them: some [b, t] KL values lie below, some above
# (the vector observations' KL starts higher: 0.5 there)
ATARI, DMC = {"image": (64, 64, 1)}, {"image": (64, 64, 3)}
PROPRIO = {"position": (5,), "velocity": (4,)}
CASES = {  # the action space follows the section: Atari's 6 discrete actions, DMC's 2 continuous ones
    "atari": Case("dreamerv2_atari", [], "atari", {}, ATARI),
    "atari_nokl": Case(  # plain KL clips each [b, t] value; discrete exploration noise
        "dreamerv2_atari_nokl",
        [f"kl.free={FREE}", "behavior.expl_noise=0.3"],
        "atari",
        {"kl.balance": 0.5, "kl.free": FREE, "expl_noise": 0.3},
        ATARI,
    ),
    "atari_gaussian": Case(  # balanced KL with free nats per value
        "dreamerv2_atari",
        ["latent=gaussian", f"kl.free={FREE}", "kl.free_avg=false"],
        "atari",
        {"rssm.discrete": False, "kl.free": FREE, "kl.free_avg": False},
        ATARI,
    ),
    "atari_mix": Case(  # the official actor_grad both on discrete actions
        "dreamerv2_atari", ["actor_grad=mix", "actor_grad.rho=0.9"], "atari", {"actor_grad": "both"}, ATARI
    ),
    "dmc": Case(  # clipped world-model and critic gradients; continuous exploration noise
        "dreamerv2_dmc",
        [f"kl.free={FREE}", "kl.free_avg=false", "behavior.expl_noise=0.3"]
        + ["model.opt.clip=1", "behavior.critic_opt.clip=1"],
        "dmc_vision",
        {"kl.free": FREE, "kl.free_avg": False, "expl_noise": 0.3, "model_opt.clip": 1, "critic_opt.clip": 1},
        DMC,
    ),
    "dmc_proprio": Case(  # vector observations (MLP encoder and decoder), mix on continuous actions
        "dreamerv2_dmc",
        [
            "kl.free=0.5",
            "kl.free_avg=false",
            "actor_grad=mix",
            "actor_grad.rho=0.9",
        ],
        "dmc_proprio",
        {
            "kl.free": 0.5,
            "kl.free_avg": False,
            "actor_grad": "both",
        },
        PROPRIO,
    ),
}
LOW, HIGH = 1e-3, 1 - 1e-3  # range of the fixed uniforms: no sample sits on a bound


# -- the fixed random draws, shared by both sides ----------------------------------------------------


class Draws:
    """Fixed uniform tensors handed out per role in call order; a role with no queue gets fresh ones.

    Roles: ``post`` (posterior samples of the filtering steps), ``prior`` (prior samples of the
    imagination steps), ``observe_prior`` (the prior samples the official filtering step draws
    and discards), ``action`` (actor samples outside the RSSM).
    """

    def __init__(self, seed: int = 123):
        self.queues: dict[str, list[np.ndarray]] = {}
        self.stack: list[str] = []
        self.rng = np.random.default_rng(seed)
        self.ties = 0  # near ties broken (break_near_ties)

    def set(self, role: str, arrays) -> None:
        self.queues[role] = [np.asarray(a, np.float32) for a in arrays]

    @contextmanager
    def role(self, name: str):
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()

    def in_role(self, name: str, fn):
        """``fn`` (a function or method) drawing in role ``name``."""

        def drawing(*args, **kwargs):
            with self.role(name):
                return fn(*args, **kwargs)

        return drawing

    def current(self) -> str:
        if not self.stack:
            return "action"
        if self.stack[-1] == "prior" and "post" in self.stack[:-1]:
            return "observe_prior"
        return self.stack[-1]

    def take(self, shape) -> np.ndarray:
        role, shape = self.current(), tuple(int(s) for s in shape)
        queue = self.queues.get(role)
        if queue is None:
            return self.rng.uniform(LOW, HIGH, shape).astype(np.float32)
        if not queue:
            raise RuntimeError(f"no fixed draw left for role {role!r} (shape {shape})")
        draw = queue.pop(0)
        if int(np.prod(draw.shape)) != int(np.prod(shape)):
            raise RuntimeError(f"fixed draw for role {role!r} has shape {draw.shape}, the sampler asks {shape}")
        return draw.reshape(shape)

    def left(self) -> dict[str, int]:
        return {role: len(q) for role, q in self.queues.items() if q}


TIE = 1e-4  # two classes' Gumbel-perturbed logits closer than this: fp32 rounding may pick either


def break_near_ties(scores: np.ndarray, uniform: np.ndarray) -> int:
    """Where the best class of ``scores`` (logits plus the Gumbel noise of ``uniform``, [..., classes])
    leads the second by less than ``TIE``, raise its noise in ``uniform`` (in place) by ``2 * TIE``;
    returns how many. The official side samples first and hands ours the uniforms so changed: the
    logits of the two sides differ by fp32 rounding (~1e-6), which at a near tie could pick
    another class and send that trajectory elsewhere (about once in 10^6 draws, and an update at
    16 x 50 draws 10^5 to 10^6); now both pick the official one."""
    top2 = np.sort(scores, -1)[..., -2:]
    near = np.nonzero(top2[..., 1] - top2[..., 0] < TIE)
    where = (*near, scores.argmax(-1)[near])
    gumbel = -np.log(-np.log(uniform[where].astype(np.float64)))
    uniform[where] = np.exp(-np.exp(-(gumbel + 2 * TIE)))
    return len(near[0])


# -- the official side (runs in the venv) -------------------------------------------------------------


def official_import(package: Path):
    """Import the official ``agent`` and ``common`` modules with the shim the module docstring lists."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import importlib.util
    import types

    import tensorflow as tf

    tf.keras.mixed_precision.experimental = tf.keras.mixed_precision
    sys.modules["tensorflow.keras.mixed_precision.experimental"] = tf.keras.mixed_precision
    if importlib.util.find_spec("gym") is None:  # official_train.py's venv has the real one
        sys.modules["gym"] = types.ModuleType("gym")
    sys.path.insert(0, str(package))
    import agent
    import common

    tf.config.run_functions_eagerly(True)
    return tf, agent, common


class _Space:
    """What the official agent reads of a gym space: ``shape`` and, for discrete actions, ``n``."""

    def __init__(self, shape, n=None):
        self.shape = tuple(shape)
        if n is not None:
            self.n = n


def official_layers(common, module, prefix: str) -> dict:
    """Keras layers of an official module by path (``rssm/img_in``, ``actor/out/std``, ...)."""
    layers = {}
    subs = dict(getattr(module, "_modules", {}))  # common.Module.get's registry
    if isinstance(module, common.EnsembleRSSM):
        subs["gru"] = module._cell._layer
        if module._cell._norm:
            subs["gru_norm"] = module._cell._norm
    for name, sub in subs.items():
        path = f"{prefix}/{name}"
        if isinstance(sub, common.NormLayer):
            if sub._layer is not None:
                layers[path] = sub._layer
        elif isinstance(sub, common.Module):
            layers.update(official_layers(common, sub, path))
        else:
            layers[path] = sub
    return layers


def official_variables(common, modules: dict) -> dict:
    """Every variable of ``modules`` by path (``rssm/gru/kernel``); fails if one is left out."""
    out = {}
    for prefix, module in modules.items():
        for path, layer in official_layers(common, module, prefix).items():
            for v in layer.weights:
                out[f"{path}/{v.name.split('/')[-1].split(':')[0]}"] = v
        missing = {id(v) for v in module.variables} - {id(v) for v in out.values()}
        if missing:
            raise RuntimeError(f"{len(missing)} variables of {prefix} have no path")
    return out


def share_random_draws(tf, draws: Draws) -> None:
    """Make TensorFlow Probability's three random sources read ``draws``; its samplers run as shipped.

    What TFP 0.25 calls to sample: ``samplers.categorical`` (``OneHotCategorical``: the latent, the
    discrete actor, the discrete action noise), ``samplers.normal`` (``Normal``, under the Gaussian
    latent's ``MultivariateNormalDiag`` and the continuous action noise) and TensorFlow's
    ``stateless_parameterized_truncated_normal`` op (``TruncatedNormal``: the continuous actor).
    Each now turns one fixed uniform tensor into its sample: the argmax of the logits plus
    Gumbel noise, ``mean + stddev * ndtri(u)``, the inverse CDF of the truncated normal. That op's
    registered gradient is the implicit reparameterisation gradient, which the inverse CDF's
    gradient equals at the same sample.
    """
    from tensorflow_probability.python.distributions import truncated_normal
    from tensorflow_probability.python.internal import samplers

    def categorical(logits, num_samples, dtype=None, seed=None, name=None):
        uniform = draws.take([num_samples, *logits.shape])
        scores = logits[None] - tf.math.log(-tf.math.log(tf.constant(uniform)))
        draws.ties += break_near_ties(scores.numpy(), uniform)  # after the official sample: ours only
        return tf.transpose(tf.argmax(scores, -1, output_type=dtype or tf.int64))

    def normal(shape, mean=0.0, stddev=1.0, dtype=tf.float32, seed=None, name=None):
        return mean + stddev * tf.math.ndtri(tf.constant(draws.take(shape), dtype))

    def truncated(shape, seed, means, stddevs, minvals, maxvals, name=None):
        ndtr = lambda x: 0.5 * tf.math.erfc(-x / np.sqrt(2.0))  # noqa: E731
        low, high = ndtr((minvals - means) / stddevs), ndtr((maxvals - means) / stddevs)
        return tf.math.ndtri(low + tf.constant(draws.take(shape)) * (high - low)) * stddevs + means

    samplers.categorical, samplers.normal = categorical, normal
    truncated_normal.tf.random.stateless_parameterized_truncated_normal = truncated


REWARD_BIAS = 1.0  # the reward head's initial output bias on both sides (official: 0), see worker()
STEP = 1_000_000  # the agent step the updates run at (the schedules' counter, e.g. actor_grad=mix's rho)
UPDATES = 3  # real updates on both sides, every parameter and Adam moment compared after each
SLOW_CHECKS = (3, 99, 100, 101, 199, 200, 201, 202)  # official slow-critic counter values checked after their call


def worker(workdir: Path) -> None:
    """Build the official agent, train it ``UPDATES`` times on the fixed batches and draws, and save
    what it computed (``official.npz``); then run the slow critic's schedule on to counter 202."""
    spec = json.loads((workdir / "spec.json").read_text())
    inputs = dict(np.load(workdir / "inputs.npz"))
    package = Path(spec["package"])
    tf, agent, common = official_import(package)
    from ruamel.yaml import YAML

    tf.keras.utils.set_random_seed(spec["seed"])  # Python, NumPy and TensorFlow: the same official weights each run
    configs = YAML(typ="safe").load((package / "configs.yaml").read_text())
    config = common.Config(configs["defaults"]).update(configs[spec["section"]]).update(spec["config"])

    draws = Draws(spec["seed"])
    share_random_draws(tf, draws)
    rssm_cls = common.EnsembleRSSM
    rssm_cls.obs_step = draws.in_role("post", rssm_cls.obs_step.python_function)
    rssm_cls.img_step = draws.in_role("prior", rssm_cls.img_step.python_function)
    common.action_noise = draws.in_role("noise", common.action_noise)

    # The observations first: the encoder takes the batch shape from the first key.
    obs_space = {key: _Space(shape) for key, shape in spec["obs"].items()}
    obs_space.update({k: _Space(()) for k in ("reward", "is_first", "is_last", "is_terminal")})
    act_space = {"action": _Space((spec["action_dim"],), spec["action_dim"] if spec["discrete"] else None)}
    agnt = agent.Agent(config, obs_space, act_space, common.Counter(spec["step"]))
    wm, ac = agnt.wm, agnt._task_behavior
    parts = {  # optimizer -> the modules it trains, by path prefix
        "model": {"encoder": wm.encoder, "rssm": wm.rssm, **wm.heads},
        "actor": {"actor": ac.actor},
        "critic": {"critic": ac.critic},
    }
    behavior = {**parts["actor"], **parts["critic"], "target_critic": ac._target_critic}
    everything = {**parts["model"], **behavior}
    saved: dict[str, np.ndarray] = {}
    update = 0

    class Recording:
        """Hands a ``common.Optimizer`` a tape that keeps the loss and each variable's gradient as the
        optimizer asks for them (before its clipping); the optimizer then steps as shipped. On the
        first update it also keeps the initial weights: its modules' (the world model before its
        step; the actor, critic and target critic before the actor's and critic's)."""

        def __init__(self, name, optimizer):
            self.name, self.optimizer = name, optimizer

        def __call__(self, tape, loss, modules):
            if update == 1 and self.name != "critic":
                initial = parts["model"] if self.name == "model" else behavior
                saved.update({f"weight/0/{p}": v.numpy() for p, v in official_variables(common, initial).items()})
            paths = {id(v): p for p, v in official_variables(common, parts[self.name]).items()}

            class Tape:
                def gradient(_, target, sources):
                    grads = tape.gradient(target, sources)
                    saved[f"loss/{update}/{self.name}"] = loss.numpy()
                    for v, g in zip(sources, grads):
                        grad = np.zeros(v.shape, np.float32) if g is None else g.numpy()
                        saved[f"grad/{update}/{paths[id(v)]}"] = grad
                    return grads

            metrics = self.optimizer(Tape(), loss, modules)
            saved[f"grad_norm/{update}/{self.name}"] = metrics[f"{self.name}_grad_norm"].numpy()
            return metrics

        def moments(self) -> dict:
            """Keras Adam's first and second moments of every variable, by path."""
            adam, out = self.optimizer._opt, {}
            for path, v in official_variables(common, parts[self.name]).items():
                index = adam._index_dict[adam._var_key(v)]
                out[f"m/{update}/{path}"] = adam._momentums[index].numpy()
                out[f"v/{update}/{path}"] = adam._velocities[index].numpy()
            return out

    wm.model_opt = Recording("model", wm.model_opt)
    ac.actor_opt = Recording("actor", ac.actor_opt)
    ac.critic_opt = Recording("critic", ac.critic_opt)

    captured = {}
    wm_loss, wm_imagine, ac_target = wm.loss, wm.imagine, ac.target

    def loss(data, state=None):
        captured["wm"] = out = wm_loss(data, state)
        return out

    def imagine(*args, **kwargs):
        captured["seq"] = seq = wm_imagine(*args, **kwargs)
        return seq

    def target(seq):
        captured["target"] = out = ac_target(seq)
        return out

    wm.loss, wm.imagine, ac.target = loss, imagine, target
    # Every variable built first (Keras builds a layer at its first call, fresh draws), so that the
    # reward head's output bias starts at REWARD_BIAS; ours copies it with the other initial weights.
    first = {k: tf.convert_to_tensor(inputs[f"1/{k}"]) for k in (*spec["obs"], "action", "reward", "is_first")}
    feat = wm.rssm.get_feat(wm_loss({**first, "is_terminal": tf.zeros_like(first["is_first"])})[1])
    for head in (ac.actor, ac.critic, ac._target_critic):
        head(feat)
    official_variables(common, {"reward": wm.heads["reward"]})["reward/out/out/bias"].assign([REWARD_BIAS])
    draws.ties = 0
    # TFP's MultivariateNormalDiag draws its standard normals as [event, batch] and transposes them
    # (tfd.Sample): the Gaussian latent's shared uniforms go in that layout.
    latent = (lambda draws: draws) if spec["config"]["rssm.discrete"] else (lambda draws: draws.swapaxes(-1, -2))

    for update in range(1, UPDATES + 1):
        keys = (*spec["obs"], "action", "reward", "is_first", "is_terminal")
        data = {k: tf.convert_to_tensor(inputs[f"{update}/{k}"]) for k in keys}
        draws.set("post", latent(inputs[f"{update}/draw_post"]))
        draws.set("prior", latent(inputs[f"{update}/draw_behavior_prior"]))
        draws.set("action", inputs[f"{update}/draw_behavior_action"])
        agnt.train(data)
        left = draws.left()
        if left:
            raise RuntimeError(f"fixed draws not used by the official update {update}: {left}")
        saved.update({f"weight/{update}/{p}": v.numpy() for p, v in official_variables(common, everything).items()})
        for optimizer in (wm.model_opt, ac.actor_opt, ac.critic_opt):
            saved.update(optimizer.moments())
        model_loss, _, outs, metrics = captured["wm"]
        saved[f"kl_value/{update}"] = outs["kl"].numpy()
        if update == 1:  # the intermediate quantities of the first update
            post, prior = outs["post"], outs["prior"]
            saved["embed"] = outs["embed"].numpy()
            for name, state in (("post", post), ("prior", prior)):
                stats = [state["logit"]] if "logit" in state else [state["mean"], state["std"]]
                saved[f"{name}_stats"] = np.concatenate([x.numpy().reshape(*x.shape[:2], -1) for x in stats], -1)
            saved["kl_loss"] = metrics["kl_loss"].numpy()
            saved["decoder_loss"] = sum(metrics[f"{key}_loss"].numpy() for key in spec["obs"])
            for key in ("reward", "discount"):
                if f"{key}_loss" in metrics:
                    saved[f"{key}_loss"] = metrics[f"{key}_loss"].numpy()
            seq = captured["seq"]
            for key in ("feat", "action", "discount"):
                saved[f"imag_{key}"] = seq[key].numpy()
            saved["lambda_return"] = captured["target"][0].numpy()

    # The prior alone, from the last posterior state, for fixed actions (the open-loop prediction path).
    draws.set("prior", latent(inputs["draw_imagine_prior"]))
    start = {k: v[:, -1] for k, v in captured["wm"][2]["post"].items()}
    imagined = wm.rssm.imagine(tf.convert_to_tensor(inputs["imagine_action"]), start)
    saved["fixed_action_feat"] = wm.rssm.get_feat(imagined).numpy()
    left = draws.left()
    if left:
        raise RuntimeError(f"fixed draws not used by the official imagination: {left}")

    # Acting on the first batch's observations, step by step, in each mode (eval: the actor's mode).
    for mode in ("explore", "train", "eval"):
        draws.set("post", latent(inputs["act/draw_post"]))
        if mode != "eval":
            draws.set("action", inputs["act/draw_action"])
            if spec["config"]["expl_noise"]:
                draws.set("noise", inputs["act/draw_noise"])
        state, steps = None, []
        for t in range(inputs["1/action"].shape[1]):
            obs = {k: inputs[f"1/{k}"][:, t] for k in (*spec["obs"], "reward", "is_first", "is_terminal")}
            outputs, state = agnt.policy({**obs, "is_last": np.zeros_like(obs["is_first"])}, state, mode)
            latent_state, action = state
            deter, stoch = (latent_state[k].numpy().reshape(len(action), -1) for k in ("deter", "stoch"))
            steps.append((action.numpy(), deter, stoch))
        for key, values in zip(("action", "deter", "stoch"), zip(*steps)):
            saved[f"act/{mode}/{key}"] = np.stack(values, 1)
        left = draws.left()
        if left:
            raise RuntimeError(f"fixed draws not used by the official policy ({mode}): {left}")

    # The slow critic's schedule on to counter 202: the critic's weights scaled by 1 + 1e-3 * counter
    # before each call, so every copy (and any wrong one) leaves its own weights behind.
    critic = official_variables(common, parts["critic"])
    trained = {p: v.numpy() for p, v in critic.items()}
    for counter in range(UPDATES, SLOW_CHECKS[-1] + 1):
        for p, v in critic.items():
            v.assign(trained[p] * (1 + 1e-3 * counter))
        ac.update_slow_target()
        if counter in SLOW_CHECKS:
            target_critic = official_variables(common, {"target_critic": ac._target_critic})
            saved.update({f"slow/{counter}/{p}": v.numpy() for p, v in target_critic.items()})
    # The draws changed by break_near_ties, for ours.
    pristine = np.load(workdir / "inputs.npz")
    saved.update({f"draws/{k}": v for k, v in inputs.items() if "draw" in k and not np.array_equal(v, pristine[k])})
    saved["ties"] = np.array(draws.ties)
    np.savez(workdir / "official.npz", **saved)


# -- our side and the comparison (runs in dreamerkit's environment) -----------------------------------


def compose_ours(recipe: str, size: str, overrides: list[str]):
    """Our validated run config and components for ``recipe`` at ``size``."""
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    from runner.config import register_schema
    from runner.train import validate

    register_schema()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"recipe={recipe}", f"size={size}", "logger=none", "run_dir=unused", *overrides]
        )
    return validate(cfg)


def official_config(run, components) -> dict:
    """The official config keys (flat) that carry our run's sizes and hyperparameters."""
    size, model, behavior, kl = run.size, run.model, run.behavior, components["kl"]
    mlp = {"layers": size.mlp_layers, "units": size.mlp_units}
    out = {
        "precision": 32,
        "jit": False,
        "rssm.hidden": size.hidden,
        "rssm.deter": size.deter,
        **latent_config(components["latent"]),
        "encoder.cnn_depth": size.cnn_depth,
        "decoder.cnn_depth": size.cnn_depth,
        "pred_discount": model.discount_head is not None,
        "grad_heads": [{"decoder": "decoder"}.get(h, h) for h in model.grad_heads],
        "clip_rewards": model.reward_transform,
        "loss_scales.kl": kl["scale"],
        "kl.free": kl["free"],
        "kl.free_avg": kl["free_avg"],
        "kl.balance": kl.get("alpha", 0.5),
        "discount": behavior.discount,
        "discount_lambda": behavior.lambda_,
        "imag_horizon": behavior.horizon,
        "actor_ent": behavior.ent_scale,
        "actor_grad": {"mix": "both"}.get(components["actor_grad"]["name"], components["actor_grad"]["name"]),
        "slow_target_update": behavior.slow_critic_every,
        "slow_target_fraction": behavior.slow_critic_fraction,
        "expl_noise": behavior.expl_noise,
        "encoder.mlp_layers": [size.mlp_units] * size.mlp_layers,
        "decoder.mlp_layers": [size.mlp_units] * size.mlp_layers,
    }
    if components["actor_grad"]["name"] == "mix":  # the official actor_grad_mix weighs dynamics: 1 - rho
        from components.actor_grads import Schedule

        rho = Schedule(components["actor_grad"]["rho"])
        if rho.start != rho.end:
            raise ValueError("the official actor_grad_mix (2.2.0) is a number: give actor_grad.rho one")
        out["actor_grad_mix"] = 1 - rho.start
    if model.discount_head is not None:
        out["loss_scales.discount"] = model.loss_scales["discount"]
    for head in ("reward_head", "discount_head", "actor", "critic"):
        out.update({f"{head}.{k}": v for k, v in mlp.items()})
    for name, opt in (("model_opt", model.opt), ("actor_opt", behavior.actor_opt), ("critic_opt", behavior.critic_opt)):
        out.update({f"{name}.lr": opt.lr, f"{name}.eps": opt.eps, f"{name}.clip": opt.clip, f"{name}.wd": opt.wd})
    return out


def latent_config(latent: dict) -> dict:
    """The official ``rssm`` keys of our latent: categorical (``discrete`` classes) or Gaussian."""
    if latent["name"] == "categorical":
        return {"rssm.stoch": latent["variables"], "rssm.discrete": latent["classes"]}
    return {
        "rssm.stoch": latent["size"],
        "rssm.discrete": False,
        "rssm.std_act": latent["std_act"],
        "rssm.min_std": latent["min_std"],
    }


SIZE_KEYS = ("rssm.hidden", "rssm.deter", "rssm.stoch", "rssm.discrete", "encoder.cnn_depth", "decoder.cnn_depth")


def config_rows(package: Path, section: str, ablation: dict, ours: dict) -> list[tuple[str, object, object]]:
    """(key, official value, ours) for every shared hyperparameter that is not a size.

    The official value is the config section's, with the paper ablation's ``ablation`` keys on top.
    """
    import yaml

    configs = yaml.safe_load((package / "configs.yaml").read_text())
    flat = {}

    def put(mapping, prefix=""):
        for k, v in mapping.items():
            if isinstance(v, dict):
                put(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    put(configs["defaults"])
    put(configs[section])
    flat.update(ablation)
    rows = []
    for key, value in ours.items():
        official = flat.get(key)
        if isinstance(official, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                official = float(official)
            except ValueError:
                pass
        if key in SIZE_KEYS or key in ("precision", "jit") or key.endswith((".layers", ".units", ".mlp_layers")):
            continue
        if key == "kl.free_avg" and flat.get("kl.balance") == 0.5:
            continue  # the official plain KL clips each [b, t] value whatever free_avg says
        if key == "actor_grad" and official == "auto":
            official = "reinforce" if section == "atari" else "dynamics"
        rows.append((key, official, value))
    return rows


def make_inputs(run, components, obs: dict, action_dim: int, discrete: bool, batch: int, length: int, seed: int):
    """Each update's batch (official layout: images B x T x H x W x C) and the fixed uniforms of every
    sampler, keyed ``<update>/<name>``; the fixed actions and draws of the open-loop imagination and
    of acting (``act/``: the first batch's observations, step by step)."""
    rng = np.random.default_rng(seed)
    b, t, h = batch, length, run.behavior.horizon
    latent = components["latent"]
    shape = (latent["variables"], latent["classes"]) if latent["name"] == "categorical" else (latent["size"],)
    uniform = lambda *shape: rng.uniform(LOW, HIGH, shape).astype(np.float32)  # noqa: E731

    def actions():
        if discrete:
            return np.eye(action_dim, dtype=np.float32)[rng.integers(0, action_dim, (b, t))]
        return rng.uniform(-1, 1, (b, t, action_dim)).astype(np.float32)

    def observation(key_shape):
        if len(key_shape) == 3:
            return rng.integers(0, 128, (b, t, *key_shape), dtype=np.uint8)
        return rng.normal(0.5, 1, (b, t, *key_shape)).astype(np.float32)

    inputs = {"imagine_action": actions(), "draw_imagine_prior": uniform(t, b, *shape)}
    inputs["act/draw_post"] = uniform(t, b, *shape)
    inputs["act/draw_action"], inputs["act/draw_noise"] = uniform(t, b, action_dim), uniform(t, b, action_dim)
    for update in range(1, UPDATES + 1):
        is_first = np.zeros((b, t), bool)
        is_first[:, 0] = True
        is_first[update % b, t // 2] = True  # an episode start inside a sequence: the state resets there
        is_terminal = np.zeros((b, t), bool)
        is_terminal[update % b, t // 2 - 1] = True
        action = actions()
        action[is_first] = 0.0
        batch_inputs = {
            **{key: observation(key_shape) for key, key_shape in obs.items()},
            "action": action,
            "reward": rng.normal(1, 1, (b, t)).astype(np.float32),
            "is_first": is_first,
            "is_terminal": is_terminal,
            "draw_post": uniform(t, b, *shape),
            "draw_behavior_prior": uniform(h, b * t, *shape),
            "draw_behavior_action": uniform(h, b * t, action_dim),
        }
        inputs.update({f"{update}/{k}": v for k, v in batch_inputs.items()})
    return inputs


class WeightMap:
    """Where each of our parameters comes from among the official variables (by path), and how.

    Built once against the official initial weights, which fix the shapes and must have a zero
    bias wherever our layer has none; then :meth:`ours` moves any set of arrays with the official
    paths (weights, gradients, Adam moments) into our parameters' layout, transposed and permuted.
    """

    def __init__(self, official: dict, modules: dict):
        self.official = official
        self.params = {f"{prefix}.{name}": p for prefix, m in modules.items() for name, p in m.named_parameters()}
        self.names = {id(p): name for name, p in self.params.items()}
        self.moves: dict[str, tuple[tuple[str, ...], object]] = {}  # our name -> (official paths, layout change)
        self.read: set[str] = set()
        self.notes: list[str] = []

    def _move(self, param, paths, change=lambda *xs: xs[0]) -> None:
        name, paths = self.names[id(param)], tuple(paths)
        value = change(*(self.official[p] for p in paths))
        if tuple(value.shape) != tuple(param.shape):
            raise RuntimeError(f"{paths[0]}: official shape {tuple(value.shape)}, ours {tuple(param.shape)}")
        self.moves[name] = paths, change
        self.read.update(paths)

    def ours(self, arrays: dict) -> dict[str, np.ndarray]:
        """``arrays`` by official path -> by our parameter name, for the parameters whose sources it holds."""
        return {
            name: np.ascontiguousarray(change(*(arrays[p] for p in paths)))
            for name, (paths, change) in self.moves.items()
            if all(p in arrays for p in paths)
        }

    def load(self) -> None:
        """Copy the official initial weights into our parameters."""
        import torch

        with torch.no_grad():
            for name, value in self.ours(self.official).items():
                self.params[name].copy_(torch.as_tensor(value))

    def linear(self, paths, linear, in_perm=None) -> None:
        """Official Dense layers (kernel [in, out], bias) -> our ``nn.Linear`` (weight [out, in]).

        Several ``paths``: official layers whose outputs follow each other in our one layer
        (the actor's mean and std, the MLP decoder's keys).
        """
        paths = [paths] if isinstance(paths, str) else list(paths)

        def weight(*kernels):
            kernel = np.concatenate(kernels, 1)
            return (kernel if in_perm is None else kernel[in_perm]).T

        self._move(linear.weight, [f"{p}/kernel" for p in paths], weight)
        biases = [f"{p}/bias" for p in paths]
        if linear.bias is not None:
            self._move(linear.bias, biases, lambda *bs: np.concatenate(bs, 0))
            return
        if any(np.any(self.official[b]) for b in biases):
            raise RuntimeError(f"{paths[0]}/bias is not zero but our layer has no bias")
        self.read.update(biases)
        self.notes += [f"{b}: official Dense has a bias (zero at init), ours has none" for b in biases]

    def norm(self, path: str, layer_norm) -> None:
        self._move(layer_norm.weight, [f"{path}/gamma"])
        self._move(layer_norm.bias, [f"{path}/beta"])

    def conv(self, path: str, conv) -> None:
        """Kernel [kh, kw, a, b] -> weight [b, a, kh, kw] (Conv2D: a=in, b=out; Conv2DTranspose: a=out, b=in)."""
        self._move(conv.weight, [f"{path}/kernel"], lambda k: k.transpose(3, 2, 0, 1))
        self._move(conv.bias, [f"{path}/bias"])

    def dense_block(self, path: str, norm_path: str, block, in_perm=None) -> None:
        """Official Dense (+ NormLayer) -> one of our ``nets.dense`` blocks (Linear, optional LayerNorm, act)."""
        from torch import nn

        linear = next(m for m in block if isinstance(m, nn.Linear))
        self.linear(path, linear, in_perm)
        norms = [m for m in block if isinstance(m, nn.LayerNorm)]
        if f"{norm_path}/gamma" in self.official and norms:  # without ours, the report lists them unused
            self.norm(norm_path, norms[0])

    def mlp(self, prefix: str, net, in_perm, out_paths, norms: str = "norm") -> None:
        """Official dense{i}, <norms>{i} and output layers ``out_paths`` -> our ``nets.MLP``."""
        *blocks, out = list(net)
        for i, block in enumerate(blocks):
            self.dense_block(f"{prefix}/dense{i}", f"{prefix}/{norms}{i}", block, in_perm if i == 0 else None)
        self.linear(out_paths, out, in_perm if not blocks else None)

    def report(self) -> list[str]:
        """Official variables nobody reads and our parameters no official variable sets (left at their init)."""
        lines = list(self.notes)
        unread = [path for path in self.official if path not in self.read]
        lines += [f"{path}: official variable with no counterpart in ours" for path in unread]
        unset = [name for name in self.params if name not in self.moves]
        return lines + [f"{name}: ours only, left at its init {tuple(self.params[name].shape)}" for name in unset]


def permutations(stoch: int, deter: int, embed_chw: tuple | None, vector: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each of our feature and embedding entries, the official one.

    Official features are concat(stoch, deter), ours concat(deter, stoch); the official conv
    encoder flattens its output as (height, width, channels), ours as (channels, height, width).
    Both put the MLP encoder's ``vector`` outputs after the conv encoder's (``embed_chw``, if any).
    """
    feat = np.concatenate([np.arange(stoch, stoch + deter), np.arange(stoch)])
    conv = np.zeros(0, int)
    if embed_chw is not None:
        c, h, w = embed_chw
        cc, yy, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
        conv = ((yy * w + xx) * c + cc).reshape(-1)
    return feat, np.concatenate([conv, len(conv) + np.arange(vector)])


def our_permutations(wm, obs_space: dict) -> tuple[np.ndarray, np.ndarray]:
    """:func:`permutations` of our world model, whose encoder sees ``obs_space`` (our layout)."""
    import torch

    parts, embed_chw = wm.encoder.parts, None
    if "conv" in parts:
        image = next(shape for shape in obs_space.values() if len(shape) == 3)
        with torch.no_grad():
            embed_chw = tuple(parts["conv"].net[:-1](torch.zeros(1, *image)).shape[1:])
    return permutations(wm.latent.size, wm.rssm.deter, embed_chw, parts["mlp"].out_dim if "mlp" in parts else 0)


def weight_map(wm, behavior, weights: dict, spec: dict, perms) -> WeightMap:
    """Where our world model's and behavior's parameters come from among the official variables."""
    from torch import nn

    rssm, deter = wm.rssm, wm.rssm.deter
    feat_perm, embed_perm = perms
    encoder, decoder = wm.encoder.parts, wm.decoder.parts
    m = WeightMap(weights, {"world_model": wm, "behavior": behavior})
    if "conv" in encoder:
        for i, layer in enumerate(x for x in encoder["conv"].net if isinstance(x, nn.Conv2d)):
            m.conv(f"encoder/conv{i}", layer)
    if "mlp" in encoder:  # hidden layers only
        for i, block in enumerate(encoder["mlp"].net):
            m.dense_block(f"encoder/dense{i}", f"encoder/densenorm{i}", block)
    m.dense_block("rssm/img_in", "rssm/img_in_norm", rssm.img_in)
    m.linear("rssm/gru", rssm.cell.linear)
    if "rssm/gru_norm/gamma" in weights and isinstance(rssm.cell.norm, nn.LayerNorm):
        m.norm("rssm/gru_norm", rssm.cell.norm)
    m.dense_block("rssm/img_out_0", "rssm/img_out_norm_0", rssm.img_out[0])
    m.linear("rssm/img_dist_0", rssm.img_out[1])
    obs_perm = np.concatenate([np.arange(deter), deter + embed_perm])
    m.dense_block("rssm/obs_out", "rssm/obs_out_norm", rssm.obs_out[0], obs_perm)
    m.linear("rssm/obs_dist", rssm.obs_out[1])
    if "conv" in decoder:
        m.linear("decoder/convin", decoder["conv"].linear, feat_perm)
        for i, layer in enumerate(x for x in decoder["conv"].net if isinstance(x, nn.ConvTranspose2d)):
            m.conv(f"decoder/conv{i}", layer)
    if "mlp" in decoder:  # the official one output layer per key, ours one for all keys
        outs = [f"decoder/dense_{key}/out" for key in decoder["mlp"].keys]
        m.mlp("decoder", decoder["mlp"].net, feat_perm, outs, norms="densenorm")
    m.mlp("reward", wm.reward_head.net, feat_perm, "reward/out/out")
    if wm.discount_head is not None:
        m.mlp("discount", wm.discount_head.net, feat_perm, "discount/out/out")
    m.mlp("actor", behavior.actor.net, feat_perm, ["actor/out/out"] + ([] if spec["discrete"] else ["actor/out/std"]))
    m.mlp("critic", behavior.critic.net, feat_perm, "critic/out/out")
    m.mlp("target_critic", behavior.slow_critic.net, feat_perm, "target_critic/out/out")
    return m


@contextmanager
def shared_torch_draws(draws: Draws):
    """Make torch's random sources read ``draws`` as :func:`share_random_draws` makes TFP's.

    Ours samples with ``torch.rand_like`` (the categorical latent's Gumbel-max), ``torch.rand``
    (the truncated normal's inverse CDF), ``torch.multinomial`` (``Categorical.sample``: the
    discrete actor; the discrete action noise), ``torch.distributions.normal._standard_normal``
    (``Normal.rsample``: the Gaussian latent) and ``torch.randn_like`` (the continuous action
    noise). The uniform ones return the fixed uniforms, ``multinomial`` the argmax of the log
    probabilities plus Gumbel noise made from them, the normal ones ``ndtri`` of them.
    """
    from unittest import mock

    import torch
    from torch import distributions

    def uniform(shape, dtype=torch.float32):
        return torch.as_tensor(draws.take(shape), dtype=dtype)

    def rand(*shape, dtype=None, **kwargs):
        return uniform(shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape, dtype or torch.float32)

    def normal(shape, dtype=torch.float32):
        return torch.special.ndtri(uniform(shape, dtype))

    def multinomial(probs, num_samples, replacement=False, **kwargs):
        gumbel = -torch.log(-torch.log(uniform((num_samples, *probs.shape))))
        return (probs.log()[None] + gumbel).argmax(-1).T

    with (
        mock.patch.object(torch, "rand_like", lambda x, **kwargs: uniform(x.shape, x.dtype)),
        mock.patch.object(torch, "rand", rand),
        mock.patch.object(torch, "multinomial", multinomial),
        mock.patch.object(distributions.normal, "_standard_normal", lambda shape, dtype, device: normal(shape, dtype)),
        mock.patch.object(torch, "randn_like", lambda x, **kwargs: normal(x.shape, x.dtype)),
    ):
        yield


def run_ours(run, components, inputs: dict, official: dict, spec: dict):
    """Ours with the official initial weights, trained ``UPDATES`` times on the same batches and
    draws through ``Dreamer.training_step``, each step taken with the official gradients: (results
    by the official keys, weight map, permutations)."""
    from types import SimpleNamespace
    from unittest import mock

    import torch
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.utilities import GradClipAlgorithmType
    from tensordict import TensorDict

    import recipes.behavior as behavior_module
    import recipes.dreamer as dreamer_module
    from components.envs import EnvInfo
    from recipes.dreamer import Dreamer

    torch.manual_seed(spec["seed"])
    ours_layout = {k: (s[2], s[0], s[1]) if len(s) == 3 else tuple(s) for k, s in spec["obs"].items()}  # images CHW
    info = EnvInfo(ours_layout, spec["action_dim"], spec["discrete"], action_repeat=1)
    agent = Dreamer(run, components, info)
    wm, behavior = agent.world_model, agent.behavior
    perms = our_permutations(wm, ours_layout)
    weights_in_ours = weight_map(wm, behavior, arrays(official, "weight/0/"), spec, perms)
    weights_in_ours.load()

    def observations(prefix: str, at=slice(None)) -> dict:
        """Our layout of the observations ``<prefix><key>`` (images channels first), at time ``at``."""
        out = {}
        for key, shape in spec["obs"].items():
            x = torch.as_tensor(inputs[prefix + key][:, at])
            out[key] = x.movedim(-1, -3) if len(shape) == 3 else x
        return out

    draws = Draws(spec["seed"])
    rssm = wm.rssm
    rssm.obs_step, rssm.img_step = draws.in_role("post", rssm.obs_step), draws.in_role("prior", rssm.img_step)
    action_noise_in_role = draws.in_role("noise", dreamer_module.action_noise)

    # Lightning's side of a training step, which needs a fitting trainer: the fp32 strategy's
    # backward is loss.backward(), its clip Lightning's own fp32 plugin. The backward keeps each
    # loss; the clip keeps each gradient (before clipping, as the official recording), then puts
    # the official one in its place, so that both optimizers step from the same gradients: Adam
    # divides a gradient by its running scale, which turns the ~1e-4 rounding differences of a
    # 16 x 50 batch's gradients into differences of up to 1e-2 in the steps of the parameters
    # whose gradients are below its epsilon, and those would carry into the next update. For the
    # same reason each update after the first starts from the official weights (ours are kept
    # first): Keras' Adam takes its bias corrections from fp32 powers of beta_2 (1 - 0.999 is
    # 1.3e-5 off in fp32), ours from Python floats, so a parameter's first steps differ by ~7e-6
    # of themselves, and dynamics backpropagation through the imagined horizon grows that into
    # gradient differences above 1e-4 by the third update (vector case, actor_grad=mix).
    names = {id(p): n for n, p in weights_in_ours.params.items()}
    parts = ("model", "actor", "critic")
    optimizers = agent.configure_optimizers()
    ours: dict[str, np.ndarray] = {}
    update, losses = 0, []

    def backward(loss):
        losses.append(loss.item())
        loss.backward()

    def clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm):
        theirs = weights_in_ours.ours(arrays(official, f"grad/{update}/"))
        for p in optimizer.param_groups[0]["params"]:
            ours[f"grad/{update}/{names[id(p)]}"] = np.zeros(p.shape) if p.grad is None else p.grad.double().numpy()
            p.grad = torch.tensor(theirs[names[id(p)]])
        Precision().clip_gradients(optimizer, gradient_clip_val, GradClipAlgorithmType(gradient_clip_algorithm))

    agent.optimizers, agent.manual_backward, agent.clip_gradients = lambda: optimizers, backward, clip_gradients
    agent.log_update, agent.experience = lambda metrics: None, SimpleNamespace(global_steps=spec["step"])

    captured = {}
    model_loss, observe, imagine, lambda_return = wm.loss, rssm.observe, behavior.imagine, behavior_module.lambda_return

    def model_loss_kept(*args, **kwargs):
        captured["model_loss"] = out = model_loss(*args, **kwargs)
        return out

    def observe_kept(embed, *args, **kwargs):
        captured["embed"] = embed
        captured["observe"] = out = observe(embed, *args, **kwargs)
        return out

    def imagine_kept(*args, **kwargs):
        captured["seq"] = out = imagine(*args, **kwargs)
        return out

    def lambda_return_kept(*args, **kwargs):
        captured["lambda_return"] = out = lambda_return(*args, **kwargs)
        captured["discount"] = args[2]
        return out

    wm.loss, rssm.observe, behavior.imagine = model_loss_kept, observe_kept, imagine_kept
    ours_mode = {"explore": "explore", "train": "explore", "eval": "mode"}
    numpy = lambda x: x.detach().double().numpy()  # noqa: E731
    with (
        shared_torch_draws(draws),
        mock.patch.object(behavior_module, "lambda_return", lambda_return_kept),
        mock.patch.object(dreamer_module, "action_noise", action_noise_in_role),
    ):
        for update in range(1, UPDATES + 1):
            keys = ("action", "reward", "is_first", "is_terminal")
            batch = {**observations(f"{update}/"), **{k: torch.as_tensor(inputs[f"{update}/{k}"]) for k in keys}}
            draws.set("post", inputs[f"{update}/draw_post"])
            draws.set("prior", inputs[f"{update}/draw_behavior_prior"])
            draws.set("action", inputs[f"{update}/draw_behavior_action"])
            losses.clear()
            agent.training_step(batch, update - 1)
            ours.update({f"loss/{update}/{part}": loss for part, loss in zip(parts, losses, strict=True)})
            left = draws.left()
            if left:
                raise RuntimeError(f"fixed draws not used by our update {update}: {left}")
            ours.update({f"weight/{update}/{n}": numpy(p) for n, p in weights_in_ours.params.items()})
            with torch.no_grad():  # the next update starts from the official weights (see above)
                for n, value in weights_in_ours.ours(arrays(official, f"weight/{update}/")).items():
                    weights_in_ours.params[n].copy_(torch.as_tensor(value))
            for optimizer in optimizers:
                for p in optimizer.param_groups[0]["params"]:
                    state = optimizer.state[p]
                    ours[f"m/{update}/{names[id(p)]}"] = numpy(state["exp_avg"])
                    ours[f"v/{update}/{names[id(p)]}"] = numpy(state["exp_avg_sq"])
            _, post, metrics = captured["model_loss"]
            _, prior_params = captured["observe"]
            ours[f"kl_value/{update}"] = numpy(wm.latent.kl(post["params"], prior_params))
            if update == 1:
                seq = captured["seq"]
                ours.update(
                    embed=numpy(captured["embed"]),
                    post_stats=numpy(latent_stats(wm.latent, post["params"])),
                    prior_stats=numpy(latent_stats(wm.latent, prior_params)),
                    kl_loss=numpy(metrics["model/kl_loss"] / components["kl"]["scale"]),
                    imag_feat=numpy(seq["feat"]),
                    imag_action=numpy(seq["action"]),
                    imag_discount=numpy(captured["discount"]),
                    lambda_return=numpy(captured["lambda_return"]),
                )
                for key in ("decoder", "reward", "discount"):
                    if f"model/{key}_loss" in metrics:
                        ours[f"{key}_loss"] = numpy(metrics[f"model/{key}_loss"])

        draws.set("prior", inputs["draw_imagine_prior"])
        with torch.no_grad():
            state = {k: v[:, -1] for k, v in post.items()}
            feats = []
            for t in range(inputs["imagine_action"].shape[1]):
                state = rssm.img_step(state, torch.as_tensor(inputs["imagine_action"][:, t]))
                feats.append(rssm.features(state))
        ours["fixed_action_feat"] = numpy(torch.stack(feats, 1))
        left = draws.left()
        if left:
            raise RuntimeError(f"fixed draws not used by our imagination: {left}")

        # Acting as the worker does; the official eval mode is our "mode", train and explore our "explore".
        for mode in ("explore", "train", "eval"):
            draws.set("post", inputs["act/draw_post"])
            if mode != "eval":
                draws.set("action", inputs["act/draw_action"])
                if run.behavior.expl_noise:
                    draws.set("noise", inputs["act/draw_noise"])
            state, steps = None, []
            for t in range(inputs["1/action"].shape[1]):
                obs = {**observations("1/", t), "is_first": torch.as_tensor(inputs["1/is_first"][:, t])}
                action, state = agent.policy(TensorDict(obs, batch_size=[len(obs["is_first"])]), state, ours_mode[mode])
                steps.append((numpy(action), numpy(state[0]["deter"]), numpy(state[0]["stoch"])))
            for key, values in zip(("action", "deter", "stoch"), zip(*steps)):
                ours[f"act/{mode}/{key}"] = np.stack(values, 1)
            left = draws.left()
            if left:
                raise RuntimeError(f"fixed draws not used by our policy ({mode}): {left}")

    # The slow critic's schedule as the worker runs it; our update u is the official counter u - 1.
    trained = [p.detach().clone() for p in behavior.critic.parameters()]
    for counter in range(UPDATES, SLOW_CHECKS[-1] + 1):
        with torch.no_grad():
            for p, w in zip(behavior.critic.parameters(), trained):
                p.copy_(w * (1 + 1e-3 * counter))
        behavior.update_slow_critic(counter + 1)
        if counter in SLOW_CHECKS:
            for n, p in behavior.slow_critic.named_parameters():
                ours[f"slow/{counter}/behavior.slow_critic.{n}"] = numpy(p)
    return ours, weights_in_ours, perms


def latent_stats(latent, params):
    """What the official state holds: the logits, or the Gaussian's mean and std."""
    import torch

    if hasattr(latent, "classes"):
        return params
    dist = latent.dist(params).base_dist
    return torch.cat([dist.mean, dist.stddev], -1)


TOL = 1e-4  # the largest relative difference that passes (--tol)
FLOOR = 1.0  # of a tensor's root mean square: the smallest denominator of its elements' relative differences


def rel_diff(official, ours) -> tuple[float, tuple[int, ...]]:
    """The largest |ours - official| / max(|official|, FLOOR * rms(official)) over the elements, and where.

    An element passes when this is at most the tolerance: relative to itself, or to a hundredth of
    the tensor's scale for the elements near zero, whose relative error fp32 arithmetic makes large.
    A tensor of zeros has no scale: any nonzero element of ours is an infinite difference, and so
    is a non-finite element on either side (a NaN there compares as nothing, on one side or both).
    """
    official, ours = np.asarray(official, np.float64), np.asarray(ours, np.float64)
    if official.shape != ours.shape:
        raise RuntimeError(f"shapes differ: official {official.shape}, ours {ours.shape}")
    if official.size == 0:
        return 0.0, ()
    floor = FLOOR * np.sqrt(np.mean(np.square(official)))
    diff = np.abs(ours - official)
    scale = np.maximum(np.abs(official), floor)
    ratio = np.divide(diff, scale, out=np.where(diff > 0, np.inf, 0.0), where=scale > 0)
    ratio[~(np.isfinite(official) & np.isfinite(ours))] = np.inf
    where = np.unravel_index(np.argmax(ratio), ratio.shape)
    return float(ratio[where]), tuple(int(i) for i in where)


class Row(NamedTuple):
    """One line of the table: a numeric quantity (:func:`compare`) or a config value (``content`` None)."""

    name: str
    official: str
    ours: str
    tensors: int  # how many tensors the row compares (0: a config value)
    diff: float  # the largest relative difference; a config value: 0 if equal, else inf
    where: str  # the tensor label and index of ``diff``
    content: bytes | None = None  # a digest of the official and our tensors: equal rows are one quantity
    zero: tuple[str, ...] = ()  # the labels of the tensors that are zero on both sides


def compare(name: str, tensors: dict) -> Row:
    """One row: ``name``, the official and our root mean square over ``tensors`` ({label: (official,
    ours)}), the largest relative difference (:func:`rel_diff`) and where it is (label, index)."""
    worst, where, digest = -1.0, "", hashlib.sha256()
    for label, (o, u) in tensors.items():
        d, index = rel_diff(o, u)
        if not d <= worst:
            worst, where = d, f"{label}{list(index) if index else ''}"
        for x in (o, u):
            x = np.asarray(x, np.float64)
            digest.update(repr(x.shape).encode() + x.tobytes())
    zero = tuple(label for label, (o, u) in tensors.items() if not np.any(o) and not np.any(u))
    official, ours = zip(*tensors.values())
    return Row(name, summary(official), summary(ours), len(tensors), worst, where, digest.digest(), zero)


def verdict(rows: list[Row], cases: int, tol: float) -> str:
    """The last line: the first failing row, or the count of distinct numeric quantities (a row
    whose tensors equal an earlier row's on both sides, such as the slow critic between its copies,
    counts once; one that is zero on both sides not at all: it cannot fail), the largest relative
    difference and the count of config values (echoes of the two configs, not quantities)."""
    failed = [r for r in rows if not r.diff <= tol]
    if failed:
        return f"parity: FAIL ({failed[0].name})"
    numeric = [r for r in rows if r.content is not None]
    counted = {r.content for r in numeric if len(r.zero) < r.tensors}
    configs = len(rows) - len(numeric)
    worst = max((r.diff for r in numeric), default=0.0)
    return (
        f"parity: OK ({len(counted)} numeric quantities in {cases} cases, max rel diff {worst:.2e}; "
        f"{configs} config values equal)"
    )


def summary(xs) -> str:
    """A scalar's value, or the root mean square of the tensors ``xs``."""
    if len(xs) == 1 and np.ndim(xs[0]) == 0:
        return f"{float(xs[0]):.6g}"
    return f"rms {np.sqrt(np.mean(np.concatenate([np.square(np.ravel(x)) for x in xs]))):.6g}"


PARTS = {  # what each optimizer trains, by our parameter name prefix
    "world model": "world_model.",
    "actor": "behavior.actor.",
    "critic": "behavior.critic.",
}
KINDS = {"grad": "gradients", "weight": "weights after", "m": "Adam m after", "v": "Adam v after"}


def arrays(saved: dict, prefix: str, keep: str = "") -> dict:
    """The entries of ``saved`` under ``prefix``, by the rest of their key (``keep`` put back in front)."""
    return {keep + k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}


def rows_for(case: str, official: dict, ours: dict, spec: dict, perms, weights_in_ours: WeightMap):
    """Every compared quantity of one case, as :func:`compare` rows."""
    feat_perm, embed_perm = perms
    rows = []

    def add(name, o, u):
        rows.append(compare(f"{case}: {name}", {"": (o, u)}))

    def tensors(kind: str, at: int, prefix: str) -> dict:
        """Official and our arrays of ``kind`` at update (or counter) ``at`` under ``prefix``, in our layout."""
        key = f"{kind}/{at}/"
        moved = {n: v for n, v in weights_in_ours.ours(arrays(official, key)).items() if n.startswith(prefix)}
        mine = arrays(ours, key + prefix, keep=prefix)
        if set(moved) != set(mine):
            raise RuntimeError(f"{key}{prefix}: on one side only: {sorted(set(moved) ^ set(mine))}")
        return {n[len(prefix) :]: (moved[n], mine[n]) for n in mine}

    add("embedding", official["embed"][..., embed_perm], ours["embed"])
    stats = "logits" if spec["config"]["rssm.discrete"] else "mean, std"
    add(f"posterior {stats} [B,T]", official["post_stats"], ours["post_stats"])
    add(f"prior {stats} [B,T]", official["prior_stats"], ours["prior_stats"])
    add("KL before balancing [B,T]", official["kl_value/1"], ours["kl_value/1"])
    add("KL loss after balancing and free nats", official["kl_loss"], ours["kl_loss"])
    for key in ("decoder", "reward", "discount"):
        if f"{key}_loss" in official or f"{key}_loss" in ours:
            add(f"{key} loss", official.get(f"{key}_loss", np.nan), ours.get(f"{key}_loss", np.nan))
    add("imagined features (actor) [H+1,N]", official["imag_feat"][..., feat_perm], ours["imag_feat"])
    add("imagined actions [H+1,N]", official["imag_action"], ours["imag_action"])
    add("discounts [H+1,N]", official["imag_discount"][:-1], ours["imag_discount"])
    add("lambda-returns [H,N]", official["lambda_return"], ours["lambda_return"])
    for update in range(1, UPDATES + 1):
        for part, name in (("model", "world-model"), ("actor", "actor"), ("critic", "critic")):
            add(f"update {update}: {name} loss", official[f"loss/{update}/{part}"], ours[f"loss/{update}/{part}"])
        for kind, what in KINDS.items():
            for part, prefix in PARTS.items():
                rows.append(compare(f"{case}: update {update}: {what}, {part}", tensors(kind, update, prefix)))
        slow = tensors("weight", update, "behavior.slow_critic.")
        rows.append(compare(f"{case}: update {update}: slow critic", slow))
    add("features, fixed actions [B,H]", official["fixed_action_feat"][..., feat_perm], ours["fixed_action_feat"])
    for mode in ("explore", "train", "eval"):
        for key, what in (("action", "actions"), ("deter", "deterministic states"), ("stoch", "stochastic states")):
            add(f"acting ({mode}): {what} [B,T]", official[f"act/{mode}/{key}"], ours[f"act/{mode}/{key}"])
    for counter in SLOW_CHECKS:
        slow = tensors("slow", counter, "behavior.slow_critic.")
        rows.append(compare(f"{case}: slow critic at counter {counter}", slow))
    return rows


def official_run(python: Path, workdir: Path) -> dict:
    """Run the worker in the venv; the official results by key."""
    out = subprocess.run([str(python), __file__, "--worker", str(workdir)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the official worker failed:\n{out.stderr[-6000:]}")
    return dict(np.load(workdir / "official.npz"))


def package_dir(python: Path) -> Path:
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(site) / "dreamerv2"


class Refused(RuntimeError):
    """A case that cannot show what it is there for (free nats that clip every KL value, or none)."""


def compare_case(case: str, python: Path, args) -> tuple[list, list[str], list[str]]:
    """Every row of ``case``, the weight map's report and what else the case found."""
    recipe, overrides, section, official_keys, obs = CASES[case]
    run, components = compose_ours(recipe, args.size, [*overrides, *args.override])
    discrete = section == "atari"
    action_dim = 6 if discrete else 2
    seed = args.seed + list(CASES).index(case)  # each case its own weights, batches and draws
    package = package_dir(python)
    spec = {
        "package": str(package),
        "section": section,
        "config": official_config(run, components),
        "obs": {k: list(v) for k, v in obs.items()},
        "action_dim": action_dim,
        "discrete": discrete,
        "seed": seed,
        "step": STEP,
    }
    inputs = make_inputs(run, components, obs, action_dim, discrete, args.batch, args.length, seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "spec.json").write_text(json.dumps(spec))
        np.savez(workdir / "inputs.npz", **inputs)
        official = official_run(python, workdir)
    inputs.update(arrays(official, "draws/"))
    ours, weights_in_ours, perms = run_ours(run, components, inputs, official, spec)
    rows = rows_for(case, official, ours, spec, perms, weights_in_ours)
    for key, o, u in config_rows(package, section, official_keys, spec["config"]):
        same = o == u or (isinstance(o, (int, float)) and isinstance(u, (int, float)) and abs(o - u) <= 1e-12 * abs(o))
        rows.append(Row(f"{case}: config {key}", o, u, 0, 0.0 if same else float("inf"), ""))
    facts = [f"{case}: {fact}" for fact in case_facts(official, spec, components)]
    return rows, [f"{case}: {line}" for line in weights_in_ours.report()], facts


def case_facts(official: dict, spec: dict, components: dict) -> list[str]:
    """What the case exercised, from the official side: the share of KL values the free nats clip
    in each update (refused unless some are clipped and some not), the updates whose gradients the
    optimizers clipped, the near ties broken."""
    config, facts = spec["config"], []
    if config["kl.free"] > 0:
        per_value = config["kl.balance"] == 0.5 or not config["kl.free_avg"]  # the official rule
        kl = [official[f"kl_value/{u}"] for u in range(1, UPDATES + 1)]
        clipped = [float(np.mean((x if per_value else x.mean()) < config["kl.free"])) for x in kl]
        what = "of the [B,T] KL values" if per_value else "of the batch-mean KL"
        fact = (
            f"free nats {config['kl.free']} clip {', '.join(f'{c:.0%}' for c in clipped)} {what} in updates 1-{UPDATES}"
        )
        if not all(0 < c < 1 for c in clipped):
            raise Refused(f"{fact}: a KL gradient must flow past free nats that clip some values, not all or none")
        facts.append(fact)
    for part, name in (("model", "world model"), ("actor", "actor"), ("critic", "critic")):
        norms = [float(official[f"grad_norm/{u}/{part}"]) for u in range(1, UPDATES + 1)]
        clip, clipped = config[f"{part}_opt.clip"], sum(n > config[f"{part}_opt.clip"] for n in norms)
        facts.append(f"{name} gradient norms {', '.join(f'{n:.3g}' for n in norms)}: clip {clip} in {clipped} updates")
    facts.append(f"{int(official['ties'])} near ties (margin < {TIE}) broken toward the official class for ours")
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--size", default="tiny", help="a conf/size preset (default tiny)")
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=TOL, help=f"largest relative difference passing (default {TOL})")
    parser.add_argument("--venv", type=Path, default=ROOT / "runs" / "official-venv")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for our side")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    python = ensure_venv(args.venv, PINS, no_deps=[OFFICIAL])
    rows, notes, facts = [], [], []
    for case in args.cases:
        try:
            r, n, f = compare_case(case, python, args)
        except Refused as refused:
            print(f"parity: FAIL ({case}: {refused})")
            sys.exit(1)
        rows, notes, facts = rows + r, notes + n, facts + f
    print("\n".join(facts), end="\n\n")
    if notes:
        print("weights that do not map one to one:")
        for line in notes:
            print(f"  {line}")
        print()
    zero = [f"{r.name}: {label or 'all'}" for r in rows for label in r.zero]
    if zero:
        print("tensors zero on both sides (a row of only these is not counted):")
        print("\n".join(f"  {line}" for line in zero), end="\n\n")
    width = max(len(r.name) for r in rows)
    print(f"{'quantity':<{width}}  {'official':>16}  {'ours':>16}  {'rel diff':>9}")
    first = {}
    for r in rows:
        flag = "" if r.diff <= args.tol else "  <-- differs" + (f" most at {r.where}" if r.where else "")
        if r.content is not None and first.setdefault(r.content, r.name) != r.name:
            flag += f"  (= {first[r.content].split(': ', 1)[1]})"
        print(f"{r.name:<{width}}  {r.official!s:>16}  {r.ours!s:>16}  {r.diff:9.2e}{flag}")
    line = verdict(rows, len(args.cases), args.tol)
    print(line)
    if line.startswith("parity: FAIL"):
        sys.exit(1)


if __name__ == "__main__":
    main()
