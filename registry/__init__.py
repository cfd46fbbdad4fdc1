"""The component registry: every swappable part of an agent is registered here by kind and name.

The kinds and the interface each kind's options implement are in ``registry.interfaces``.
"""

from registry.core import (
    ConfigError,
    Entry,
    Kind,
    build,
    define_kind,
    entries,
    get,
    get_kind,
    kinds,
    register,
    schema_fields,
    unknown,
    validate,
)
from registry.interfaces import BUILTIN_KINDS
from registry.plugins import ENTRY_POINT_GROUP, load_plugins

__all__ = [
    "BUILTIN_KINDS",
    "ConfigError",
    "Entry",
    "Kind",
    "build",
    "define_kind",
    "entries",
    "get",
    "get_kind",
    "kinds",
    "register",
    "schema_fields",
    "unknown",
    "validate",
    "ENTRY_POINT_GROUP",
    "load_plugins",
]
