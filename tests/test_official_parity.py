"""verify/official_parity.py: its weight mapping and fixed draws (fast), and the harness itself (slow);
verify/official_train.py's environment process and train-script patch (fast)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import verify_module
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
official_parity = verify_module("official_parity")
official_train = verify_module("official_train")


def test_feature_and_embedding_permutations_read_the_official_layout():
    feat, embed = official_parity.permutations(stoch=3, deter=2, embed_chw=(2, 2, 3))
    official_feat = np.array([10, 11, 12, 20, 21])  # official concat(stoch, deter)
    assert official_feat[feat].tolist() == [20, 21, 10, 11, 12]  # ours: concat(deter, stoch)
    ours = np.arange(12).reshape(2, 2, 3)  # (channels, height, width)
    official_flat = ours.transpose(1, 2, 0).reshape(-1)  # the official encoder flattens (height, width, channels)
    assert official_flat[embed].tolist() == list(range(12))


def test_the_mlp_encoders_outputs_follow_the_conv_encoders_on_both_sides():
    _, embed = official_parity.permutations(stoch=1, deter=1, embed_chw=(2, 1, 2), vector=3)
    assert embed.tolist() == [0, 2, 1, 3, 4, 5, 6]
    _, vector_only = official_parity.permutations(stoch=1, deter=1, embed_chw=None, vector=3)
    assert vector_only.tolist() == [0, 1, 2]


def test_the_verdict_counts_distinct_numeric_quantities_and_config_values_apart():
    compare, verdict = official_parity.compare, official_parity.verdict
    a, b = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    slow = compare("c: update 1: slow critic", {"w": (a, a), "b": (b, b)})
    rows = [
        compare("c: loss", {"": (np.float32(3.0), np.float32(3.0))}),
        slow,
        compare("c: update 2: slow critic", {"w": (a, a), "b": (b, b)}),  # the same tensors: one quantity
        compare("c: gradients", {"w": (a, a * (1 + 1e-6)), "b": (np.zeros(2), np.zeros(2))}),  # one zero tensor
        compare("c: prior head gradients", {"w": (np.zeros(3), np.zeros(3))}),  # zero on both sides: cannot fail
        compare("d: update 1: slow critic", {"w": (a, a), "b": (b, b)}),
        official_parity.Row("c: config lr", 1e-4, 1e-4, 0, 0.0, ""),
        official_parity.Row("d: config lr", 1e-4, 1e-4, 0, 0.0, ""),
    ]
    assert rows[4].zero == ("w",) and rows[3].zero == ("b",)
    assert verdict(rows, 2, 1e-4) == (
        "parity: OK (3 numeric quantities in 2 cases, max rel diff 1.00e-06; 2 config values equal)"
    )
    bad = compare("d: actor loss", {"": (np.float32(1.0), np.float32(1.001))})
    config = official_parity.Row("d: config eps", 1e-5, 1e-6, 0, float("inf"), "")
    assert verdict([*rows, config, bad], 2, 1e-4) == "parity: FAIL (d: config eps)"
    assert verdict([*rows, bad], 2, 1e-4) == "parity: FAIL (d: actor loss)"
    assert verdict([*rows, compare("d: nan", {"": (np.nan, np.nan)})], 2, 1e-4) == "parity: FAIL (d: nan)"


def test_a_free_nats_case_is_refused_unless_they_clip_some_kl_values_and_not_all():
    config = {"kl.free": 0.2, "kl.balance": 0.8, "kl.free_avg": False}
    config.update({f"{part}_opt.clip": 100.0 for part in ("model", "actor", "critic")})
    official = {f"grad_norm/{u}/{part}": np.float32(1.0) for u in (1, 2, 3) for part in ("model", "actor", "critic")}
    official["ties"] = np.array(0)
    some = np.array([[0.1, 0.3], [0.5, 0.05]])
    facts = lambda kl: official_parity.case_facts(  # noqa: E731
        {**official, **{f"kl_value/{u}": kl for u in (1, 2, 3)}}, {"config": config}, {}
    )
    assert facts(some)[0] == "free nats 0.2 clip 50%, 50%, 50% of the [B,T] KL values in updates 1-3"
    for kl in (some + 1, some / 10):  # none clipped, all clipped
        with pytest.raises(official_parity.Refused, match="must flow past"):
            facts(kl)


def test_dense_kernels_map_onto_one_linear_with_permuted_inputs_and_so_do_their_gradients():
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    std_kernel, std_bias = rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    official = {"a/out/kernel": kernel, "a/out/bias": bias, "a/std/kernel": std_kernel, "a/std/bias": std_bias}
    perm = np.array([3, 4, 0, 1, 2])
    linear = nn.Linear(5, 4)
    weights = official_parity.WeightMap(official, {"m": nn.Sequential(linear)})
    weights.linear(["a/out", "a/std"], linear, perm)
    weights.load()
    x = rng.normal(size=(7, 5)).astype(np.float32)  # official inputs
    expected = np.concatenate([x @ kernel + bias, x @ std_kernel + std_bias], -1)
    got = linear(torch.as_tensor(x[:, perm])).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert weights.report() == []
    # the gradient of the official loss sum(x @ kernel + bias) moves into our layout as the weights do
    official_grads = {"a/out/kernel": np.tile(x.sum(0)[:, None], (1, 2)), "a/out/bias": np.full(2, 7.0)}
    official_grads.update({"a/std/kernel": 0 * std_kernel, "a/std/bias": np.zeros(2)})
    linear(torch.as_tensor(x[:, perm]))[:, :2].sum().backward()
    ours = weights.ours(official_grads)
    np.testing.assert_allclose(ours["m.0.weight"], linear.weight.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours["m.0.bias"], linear.bias.grad.numpy())
    assert set(weights.ours({"a/out/bias": bias, "a/std/bias": std_bias})) == {"m.0.bias"}  # sources it lacks: left out


def test_a_missing_bias_or_parameter_is_reported_and_a_nonzero_bias_refused():
    official = {"d/kernel": np.ones((3, 2), np.float32), "d/bias": np.zeros(2, np.float32)}
    linear, extra = nn.Linear(3, 2, bias=False), nn.LayerNorm(2)
    weights = official_parity.WeightMap(official, {"m": nn.Sequential(linear, extra)})
    weights.linear("d", linear)
    assert weights.report() == [
        "d/bias: official Dense has a bias (zero at init), ours has none",
        "m.1.weight: ours only, left at its init (2,)",
        "m.1.bias: ours only, left at its init (2,)",
    ]
    official["d/bias"] = np.ones(2, np.float32)
    with pytest.raises(RuntimeError, match="d/bias is not zero"):
        official_parity.WeightMap(official, {"m": linear}).linear("d", linear)


def test_each_element_is_compared_relative_to_itself_or_the_tensors_scale():
    """fp32-sized noise passes; one element 1e-3 off, a sign or two swapped entries fail, wherever they are."""
    rng = np.random.default_rng(0)
    official = rng.normal(size=(40, 30)) * np.logspace(-3, 0, 30)  # columns of very different sizes
    noisy = official * (1 + 1e-6 * rng.normal(size=official.shape))
    assert official_parity.rel_diff(official, noisy)[0] < 1e-5
    rms = np.sqrt(np.mean(official**2))
    small = np.argwhere((np.abs(official) > 0.2 * rms) & (np.abs(official) < 0.3 * rms))[0]
    for sabotage in ("perturb", "sign", "swap"):
        ours = official.copy()
        if sabotage == "perturb":
            ours[tuple(small)] *= 1 + 1e-3
        elif sabotage == "sign":
            ours[tuple(small)] *= -1
        else:
            ours[[3, 4]] = ours[[4, 3]]
        d, where = official_parity.rel_diff(official, ours)
        assert d > official_parity.TOL, sabotage
        assert sabotage == "swap" or where == tuple(small)
    # relative to itself above the floor: a large element off by 2e-4 of its value fails
    ours = official.copy()
    ours.flat[np.argmax(np.abs(official))] *= 1 + 2e-4
    assert official_parity.rel_diff(official, ours)[0] > official_parity.TOL
    assert official_parity.rel_diff(np.zeros(3), np.array([0, 1e-30, 0]))[0] == np.inf
    # a quantity on one side only (NaN on the other), or NaN on both, compares nothing: it fails
    assert official_parity.rel_diff(np.float64(np.nan), np.float64(0.5))[0] == np.inf
    assert official_parity.rel_diff(np.array([1.0, np.nan]), np.array([1.0, np.nan])) == (np.inf, (1,))


def test_fixed_draws_go_to_their_role_in_order_and_the_discarded_prior_gets_fresh_ones():
    draws = official_parity.Draws()
    draws.set("post", [np.full((2, 3), 0.1), np.full((2, 3), 0.2)])
    draws.set("action", [np.full(4, 0.7)])
    with draws.role("post"):
        with draws.role("prior"):  # the official filtering step's own prior sample: not ours to match
            fresh = draws.take((2, 3))
        assert draws.take((2, 3))[0, 0] == np.float32(0.1)
    assert draws.take((2, 2))[1, 1] == np.float32(0.7)  # outside the RSSM: the actor's draw, reshaped
    assert official_parity.LOW <= fresh.min() and fresh.max() <= official_parity.HIGH
    assert draws.left() == {"post": 1}
    with draws.role("post"), pytest.raises(RuntimeError, match="has shape"):
        draws.take((5,))
    with pytest.raises(RuntimeError, match="no fixed draw left for role 'action'"):
        draws.take((4,))


def test_a_near_tie_is_broken_toward_the_official_class_and_nothing_else_moves():
    rng = np.random.default_rng(0)
    gumbel = lambda u: -np.log(-np.log(u.astype(np.float64)))  # noqa: E731
    uniform = rng.uniform(0.01, 0.99, (50, 4)).astype(np.float32)
    logits = rng.normal(size=(50, 4))
    scores = logits + gumbel(uniform)
    best = scores.argmax(-1)
    runner_up = np.sort(scores, -1)[:, -2]
    logits[7, best[7]] += runner_up[7] + 3e-5 - scores[7].max()  # row 7: the best class leads by 3e-5 only
    scores = logits + gumbel(uniform)
    before = uniform.copy()
    assert official_parity.break_near_ties(scores, uniform) == 1
    assert np.array_equal(np.delete(uniform, 7, 0), np.delete(before, 7, 0))
    lead = gumbel(uniform[7]) - gumbel(before[7])
    assert lead[best[7]] == pytest.approx(2 * official_parity.TIE, rel=1e-3) and np.count_nonzero(lead) == 1
    # logits off by fp32-sized amounts (1e-6) now pick the official class there too
    ours = logits + rng.uniform(-1e-6, 1e-6, logits.shape) + gumbel(uniform)
    assert np.array_equal(ours.argmax(-1), scores.argmax(-1))


def test_process_dmc_runs_the_official_env_class_in_a_spawned_process_without_tensorflow(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "verify"))  # the spawned process imports official_train
    envs = tmp_path / "envs.py"  # stands in for the official common/envs.py
    envs.write_text(
        "import os, sys\n"
        "class DMC:\n"
        "    def __init__(self, name, repeat):\n"
        "        self.obs_space, self.act_space = {'task': name}, {'repeat': repeat}\n"
        "    def step(self, action):\n"
        "        return {'pid': os.getpid(), 'action': action, 'tf': 'tensorflow' in sys.modules}\n"
        "    def reset(self):\n"
        "        return {'pid': os.getpid(), 'is_first': True}\n"
    )
    monkeypatch.setattr(official_train.ProcessDMC, "envs_file", str(envs))
    env = official_train.ProcessDMC("cartpole_balance", 2)
    try:
        assert (env.obs_space, env.act_space) == ({"task": "cartpole_balance"}, {"repeat": 2})
        first, step = env.reset(), env.step({"action": [0.5]})
    finally:
        env.close()
    assert first["is_first"] and step["action"] == {"action": [0.5]}
    assert step["pid"] == first["pid"] != os.getpid() and not step["tf"]


def test_the_official_train_script_loses_only_its_gpu_assert():
    source = "  message = 'No GPU found.'\n" + official_train.GPU_ASSERT + "  run()\n"
    assert official_train.cpu_train_source(source) == "  message = 'No GPU found.'\n  run()\n"
    with pytest.raises(RuntimeError, match="no GPU assert"):
        official_train.cpu_train_source("  run()\n")


def test_the_launcher_becomes_the_official_run_so_a_sigterm_reaches_it(monkeypatch, tmp_path):
    """`kill <pid of official_train.py>` must stop the training, not only a parent that waits on it."""
    python, package, calls = tmp_path / "python", tmp_path / "dreamerv2", []
    monkeypatch.setattr(official_train, "ensure_venv", lambda venv, pins, no_deps: python)
    monkeypatch.setattr(official_parity, "package_dir", lambda exe: package)
    monkeypatch.setattr(official_train.os, "execv", lambda path, argv: calls.append((path, argv)))
    monkeypatch.setattr(sys, "argv", ["official_train.py", "--logdir", "runs/x", "--", "--steps", "5"])
    official_train.main()
    worker = [str(python), official_train.__file__, "--worker", str(package), "--logdir", "runs/x", "--steps", "5"]
    assert calls == [(str(python), worker)]


@pytest.mark.slow  # installs TensorFlow and dreamerv2 2.2.0 into runs/official-venv on the first run, then ~1.5 min
def test_official_parity_passes_for_every_case():
    out = subprocess.run(
        [sys.executable, "verify/official_parity.py"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    last = out.stdout.strip().splitlines()[-1]
    cases = len(official_parity.CASES)
    pattern = rf"parity: OK \(\d+ numeric quantities in {cases} cases, max rel diff \S+; \d+ config values equal\)"
    assert re.fullmatch(pattern, last), out.stdout[-5000:]
    assert out.returncode == 0
