"""The fast paths give the eager fp32 losses on a fixed seed: the compiled rollout and step
(``train.compile=true``) within float tolerance, bf16 autocast (``train.precision=bf16-mixed``) within bf16's."""

from __future__ import annotations

import pytest
import torch

from runner.train import build


def losses_and_grads(make_cfg, batch, *overrides, recipe="dreamerv2_cartpole", autocast=None):
    """World-model, actor and critic losses of a freshly built (seeded) agent and the gradients each
    gives its part (``{"world_model": [...], "actor": [...], "critic": [...]}``), computed under
    ``torch.autocast("cpu", autocast)`` if given. The agent is built outside it, as Lightning does:
    autocast caches its casts of the weights for the whole region, so an agent built inside would
    keep the casts of the weights from before their initialisation."""
    module, experience, _ = build(make_cfg(f"recipe={recipe}", "debug=smoke", "logger=none", *overrides))
    experience.close()
    parts = {"world_model": module.world_model, "actor": module.behavior.actor, "critic": module.behavior.critic}
    with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        torch.manual_seed(0)
        model_loss, post, _ = module.world_model.loss(batch)
        model_loss.backward()
        actor_loss, critic_loss, _ = module.behavior.loss(module.world_model, post, batch["is_terminal"], 0)
        actor_loss.backward()
        critic_loss.backward()
    grads = {name: [p.grad.clone() for p in part.parameters() if p.grad is not None] for name, part in parts.items()}
    return torch.stack([model_loss.detach(), actor_loss.detach(), critic_loss.detach()]), grads


def replayed_batch(make_cfg, recipe: str, *overrides):
    """A batch of 4 windows replayed from the recipe's environment at the smoke size."""
    module, experience, _ = build(make_cfg(f"recipe={recipe}", "debug=smoke", "logger=none", *overrides))
    while experience.replay.steps < 40:
        experience.step(None)
    batch = experience.replay.sample(4)
    experience.close()
    return batch


# The V3 recipes compile minutes of inductor code on a cold cache: slow suite (``-m slow``).
@pytest.mark.parametrize(
    "recipe, options",
    [
        ("dreamerv2_cartpole", []),
        pytest.param("dreamerv3_dmc_proprio", ["model.rssm.blocks=4"], marks=pytest.mark.slow),  # v3_1m's block GRU
        pytest.param("dreamerv3_dmc_vision", [], marks=pytest.mark.slow),
    ],
    ids=["dreamerv2_cartpole", "dreamerv3_dmc_proprio-blocks", "dreamerv3_dmc_vision"],
)
def test_compiled_parts_match_eager_losses_and_gradients(make_cfg, caplog, recipe, options):
    """train.compile=true: the imagination rollout, the filtering step and the decoder's loss (vectors,
    and pixels in dreamerv3_dmc_vision) compiled, each one graph."""
    inductor = pytest.importorskip("torch._inductor.config")
    batch = replayed_batch(make_cfg, recipe)
    eager, eager_grads = losses_and_grads(make_cfg, batch, *options, recipe=recipe)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    with inductor.patch(fallback_random=True):  # the compiled sampling draws what eager draws
        fast, fast_grads = losses_and_grads(make_cfg, batch, "train.compile=true", *options, recipe=recipe)
    assert "torch.compile failed" not in caplog.text  # compiled for real, not the eager fallback
    assert counters["stats"]["unique_graphs"] >= 3 and not counters["graph_break"]  # no part split in pieces
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
    for part in ("world_model", "actor", "critic"):
        assert len(fast_grads[part]) == len(eager_grads[part]) > 0
        for g_fast, g_eager in zip(fast_grads[part], eager_grads[part]):
            torch.testing.assert_close(g_fast, g_eager, rtol=1e-3, atol=1e-5)


def test_a_function_that_cannot_compile_runs_eagerly(monkeypatch, caplog):
    from components import nets

    def broken_compile(fn, **kwargs):
        def fail(*args, **kw):
            raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    double = nets.compiled(lambda x: 2 * x)
    assert torch.equal(double(torch.ones(3)), torch.full((3,), 2.0))
    assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))  # stays eager, warns once
    assert caplog.text.count("torch.compile failed") == 1


def test_an_agent_whose_compiler_fails_trains_eagerly(make_cfg, monkeypatch, caplog):
    """train.compile=true without a working compiler: each compiled part falls back to eager, with
    one warning, and the update gives the eager losses and gradients exactly."""
    recipe = "dreamerv3_dmc_proprio"
    batch = replayed_batch(make_cfg, recipe)
    eager, eager_grads = losses_and_grads(make_cfg, batch, recipe=recipe)

    def broken_compile(fn, **kwargs):
        def fail(*args, **kw):
            raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    fallback, fallback_grads = losses_and_grads(make_cfg, batch, "train.compile=true", recipe=recipe)
    for name in ("Behavior.imagine", "RSSM.obs_step", "_Decoder.loss"):
        assert caplog.text.count(f"torch.compile failed for {name},") == 1
    assert torch.equal(fallback, eager)
    for part in eager_grads:
        assert all(torch.equal(a, b) for a, b in zip(fallback_grads[part], eager_grads[part]))


@pytest.mark.parametrize("recipe", ["dreamerv2_cartpole", "dreamerv2_dmc"])
def test_bf16_autocast_matches_fp32_losses(make_cfg, recipe):
    """What Lightning's ``bf16-mixed`` wraps the update in; the DMC recipe covers the conv encoder and decoder."""
    # any stored window will do: uniform draws before the recipe's sampler holds a complete episode
    batch = replayed_batch(make_cfg, recipe, "replay=uniform")
    full, full_grads = losses_and_grads(make_cfg, batch, recipe=recipe)
    half, half_grads = losses_and_grads(make_cfg, batch, recipe=recipe, autocast=torch.bfloat16)
    full_grads, half_grads = full_grads["world_model"], half_grads["world_model"]
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    torch.testing.assert_close(half, full, rtol=2e-2, atol=1e-2)
    # bf16 keeps 8 bits of mantissa: the gradients agree in direction, not digit by digit. The bound
    # leaves room for straight-through samples that flip where two logits nearly tie: with the Keras
    # initialisation 3% of the CartPole batch's latent states draw another class in bf16, which alone
    # takes the cosine to 0.9989 (0.99999 where none flips).
    cosine = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in half_grads]), torch.cat([g.flatten() for g in full_grads]), dim=0
    )
    assert cosine > 0.995
    assert not torch.equal(half, full)  # autocast ran in bf16
