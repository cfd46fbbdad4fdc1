"""The registry: registration, building, error messages, listing and plug-ins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

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
"""A throwaway dreamerkit plug-in: a categorical latent with a uniform mix, under a new name."""
from dataclasses import dataclass
from components.latents import Categorical, CategoricalConfig
from registry import register


@dataclass
class MixedConfig(CategoricalConfig):
    unimix: float = 0.01


@register("latent", "plugin_mixed", MixedConfig)
class Mixed(Categorical):
    """Categorical latent with 1% uniform mixing."""
'''


def test_plugin_package_is_selectable_after_pip_install(tmp_path):
    src = tmp_path / "src"
    pkg = src / "dk_plugin_demo"
    (pkg / "conf" / "latent").mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_CODE)
    (pkg / "conf" / "latent" / "plugin_mixed.yaml").write_text(
        "name: plugin_mixed\nvariables: ${size.stoch}\nclasses: ${size.classes}\nunimix: 0.02\n"
    )
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
    run = subprocess.run(
        [
            sys.executable,
            "run.py",
            "recipe=dreamerv2_cartpole",
            "debug=smoke",
            "latent=plugin_mixed",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: plugin_mixed" in config and "unimix: 0.02" in config


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
