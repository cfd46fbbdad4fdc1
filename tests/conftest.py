"""Shared fixtures: compose the project's Hydra config the way run.py does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from recipes.config import register_schema

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WANDB_MODE", "offline")
register_schema()


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides)`` -> composed config with its run directory under tmp_path."""

    def make(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=[f"run_dir={tmp_path / 'run'}", *overrides])

    return make
