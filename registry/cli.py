"""The listing command: every registered component by kind, and the config options Hydra can select.

``python -m registry`` lists every kind's options; ``python -m registry <kind>`` prints the kind's
interface and each option's config fields with their default and doc.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from registry.core import entries, get_kind, kinds, schema_fields

# The built-in agents live above the registry; this command, like run.py, sits on top and imports them.
AGENT_MODULES = ("recipes.dreamer",)


def conf_options(conf_dir: Path) -> dict[str, list[str]]:
    """YAML options per config group under ``conf_dir`` and the plug-ins' ``conf/`` folders."""
    from registry.plugins import plugin_conf_dirs

    roots = [conf_dir] + [Path(p.removeprefix("file://")) for p in plugin_conf_dirs()]
    groups: dict[str, set[str]] = {}
    for root in roots:
        for path in root.glob("*/*.yaml"):
            groups.setdefault(path.parent.name, set()).add(path.stem)
    return {g: sorted(v) for g, v in sorted(groups.items())}


def describe(kind: str) -> str:
    """The interface of ``kind`` and every option's config fields (type, default, doc)."""
    k = get_kind(kind)
    lines = [f"{kind}: {k.interface.__name__ if k.interface else '(no interface)'} ({k.where})", ""]
    lines += ["    " + line if line else "" for line in k.doc.splitlines()]
    for e in entries(kind):
        lines += ["", f"{kind}={e.name}  {e.doc}", f"    {e.where}"]
        fields = schema_fields(e.schema) if e.schema is not None else []
        if not fields:
            lines.append("    (no settings)")
        for f in fields:
            lines.append(f"    {f.name}: {f.type} = {f.default!r}")
            if f.doc:
                lines.append(f"        {f.doc.splitlines()[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the registry (and config-group options) as a table, or one kind in full."""
    for module in AGENT_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="python -m registry", description=__doc__)
    parser.add_argument("kind", nargs="?", choices=kinds(), help="only this kind, with its interface and fields")
    parser.add_argument("--conf", default=str(Path(__file__).resolve().parent.parent / "conf"), help="config folder")
    args = parser.parse_args(argv)
    if args.kind is not None:
        print(describe(args.kind))
        sys.stdout.flush()
        return
    rows = [(e.kind, e.name, e.where, e.doc) for e in entries()]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print("Registered components (select with <kind>=<name> on the command line):")
    for kind, name, _where, doc in rows:
        print(f"  {kind:<{width[0]}}  {name:<{width[1]}}  {doc}")
    options = conf_options(Path(args.conf))
    if options:
        print("\nConfig groups (python run.py <group>=<option>):")
        for group, names in options.items():
            print(f"  {group:<{width[0]}}  {', '.join(names)}")
    print("\nFor a kind's interface and each option's settings: python -m registry <kind>")
    sys.stdout.flush()
