"""The layers of docs/ARCHITECTURE.md hold: imports point down and no package's modules import in a circle.

The contracts are import-linter's, in pyproject.toml; the README's test command (and so CI) runs
``lint-imports`` on the checkout. This test runs it on a copy with one upward import and one cycle
planted, so the check is shown to fail: a contract that passes everything would pass here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("registry", "components", "recipes", "runner", "tools")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's packages before the installed checkout's
    return subprocess.run(["lint-imports"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_an_upward_import_and_a_cycle_break_the_contracts(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "components" / "kl.py", "a") as f:
        f.write("\nfrom runner import config  # noqa: E402,F401\n")  # a component reaching up into the run package
    with open(tmp_path / "recipes" / "config.py", "a") as f:
        f.write("\nfrom recipes import dreamer  # noqa: E402,F401\n")  # dreamer imports config: a cycle
    out = lint_imports(tmp_path)
    assert out.returncode != 0 and "0 kept, 2 broken" in out.stdout, out.stdout[-3000:]
    assert "components.kl -> runner.config" in out.stdout
    assert "No cycles are allowed in recipes" in out.stdout


def test_ci_runs_exactly_the_readme_test_command():
    """.ci/run's last line is the command the README gives a newcomer for the tests, slow lane included."""
    readme = (ROOT / "README.md").read_text()
    command = readme.split("**Set up and run the tests")[1].split("```bash\n")[1].split("\n")[0]
    assert command.endswith("python -m pytest && python -m pytest -m slow")
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == command
