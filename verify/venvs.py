"""The own venv a benchmark gives another project's code (the official agents, SheepRL): never a
dependency of dreamerkit, created once under ``runs/`` and reused while it still has every pin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_CHECK_PINS = (
    "import sys, importlib.metadata as m\n"
    "for pin in sys.argv[1:]:\n"
    "    name, version = pin.split('==')\n"
    "    assert m.version(name.split('[')[0]).split('+')[0] == version, pin\n"
)


def ensure_venv(venv: Path, pins: list[str], no_deps: list[str] = ()) -> Path:
    """The Python of ``venv``, created with ``python -m venv`` and given ``pins`` (each ``name==version``),
    then ``no_deps`` with ``--no-deps``, unless it has them all."""
    python = venv.absolute() / "bin" / "python"  # not resolved: the venv's python is a link to the base one
    if not python.exists():
        print(f"# creating {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if subprocess.run([str(python), "-c", _CHECK_PINS, *pins, *no_deps], capture_output=True).returncode != 0:
        print(f"# installing {' '.join(pins)} into {venv}", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
        if no_deps:
            print(f"# installing {' '.join(no_deps)} (--no-deps) into {venv}", flush=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", *no_deps], check=True)
    return python
