"""The component registry: every swappable part of an agent is registered here by kind and name."""

from registry.core import (
    KINDS,
    ConfigError,
    Entry,
    build,
    entries,
    get,
    register,
    unknown,
    validate,
)
from registry.plugins import ENTRY_POINT_GROUP, load_plugins

__all__ = [
    "KINDS",
    "ConfigError",
    "Entry",
    "build",
    "entries",
    "get",
    "register",
    "unknown",
    "validate",
    "ENTRY_POINT_GROUP",
    "load_plugins",
]
