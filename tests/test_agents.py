"""The agent contract: a second agent trains, resumes and evaluates through the same code as Dreamer;
config errors stop a run before anything is built or written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import components.envs
import registry
import runner.train
from components.envs import env_info as components_env_info
from recipes.agent import AgentModule
from registry import ConfigError, register
from runner.evaluate import evaluate
from runner.train import train

SMOKE = ("recipe=dreamerv2_cartpole", "debug=smoke", "logger=csv", "agent=test_random")


@register("agent", "test_random")
class RandomAgent(AgentModule):
    """Uniform random actions; a trivial loss (w - 1)^2 on one parameter, with SGD."""

    def __init__(self, run, components: dict, env_info):
        super().__init__(log_every=run.train.log_every)
        self.action_dim, self.discrete = env_info.action_dim, env_info.discrete
        self.w = nn.Parameter(torch.zeros(()))
        self.states_seen: list = []

    def policy(self, obs, state, mode):
        self.states_seen.append(state)
        n, a = obs.batch_size[0], self.action_dim
        if self.discrete:
            action = nn.functional.one_hot(torch.randint(a, (n,)), a).float()
        else:
            action = torch.rand(n, a) * 2 - 1
        return action, (state or 0) + 1  # steps since the start of this acting stream

    def training_step(self, batch, batch_idx):
        self.count_update()
        loss = (self.w - 1.0) ** 2
        self.log_update({"random/loss": loss.detach()})
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)  # w <- w - 0.05 * 2 (w - 1): 1 - w shrinks by 0.9


def test_a_second_agent_trains_resumes_and_evaluates(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    first = train(make_cfg(*SMOKE, "train.steps=80"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    k = first["updates"]  # w = 1 - 0.9^k after k updates
    assert k > 10 and ckpt["agent"]["ranks"][0]["updates"] == k
    assert float(ckpt["state_dict"]["w"]) == pytest.approx(1 - 0.9**k, abs=1e-6)
    assert (run_dir / "config.yaml").read_text().count("agent: test_random") == 1

    resumed = train(make_cfg(f"resume={run_dir}"), overrides=["train.steps=120"])
    assert resumed["agent_steps"] == 120 and resumed["updates"] > k
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["agent"]["ranks"][0]["updates"] == resumed["updates"]
    # the resumed run went on from the saved w (from 0 it would be 1 - 0.9^(updates - k))
    assert float(ckpt["state_dict"]["w"]) == pytest.approx(1 - 0.9 ** resumed["updates"], abs=1e-6)

    out = run_dir / "eval" / "first"  # each evaluation's own folder (Hydra's job folder from run.py)
    summary = evaluate(make_cfg(f"evaluate={run_dir}", "eval.episodes=2", "eval.videos=0", f"run_dir={out}"))
    assert summary["episodes"] == 2 and summary["mean"] > 0
    assert len((out / "returns.csv").read_text().splitlines()) == 3


def test_evaluation_episodes_keep_their_own_acting_state(make_cfg):
    """An episode starts from state None and gets back what the policy returned, step by step."""
    from runner.config import validate
    from runner.episodes import run_episode

    run, components = validate(make_cfg(*SMOKE))
    env = registry.build("env", components["env"], seed=0)
    agent = RandomAgent(run, components, components_env_info(env))
    _, length, _ = run_episode(agent, env, seed=0, mode="mode", record=False)
    assert agent.states_seen == [None, *range(1, length)]


def test_a_bad_value_leaves_nothing_behind(make_cfg, tmp_path, monkeypatch):
    """Validation is one pass before anything is built: no envs, no run directory files."""
    made = []
    monkeypatch.setattr(components.envs, "make_vector_env", lambda *a, **k: made.append(a))
    with pytest.raises(ConfigError, match=r"^kl\.alpha: must lie in \[0, 1\], got 2\.0$"):
        train(make_cfg("recipe=dreamerv2_cartpole", "debug=smoke", "replay.storage=disk", "kl.alpha=2"))
    run_dir = Path(tmp_path / "run")
    assert not made
    assert not any((run_dir / name).exists() for name in ("config.yaml", "checkpoints", "replay", "commit.txt"))
    with pytest.raises(ConfigError, match=r"^agent: unknown agent 'nope'; valid: dreamer"):
        runner.train.build(make_cfg("recipe=dreamerv2_cartpole", "debug=smoke", "agent=nope"))
    assert not made and not run_dir.exists()


def test_a_checkpoint_keeps_the_gpu_random_stream_and_a_resume_restores_it(monkeypatch):
    """On a GPU the CUDA generator's state is saved beside the CPU one and set again on resume (the
    CUDA calls are stood in for: no GPU here). On the CPU none is saved."""
    saved, restored = torch.tensor([7, 8, 9], dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    cuda = torch.device("cuda", 0)
    module = AgentModule()
    module.experience = SimpleNamespace(state_dict=dict, load_state_dict=lambda state: None)
    module._trainer = SimpleNamespace(world_size=1, global_rank=0, strategy=SimpleNamespace(root_device=cuda))
    module._device = cuda
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["agent"]["ranks"][0]["cuda_rng"] is saved
    module.on_load_checkpoint(checkpoint)
    assert restored == [(saved, cuda)]
    module._device = torch.device("cpu")
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["agent"]["ranks"][0]["cuda_rng"] is None
