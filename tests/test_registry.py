"""The registry: registration, building, error messages, listing and plug-ins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import torch
import yaml

import registry
from registry import ConfigError
from registry.core import _REGISTRY

ROOT = Path(__file__).resolve().parent.parent


def test_build_uses_schema_defaults_and_overrides():
    latent = registry.build("latent", {"name": "categorical", "classes": 8})
    assert (latent.variables, latent.classes, latent.size) == (32, 8, 256)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"^latent: unknown latent 'gausian'; valid: categorical, gaussian$"):
        registry.build("latent", {"name": "gausian"})


def test_unknown_kind_lists_kinds():
    with pytest.raises(ConfigError, match="unknown component kind 'latents'; valid: encoder, decoder, latent"):
        registry.get("latents", "categorical")


def test_misspelt_key_names_path_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        registry.build("kl", {"name": "balanced", "alhpa": 0.5}, path="kl")
    msg = str(err.value)
    assert "kl.alhpa" in msg and "valid keys: alpha, free, free_avg, scale" in msg


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"kl\.free: .*'lots'"):
        registry.build("kl", {"name": "plain", "free": "lots"}, path="kl")


def test_missing_name_is_an_error():
    with pytest.raises(ConfigError, match="expected a mapping with a 'name' key"):
        registry.validate("latent", {"classes": 4})


def test_duplicate_registration_names_both_definitions():
    @dataclass
    class Cfg:
        x: int = 1

    def first(cfg):
        return cfg

    def second(cfg):
        return cfg

    registry.register("latent", "dup_test", Cfg)(first)
    try:
        with pytest.raises(ConfigError, match=r"registered twice: by .*first and by .*second"):
            registry.register("latent", "dup_test", Cfg)(second)
    finally:
        _REGISTRY["latent"].pop("dup_test")


def test_every_kind_has_builtin_components():
    import recipes.dreamer  # noqa: F401  (the agents live above the registry)

    kinds = {e.kind for e in registry.entries()}
    assert kinds == set(registry.kinds()) == set(registry.BUILTIN_KINDS)
    names = {(e.kind, e.name) for e in registry.entries()}
    for expected in [
        ("latent", "categorical"),
        ("latent", "gaussian"),
        ("kl", "balanced"),
        ("kl", "plain"),
        ("actor_grad", "reinforce"),
        ("actor_grad", "dynamics"),
        ("actor_grad", "mix"),
        ("replay", "uniform"),
        ("replay", "prioritize_ends"),
        ("replay", "episodes"),
        ("env", "atari"),
        ("env", "dmc"),
        ("env", "gym"),
        ("encoder", "multi"),
        ("decoder", "multi"),
        ("head", "normal"),
        ("head", "bernoulli"),
        ("agent", "dreamer"),
    ]:
        assert expected in names


def test_listing_command_shows_components_and_recipes():
    out = subprocess.run(
        [sys.executable, "-m", "registry"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "latent" in out and "categorical" in out and "prioritize_ends" in out
    assert "dreamerv2_atari" in out and "dreamerv1_dmc" in out and "dreamerv2_dmc" in out


PLUGIN_CODE = '''
"""A throwaway dreamerkit plug-in: a latent, a stateful KL sharing no key with balanced, and a new kind."""
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from components.latents import Categorical, CategoricalConfig
from registry import define_kind, register


@dataclass
class MixedConfig(CategoricalConfig):
    unimix: float = 0.01


@register("latent", "plugin_mixed", MixedConfig)
class Mixed(Categorical):
    """Categorical latent with 1% uniform mixing."""


@dataclass
class DynRepConfig:
    dyn: float = 0.5
    """Weight of the dynamics term (trains the prior)."""
    rep: float = 0.1
    """Weight of the representation term (trains the posterior)."""
    bits: float = 1.0
    """Free nats of each term."""


@register("kl", "plugin_dynrep", DynRepConfig)
class DynRep(nn.Module):
    """DreamerV3-style dyn/rep KL with free bits; counts its calls in a buffer (state for checkpoints)."""

    def __init__(self, cfg: DynRepConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, latent, post, prior):
        self.calls += 1
        dyn = latent.kl(post.detach(), prior).mean().clamp(min=self.cfg.bits)
        rep = latent.kl(post, prior.detach()).mean().clamp(min=self.cfg.bits)
        return self.cfg.dyn * dyn + self.cfg.rep * rep, {"kl": dyn.detach()}


class Transform(Protocol):
    """A new kind: an invertible squashing of targets."""

    def forward(self, x): ...

    def inverse(self, y): ...


define_kind("plugin_transform", Transform)


@register("plugin_transform", "symlog")
class Symlog:
    """sign(x) * log(1 + |x|)."""

    def forward(self, x):
        return torch.sign(x) * torch.log1p(x.abs())

    def inverse(self, y):
        return torch.sign(y) * torch.expm1(y.abs())
'''


def test_plugin_package_is_selectable_after_pip_install(tmp_path):
    src = tmp_path / "src"
    pkg = src / "dk_plugin_demo"
    (pkg / "conf" / "latent").mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_CODE)
    (pkg / "conf" / "latent" / "plugin_mixed.yaml").write_text(
        "name: plugin_mixed\nvariables: ${size.stoch}\nclasses: ${size.classes}\nunimix: 0.02\n"
    )
    (pkg / "conf" / "kl").mkdir()
    (pkg / "conf" / "kl" / "plugin_dynrep.yaml").write_text("name: plugin_dynrep\nbits: 2.0\n")
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "dk-plugin-demo"
            version = "0.0.1"
            [project.entry-points."dreamerkit.components"]
            demo = "dk_plugin_demo"
            [tool.setuptools.packages.find]
            include = ["dk_plugin_demo*"]
            [tool.setuptools.package-data]
            "*" = ["*.yaml"]
            """
        )
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    listing = subprocess.run(
        [sys.executable, "-m", "registry", "latent"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert "plugin_mixed" in listing.stdout, listing.stderr
    kind = subprocess.run(
        [sys.executable, "-m", "registry", "plugin_transform"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert "plugin_transform: Transform" in kind.stdout and "plugin_transform=symlog" in kind.stdout, kind.stderr
    run_dir = tmp_path / "run"
    # The CartPole recipe tunes its balanced KL (free, free_avg, scale): none of that may reach plugin_dynrep.
    args = ["recipe=dreamerv2_cartpole", "debug=smoke", "latent=plugin_mixed", "kl=plugin_dynrep", "logger=none"]
    run = subprocess.run(
        [sys.executable, "run.py", *args, "train.steps=60", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["latent"]["name"] == "plugin_mixed" and config["latent"]["unimix"] == 0.02
    assert config["kl"] == {"name": "plugin_dynrep", "bits": 2.0}  # its own YAML only: no free, free_avg, scale

    def kl_calls_and_updates():
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        return int(ckpt["state_dict"]["world_model.kl.calls"]), ckpt["agent"]["ranks"][0]["updates"]

    calls, updates = kl_calls_and_updates()
    assert calls == updates > 0  # the plug-in's buffer is in the checkpoint
    resumed = subprocess.run(
        [sys.executable, "run.py", f"resume={run_dir}", "train.steps=80"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    calls_after, updates_after = kl_calls_and_updates()
    assert updates_after > updates and calls_after == updates_after  # counted on from the restored buffer


def test_a_class_missing_a_method_of_its_kind_is_refused_at_registration():
    class Scheme(Protocol):
        def __call__(self, x): ...

        def reset(self): ...

    registry.define_kind("test_scheme", Scheme)
    try:

        class Incomplete:
            def __call__(self, x):
                return x

        with pytest.raises(TypeError, match=r"'incomplete' .* does not implement Scheme: missing method reset"):
            registry.register("test_scheme", "incomplete")(Incomplete)
        with pytest.raises(TypeError, match=r"missing method policy"):
            registry.register("agent", "no_policy")(type("NoPolicy", (), {"training_step": lambda self, b, i: 0}))
    finally:
        _REGISTRY.pop("test_scheme")
        registry.core._KINDS.pop("test_scheme")


def test_the_interfaces_examples_run():
    import doctest

    import registry.interfaces

    result = doctest.testmod(registry.interfaces)
    assert result.attempted >= 9 and result.failed == 0


def test_listing_a_kind_shows_its_interface_and_every_field_with_doc_and_default():
    from registry.cli import describe

    text = describe("kl")
    assert "kl: KL (registry.interfaces.KL)" in text and "Examples:" in text
    assert "kl=balanced" in text and "alpha: float = 0.8" in text
    assert "Share of the gradient that trains the prior" in text
    builtins = [e for e in registry.entries() if e.where.startswith(("components.", "recipes."))]
    assert len(builtins) > 20  # (tests register options of their own; those need no docs)
    for e in builtins:  # every built-in field has its one-line doc
        for f in registry.schema_fields(e.schema) if e.schema else []:
            assert f.doc, f"{e.kind}={e.name}: field {f.name} has no attribute docstring"


def test_schema_check_hook_runs_with_the_types_and_names_the_path():
    @dataclass
    class Ranged:
        free: float = 0.0

        def check(self) -> None:
            if self.free < 0:
                raise registry.ConfigError(f"free: must be >= 0, got {self.free}")

    assert registry.core.to_schema(Ranged, {"free": 1.5}, "kl").free == 1.5
    with pytest.raises(registry.ConfigError, match=r"^kl\.free: must be >= 0, got -1\.0$"):
        registry.core.to_schema(Ranged, {"free": -1.0}, "kl")


def test_unknown_lists_the_valid_choices():
    err = registry.unknown("eval.policy", "greedy", ["mode", "sample"])
    assert str(err) == "eval.policy: unknown 'greedy'; valid: mode, sample"
