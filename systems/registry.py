"""Name → system registry. ``register`` is a class decorator; ``get_system`` builds with validated params."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from systems.base import SystemSpecError

_REGISTRY: dict[str, type] = {}
#: systems loaded by reference (files, modules, dysts, entry points), keyed by :func:`systems.user.reference_key`;
#: not listed by :func:`list_systems`
_LOADED: dict[str, type] = {}


def register(cls: type) -> type:
    """Register a system class under ``cls.name`` (a class decorator). Names must be unique."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name' to be registered")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"a system named {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def list_systems() -> list[str]:
    """Names of all registered systems, sorted."""
    return sorted(_REGISTRY)


def canonical_name(name: str) -> str:
    """The registered spelling of ``name``: hyphens and underscores are interchangeable, case is ignored
    (``van-der-pol`` → ``van_der_pol``). Unknown names are returned unchanged."""
    if name in _REGISTRY or ":" in str(name):      # references (file.py:NAME, module:NAME, dysts:NAME) are exact
        return name
    key = str(name).strip().lower().replace("-", "_")
    for registered in _REGISTRY:
        if registered.lower().replace("-", "_") == key:
            return registered
    return name


def system_class(name: str) -> type:
    """The class registered under ``name`` (either spelling, see :func:`canonical_name`); a system written outside
    the package (``path/file.py:NAME``, ``module:NAME``, or an installed ``testbed.systems`` entry point: loaded,
    checked and registered on first use, :mod:`systems.user`) or a dysts flow (``dysts:NAME``,
    :mod:`systems.dysts_catalogue`); a clear error (with close matches) otherwise."""
    from systems import user

    key = canonical_name(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if str(name).startswith("dysts:"):
        from systems.dysts_catalogue import dysts_flow_class

        if name not in _LOADED:
            _LOADED[name] = dysts_flow_class(name)
        return _LOADED[name]
    if user.is_reference(str(name)):
        ref_key = user.reference_key(name)
        if ref_key not in _LOADED:
            _LOADED[ref_key] = user.user_flow_class(name)
        return _LOADED[ref_key]
    if name in _LOADED:
        return _LOADED[name]
    eps = user.entry_point_objects()
    if name in eps:
        try:
            obj = eps[name].load()
        except Exception as err:
            raise SystemSpecError(f"system {name!r}: loading its entry point {eps[name].value!r} failed: "
                                  f"{type(err).__name__}: {err}") from err
        cls = user.flow_class(obj, name)
        user.check_flow(cls(), f"system {name!r} (entry point {eps[name].value!r})")
        _LOADED[name] = cls
        return cls
    try:
        return _REGISTRY[key]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise SystemSpecError(
            f"unknown system {name!r}.{hint} Known systems: {', '.join(list_systems())}"
        ) from None


def system_parameters(name: str) -> dict[str, Any]:
    """Parameter names of system ``name`` with their defaults."""
    cls = system_class(name)
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def get_system(name: str, **params: Any):
    """Build the system ``name`` with ``params``; unknown parameters raise :class:`SystemSpecError`."""
    name = canonical_name(name)
    cls = system_class(name)
    allowed = system_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise SystemSpecError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for system {name!r}; "
            f"valid parameters: {', '.join(sorted(allowed))}"
        )
    return cls(**params)
