"""Checks a run makes of the machine and the command line before it starts, beyond what the config schema can.

- ``check_run_dir_args``: ``resume=<dir>`` and ``evaluate=<dir>`` must name a run directory. It runs
  before Hydra, which would otherwise first make its job folder (``<dir>/resumed/<time>/.hydra``)
  inside whatever path was given, even one that does not exist.
- ``warn_devices``: more CPU ranks than cores share the cores and run slower than one rank.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from registry import ConfigError

log = logging.getLogger(__name__)
RUN_DIR_ARGS = ("resume", "evaluate")


def check_run_dir_args(args: list[str]) -> None:
    """Raise ConfigError for a ``resume=``/``evaluate=`` command-line override that is not a run directory."""
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        if key in RUN_DIR_ARGS and value not in ("", "null") and not (Path(value) / "config.yaml").is_file():
            raise ConfigError(f"{key}: {value} is not a run directory (no config.yaml)")


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def warn_devices(accelerator: str, devices: int) -> None:
    """Warn when ``devices`` ranks would run on the CPU with fewer cores than ranks."""
    import torch  # here, not at the top: run.py imports this module before anything heavy

    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and devices > 1 and devices > cpu_cores():
        log.warning(
            "train.devices=%d starts %d processes on %d CPU cores: they share the cores and train slower "
            "than train.devices=1",
            devices,
            devices,
            cpu_cores(),
        )
