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

import ast
import dataclasses
import difflib
import inspect
import textwrap
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration value is wrong: names the key, what was wrong and what is valid."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of component: its name and the interface (a ``typing.Protocol``) every option implements."""

    name: str
    interface: type | None
    where: str

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.interface) or "" if self.interface is not None else ""


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


_KINDS: dict[str, Kind] = {}
_REGISTRY: dict[str, dict[str, Entry]] = {}


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def define_kind(name: str, interface: type | None = None) -> None:
    """Add a kind of component whose options implement ``interface`` (a ``typing.Protocol``).

    The built-in kinds are defined in ``registry.interfaces``; a plug-in defines its own the same
    way before registering options of it. Defining a kind again with the same interface is a no-op.
    """
    old = _KINDS.get(name)
    if old is not None and old.interface is not interface:
        raise ConfigError(f"kind {name!r} is defined twice: by {old.where} and by {_where(interface)}")
    _KINDS[name] = Kind(name, interface, _where(interface))
    _REGISTRY.setdefault(name, {})


def kinds() -> tuple[str, ...]:
    """Every defined kind: the built-in ones in their order, then the plug-ins'."""
    _load_builtins()
    return tuple(_KINDS)


def get_kind(name: str) -> Kind:
    """The kind ``name``; an unknown one lists the defined kinds."""
    if name not in _KINDS:
        _load_builtins()
    if name not in _KINDS:
        raise unknown("kind", name, _KINDS, what="component kind")
    return _KINDS[name]


def required_methods(interface: type) -> list[str]:
    """The methods an implementation of ``interface`` must have (attributes are checked when built)."""
    names = []
    for klass in reversed(interface.__mro__):
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        for name, value in vars(klass).items():
            if callable(value) and (not name.startswith("_") or name == "__call__") and name not in names:
                names.append(name)
    return names


def _implementation(target: Callable) -> type | None:
    """The class to check: the target itself, or the return annotation of a factory (None if absent)."""
    if inspect.isclass(target):
        return target
    try:
        returned = typing.get_type_hints(target).get("return")
    except Exception:  # an annotation that does not resolve: nothing to check against
        return None
    return returned if inspect.isclass(returned) else None


def missing_methods(interface: type, target: Callable) -> list[str]:
    """Methods of ``interface`` that ``target`` (a class, or a factory's annotated return class) lacks."""
    klass = _implementation(target)
    if klass is None:
        return []
    defined = {name for k in klass.__mro__ if k is not object for name in vars(k)}
    return [name for name in required_methods(interface) if name not in defined]


def register(kind: str, name: str, schema: type | None = None) -> Callable:
    """Decorate a class or factory to register it as component ``name`` of ``kind``.

    ``schema`` is a dataclass describing the component's config; the target is
    called as ``target(cfg, **deps)`` with an instance of it (or ``target(**deps)``
    when there is no schema).
    """
    interface = get_kind(kind).interface
    if schema is not None and not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema for {kind}/{name} must be a dataclass, got {schema!r}")

    def decorate(target: Callable) -> Callable:
        lacking = missing_methods(interface, target) if interface is not None else []
        if lacking:
            raise TypeError(
                f"{kind} {name!r} ({_where(target)}) does not implement {interface.__name__}: "
                f"missing method {', '.join(lacking)} (see python -m registry {kind})"
            )
        old = _REGISTRY[kind].get(name)
        if old is not None and old.where != _where(target):
            raise ConfigError(f"{kind} {name!r} is registered twice: by {old.where} and by {_where(target)}")
        _REGISTRY[kind][name] = Entry(kind, name, target, schema, _where(target))
        return target

    return decorate


def entries(kind: str | None = None) -> list[Entry]:
    """All registered entries (of one kind, or of every kind), sorted by kind and name."""
    _load_builtins()
    selected = tuple(_KINDS) if kind is None else (get_kind(kind).name,)
    return [e for k in selected for _, e in sorted(_REGISTRY[k].items())]


def get(kind: str, name: str, path: str | None = None) -> Entry:
    """The entry for ``name`` of ``kind``; an unknown name lists the valid ones (error names ``path``)."""
    _load_builtins()
    options = _REGISTRY[get_kind(kind).name]
    if name not in options:
        raise unknown(path or kind, name, sorted(options), what=kind)
    return options[name]


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
    entry = get(kind, cfg["name"], path)
    values = {k: v for k, v in cfg.items() if k != "name"}
    if entry.schema is None:
        if values:
            raise ConfigError(f"{path}: {kind} {entry.name!r} takes no settings, got {sorted(values)}")
        return entry, None
    return entry, to_schema(entry.schema, values, path)


def to_schema(schema: type, values: Mapping, path: str) -> Any:
    """Merge ``values`` into dataclass ``schema`` with type checks; errors name ``path.key``.

    A schema (and any dataclass section inside it) may define ``check(self)``, raising
    ``ConfigError("<field>: ...")`` for a value out of range; the message gets ``path.`` (and the
    section's name) in front, so ranges are checked with the types.
    """
    prefix = f"{path}." if path else ""
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, values)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        fields = ", ".join(f.name for f in dataclasses.fields(schema))
        msg = str(err).splitlines()[0]
        raise ConfigError(f"{prefix}{key}: {msg} (valid keys: {fields})") from None
    _check_tree(typed, prefix)
    return typed


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field of a schema, as ``python -m registry <kind>`` prints it."""

    name: str
    type: str
    default: Any
    doc: str


def field_docs(schema: type) -> dict[str, str]:
    """The attribute docstring below each field of ``schema`` (and of its dataclass bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (built in a REPL): no docs
            continue
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def schema_fields(schema: type) -> list[Field]:
    """Every field of ``schema`` with its type, default and one-line doc."""
    docs = field_docs(schema)
    out = []
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(Field(f.name, kind, default, docs.get(f.name, "")))
    return out


def _check_tree(obj: Any, prefix: str) -> None:
    """Run ``obj.check()`` and that of every dataclass section inside it; errors get their path."""
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err}") from None
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_tree(value, f"{prefix}{f.name}.")


def unknown(path: str, value: Any, valid: Iterable[str], what: str = "", hint: str = "") -> ConfigError:
    """The one "unknown X; valid: ..." error: ``raise unknown("eval.policy", "greedy", POLICIES)``.

    ``what`` names the thing (``"Atari game"``); a long list shows the close matches
    (or its first dozen) and ``hint`` says where to find the rest.
    """
    valid = [str(v) for v in valid]
    if len(valid) > 12:
        close = difflib.get_close_matches(str(value), valid, n=5, cutoff=0.5)
        shown = ", ".join(sorted(valid)[:12])
        listed = f"did you mean: {', '.join(close)}" if close else f"valid: {shown}, ... ({len(valid)} in all)"
    else:
        listed = f"valid: {', '.join(valid) or '(none)'}"
    thing = f"{what} " if what else ""
    return ConfigError(f"{path}: unknown {thing}{value!r}; {listed}{hint}")


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

    _builtins_loaded = True  # first: the imports below register, and so look kinds up, again
    try:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        load_plugins()
    except BaseException:
        _builtins_loaded = False
        raise


# Modules whose import registers the built-in components, imported on the first lookup. The
# agents live a layer up (recipes): what builds an agent imports its module (runner.train does),
# so the registry names nothing above the components.
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
)
