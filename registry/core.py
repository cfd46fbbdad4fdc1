"""Register components by (kind, name) with a typed config schema, and build them from config.

A component is a class or factory registered where it is defined::

    @dataclass
    class CategoricalConfig:
        variables: int = 32
        classes: int = 32

    @register("latent", "categorical", CategoricalConfig)
    class Categorical:
        def __init__(self, cfg: CategoricalConfig): ...

and built from a mapping whose ``name`` selects it and whose other keys are
checked against the schema (unknown keys and wrong types fail with the key's
path)::

    latent = build("latent", {"name": "categorical", "classes": 16})
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

KINDS = ("encoder", "decoder", "latent", "kl", "actor_grad", "head", "return_norm", "replay", "env", "recipe")


class ConfigError(ValueError):
    """A configuration value is wrong: names the key, what was wrong and what is valid."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered component: its target, config schema and where it was defined."""

    kind: str
    name: str
    target: Callable[..., Any]
    schema: type | None
    where: str

    @property
    def doc(self) -> str:
        text = inspect.getdoc(self.target) or ""
        return text.splitlines()[0] if text else ""


_REGISTRY: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def register(kind: str, name: str, schema: type | None = None) -> Callable:
    """Decorate a class or factory to register it as component ``name`` of ``kind``.

    ``schema`` is a dataclass describing the component's config; the target is
    called as ``target(cfg, **deps)`` with an instance of it (or ``target(**deps)``
    when there is no schema).
    """
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown component kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if schema is not None and not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema for {kind}/{name} must be a dataclass, got {schema!r}")

    def decorate(target: Callable) -> Callable:
        old = _REGISTRY[kind].get(name)
        if old is not None and old.where != _where(target):
            raise ConfigError(f"{kind} {name!r} is registered twice: by {old.where} and by {_where(target)}")
        _REGISTRY[kind][name] = Entry(kind, name, target, schema, _where(target))
        return target

    return decorate


def entries(kind: str | None = None) -> list[Entry]:
    """All registered entries (of one kind, or of every kind), sorted by kind and name."""
    _load_builtins()
    kinds = KINDS if kind is None else (kind,)
    return [e for k in kinds for _, e in sorted(_REGISTRY[k].items())]


def get(kind: str, name: str) -> Entry:
    """The entry for ``name`` of ``kind``; an unknown name lists the valid ones."""
    _load_builtins()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown component kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY[kind])) or "(none registered)"
        raise ConfigError(f"unknown {kind} {name!r}; valid {kind} names: {valid}") from None


def validate(kind: str, cfg: Mapping | DictConfig, path: str | None = None) -> tuple[Entry, Any]:
    """Check ``cfg`` against the schema of the component it names.

    Returns the entry and a schema instance. Raises ConfigError naming the
    offending key (as ``path.key``) for an unknown name, key or a wrong type.
    """
    path = path or kind
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ConfigError(f"{path}: expected a mapping with a 'name' key, got {cfg!r}")
    entry = get(kind, cfg["name"])
    values = {k: v for k, v in cfg.items() if k != "name"}
    if entry.schema is None:
        if values:
            raise ConfigError(f"{path}: {kind} {entry.name!r} takes no settings, got {sorted(values)}")
        return entry, None
    return entry, to_schema(entry.schema, values, path)


def to_schema(schema: type, values: Mapping, path: str) -> Any:
    """Merge ``values`` into dataclass ``schema`` with type checks; errors name ``path.key``.

    A schema may define ``check(self)``, raising ``ConfigError("<field>: ...")`` for a value out
    of range; the message gets ``path.`` in front, so ranges are checked with the types.
    """
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, values)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        fields = ", ".join(f.name for f in dataclasses.fields(schema))
        msg = str(err).splitlines()[0]
        raise ConfigError(f"{path}.{key}: {msg} (valid keys: {fields})") from None
    check = getattr(typed, "check", None)
    if callable(check):
        try:
            check()
        except ConfigError as err:
            raise ConfigError(f"{path}.{err}") from None
    return typed


def unknown(path: str, value: Any, valid: Iterable[str]) -> ConfigError:
    """The one "unknown X; valid: ..." error: ``raise unknown("kl.name", "foo", names)``."""
    return ConfigError(f"{path}: unknown {value!r}; valid: {', '.join(valid) or '(none)'}")


def build(kind: str, cfg: Mapping | DictConfig, path: str | None = None, **deps: Any) -> Any:
    """Build the component ``cfg['name']`` of ``kind`` from its config and dependencies."""
    entry, typed = validate(kind, cfg, path)
    return entry.target(**deps) if typed is None else entry.target(typed, **deps)


_builtins_loaded = False


def _load_builtins() -> None:
    """Import the built-in component modules and installed plug-ins, once."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    import importlib

    from registry.plugins import load_plugins

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    load_plugins()
    _builtins_loaded = True


# Modules whose import registers the built-in components (registry imports nothing
# of ours at import time; these are imported lazily on first lookup).
_BUILTIN_MODULES = (
    "components.encoders",
    "components.decoders",
    "components.latents",
    "components.kl",
    "components.actor_grads",
    "components.heads",
    "components.normalize",
    "components.replay",
    "components.envs",
    "recipes.dreamer",
)
