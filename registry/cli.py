"""The listing command: every registered component by kind, and the config options Hydra can select."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from registry.core import KINDS, entries


def conf_options(conf_dir: Path) -> dict[str, list[str]]:
    """YAML options per config group under ``conf_dir`` and the plug-ins' ``conf/`` folders."""
    from registry.plugins import plugin_conf_dirs

    roots = [conf_dir] + [Path(p.removeprefix("file://")) for p in plugin_conf_dirs()]
    groups: dict[str, set[str]] = {}
    for root in roots:
        for path in root.glob("*/*.yaml"):
            groups.setdefault(path.parent.name, set()).add(path.stem)
    return {g: sorted(v) for g, v in sorted(groups.items())}


def main(argv: list[str] | None = None) -> None:
    """Print the registry (and config-group options) as a table."""
    parser = argparse.ArgumentParser(prog="python -m registry", description=__doc__)
    parser.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
    parser.add_argument("--conf", default=str(Path(__file__).resolve().parent.parent / "conf"), help="config folder")
    args = parser.parse_args(argv)
    rows = [(e.kind, e.name, e.where, e.doc) for e in entries(args.kind)]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print("Registered components (select with <kind>=<name> on the command line):")
    for kind, name, _where, doc in rows:
        print(f"  {kind:<{width[0]}}  {name:<{width[1]}}  {doc}")
    options = conf_options(Path(args.conf))
    if args.kind is None and options:
        print("\nConfig groups (python run.py <group>=<option>):")
        for group, names in options.items():
            print(f"  {group:<{width[0]}}  {', '.join(names)}")
    sys.stdout.flush()
