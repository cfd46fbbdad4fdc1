"""Property-based: any drawn combination of components and settings either trains (smoke size)
or fails fast with a ConfigError naming the setting; never a hang or a raw error from inside torch.

FUZZ_EXAMPLES=200 python -m pytest tests/test_fuzz.py draws more combinations.
"""

from __future__ import annotations

import os
import signal
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import ConfigError
from runner.train import train

COMPONENTS = {
    "latent": ["categorical", "gaussian"],
    "kl": ["balanced", "plain"],
    "actor_grad": ["reinforce", "dynamics", "mix"],
    "replay": ["uniform", "prioritize_ends", "episodes"],
    "encoder": ["multi", "mlp", "conv"],
    "decoder": ["multi", "mlp", "conv"],
}
NUMBERS = {
    "train.batch": st.integers(-1, 4),
    "train.length": st.integers(0, 12),
    "train.train_ratio": st.sampled_from([0, 4, 16, 40]),
    "behavior.horizon": st.integers(0, 6),
    "behavior.discount": st.sampled_from([-0.1, 0.5, 0.99, 1.0, 1.5]),
    "behavior.lambda_": st.sampled_from([-0.5, 0.0, 0.95, 1.0, 2.0]),
    "kl.free": st.sampled_from([-1.0, 0.0, 1.0]),
    "size.stoch": st.integers(0, 4),
    "size.classes": st.integers(1, 4),
    "size.deter": st.integers(0, 12),
}


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("a run took over 60 s")


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "14")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    env=st.sampled_from(["CartPole-v1", "Pendulum-v1"]),
    choice=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in COMPONENTS.items()}),
    numbers=st.fixed_dictionaries({}, optional=NUMBERS),
)
def test_any_combination_runs_or_fails_with_a_config_error(make_cfg, env, choice, numbers):
    # Pendulum's episodes last 200 steps: a prefill of 200 holds one, so the official replay can draw
    # at once, and 30 steps of training follow (without it the updates owed to the steps collected
    # while waiting for an episode could outlast the 60 s limit)
    base = ["recipe=dreamerv2_cartpole", "debug=smoke", "logger=none", f"env.task={env}"]
    overrides = [*base, "train.prefill=200", "train.steps=230"]
    overrides += [f"{k}={v}" for k, v in choice.items()] + [f"{k}={v}" for k, v in numbers.items()]
    cfg = make_cfg(*overrides)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    start = time.time()
    try:
        summary = train(cfg)
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message.strip()  # one clear line naming what was wrong
    else:
        assert summary["agent_steps"] >= 230 and summary["updates"] > 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.time() - start < 60
