"""Shared fixtures: compose the project's Hydra config the way run.py does."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runner.config import register_schema

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


def verify_module(name: str):
    """A script of verify/ imported as a module (they are scripts: run by path, each re-run in its venv)."""
    sys.path.insert(0, str(ROOT / "verify"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "verify"))
