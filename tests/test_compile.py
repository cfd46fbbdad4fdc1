"""The fast paths give the eager fp32 losses on a fixed seed: compiled steps (``train.compile=true``)
within float tolerance, bf16 autocast (``train.precision=bf16-mixed``) within bf16's."""

from __future__ import annotations

import pytest
import torch

from recipes.train import build


def losses_and_grads(make_cfg, batch, *overrides, recipe="dreamerv2_cartpole", autocast=None):
    """World-model and actor losses and world-model gradients of a freshly built (seeded) agent,
    computed under ``torch.autocast("cpu", autocast)`` if given. The agent is built outside it, as
    Lightning does: autocast caches its casts of the weights for the whole region, so an agent built
    inside would keep the casts of the weights from before their initialisation."""
    module, experience, _ = build(make_cfg(f"recipe={recipe}", "debug=smoke", "logger=none", *overrides))
    experience.close()
    with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        torch.manual_seed(0)
        model_loss, post, _ = module.world_model.loss(batch)
        model_loss.backward()
        grads = [p.grad.clone() for p in module.world_model.parameters() if p.grad is not None]
        actor_loss, critic_loss, _ = module.behavior.loss(module.world_model, post, batch["is_terminal"], 0)
    return torch.stack([model_loss.detach(), actor_loss.detach(), critic_loss.detach()]), grads


def test_compiled_steps_match_eager_losses_and_gradients(make_cfg, caplog):
    inductor = pytest.importorskip("torch._inductor.config")
    module, experience, _ = build(make_cfg("recipe=dreamerv2_cartpole", "debug=smoke", "logger=none"))
    while experience.replay.steps < 40:
        experience.step(None)
    batch = experience.replay.sample(4)
    experience.close()

    eager, eager_grads = losses_and_grads(make_cfg, batch)
    with inductor.patch(fallback_random=True):  # the compiled sampling draws what eager draws
        fast, fast_grads = losses_and_grads(make_cfg, batch, "train.compile=true")
    assert "torch.compile failed" not in caplog.text  # compiled for real, not the eager fallback
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-5)
    assert len(fast_grads) == len(eager_grads) > 0
    for g_fast, g_eager in zip(fast_grads, eager_grads):
        torch.testing.assert_close(g_fast, g_eager, rtol=1e-3, atol=1e-5)


def test_a_step_that_cannot_compile_runs_eagerly(monkeypatch, caplog):
    from components import rssm

    def broken_compile(fn, **kwargs):
        def fail(*args, **kw):
            raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    double = rssm.compiled(lambda x: 2 * x)
    assert torch.equal(double(torch.ones(3)), torch.full((3,), 2.0))
    assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))  # stays eager, warns once
    assert caplog.text.count("torch.compile failed") == 1


@pytest.mark.parametrize("recipe", ["dreamerv2_cartpole", "dreamerv2_dmc"])
def test_bf16_autocast_matches_fp32_losses(make_cfg, recipe):
    """What Lightning's ``bf16-mixed`` wraps the update in; the DMC recipe covers the conv encoder and decoder."""
    # any stored window will do: uniform draws before the recipe's sampler holds a complete episode
    module, experience, _ = build(make_cfg(f"recipe={recipe}", "debug=smoke", "logger=none", "replay=uniform"))
    while experience.replay.steps < 40:
        experience.step(None)
    batch = experience.replay.sample(4)
    experience.close()

    full, full_grads = losses_and_grads(make_cfg, batch, recipe=recipe)
    half, half_grads = losses_and_grads(make_cfg, batch, recipe=recipe, autocast=torch.bfloat16)
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
