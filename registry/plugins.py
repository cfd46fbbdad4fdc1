"""Plug-in discovery: packages that declare the ``dreamerkit.components`` entry point group.

A downstream package registers its components at import time and declares::

    [project.entry-points."dreamerkit.components"]
    mypkg = "mypkg"

If that package holds a ``conf/`` folder, its YAML joins Hydra's search path
(see ``hydra_plugins/dreamerkit_searchpath``), so ``latent=my_latent`` works on
the command line after ``pip install`` with no change to dreamerkit.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "dreamerkit.components"
log = logging.getLogger(__name__)


def plugin_modules() -> list[str]:
    """Module names declared by installed plug-ins, sorted."""
    return sorted({ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_plugins() -> list[str]:
    """Import every installed plug-in so its components register themselves."""
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:  # a broken plug-in must say which one it is
            raise ImportError(f"dreamerkit plug-in {ep.name!r} ({ep.value}) failed to import: {err}") from err
        loaded.append(ep.name)
    return loaded


def plugin_conf_dirs() -> list[str]:
    """Hydra search-path entries (``file://.../conf``) of plug-ins that ship YAML."""
    dirs = []
    for module in plugin_modules():
        spec = importlib.util.find_spec(module)
        for location in (spec.submodule_search_locations or []) if spec else []:
            conf = Path(location) / "conf"
            if conf.is_dir():
                dirs.append(f"file://{conf.resolve()}")
    return dirs
