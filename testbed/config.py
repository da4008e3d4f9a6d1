"""Config dataclasses validated on construction.

Every config in the testbed is a frozen-ish dataclass; :func:`from_dict` builds one from a plain mapping and
rejects unknown keys with an error naming the key and the valid ones. ``check_*`` helpers raise
:class:`ConfigError` naming the offending field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message names the field."""


#: longest value shown in an error message; longer ones are cut with their length noted
MAX_SHOWN = 80
#: seeds are 0 ≤ s < 2**32 (numpy's legacy and torch's generators accept them; derived seeds stay in int64)
MAX_SEED = 2**32 - 1


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters (with the full length noted) for error messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """``registry[name]``, or a :class:`ConfigError` naming ``name``, a close match and the known names."""
    try:
        return registry[canonical_key(registry, name)]
    except KeyError:
        close = difflib.get_close_matches(str(name)[:200], list(registry), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown {what} {shown(name)}{hint}; known: {', '.join(registry)}") from None


def canonical_key(names: Iterable[str], name: Any) -> Any:
    """The spelling of ``name`` among ``names`` with hyphens and underscores interchangeable and case ignored
    (``law_recovery`` → ``law-recovery``, ``split-mnist`` → ``split_mnist``); ``name`` itself if none matches."""
    names = list(names)
    if name in names or not isinstance(name, str):
        return name
    key = name.strip().lower().replace("-", "_")
    return next((n for n in names if isinstance(n, str) and n.lower().replace("-", "_") == key), name)


def canonical_choices(name: str, values: Iterable[Any], choices: Iterable[Any]) -> tuple[Any, ...]:
    """``values`` in their canonical spelling (see :func:`canonical_key`), each checked against ``choices``."""
    choices = list(choices)
    out = tuple(canonical_key(choices, v) for v in values)
    for v in out:
        check_choice(name, v, choices)
    return out


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def from_dict(cls: type[T], data: Mapping[str, Any] | None = None, **overrides: Any) -> T:
    """Build ``cls`` from ``data`` (plus ``overrides``); unknown keys raise :class:`ConfigError`."""
    merged = dict(data or {})
    merged.update(overrides)
    valid = field_names(cls)
    unknown = [k for k in merged if k not in valid]
    if unknown:
        msgs = []
        for k in unknown:
            close = difflib.get_close_matches(k, valid, n=1)
            msgs.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown config key(s) for {cls.__name__}: {', '.join(msgs)}; valid keys: {', '.join(valid)}"
        )
    return cls(**merged)


def _unquote(text: str) -> str:
    """``'"a"'`` and ``"'a'"`` → ``a`` (list items written JSON-style on the command line); other text unchanged."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def parse_value(value: Any, annotation: Any) -> Any:
    """The one value parser: a command-line string or a TOML/JSON value → the type of a dataclass field.

    Supports int, float, bool, str, tuples/lists of those (``"4,8"``, ``"[4, 8]"``, a list, or a scalar as a
    one-element tuple), Optional[...] (``none``/``null``) and nested dataclass fields (a mapping). Strings are
    parsed for non-string fields (``"1e-3"`` → 0.001, ``"1e3"`` → 1000 for an int); typed values are checked:
    a bool is not an int, an int is promoted to float. Raises ``ValueError`` (often :class:`ConfigError`).
    """
    if isinstance(annotation, str):  # postponed annotations
        annotation = eval(annotation, vars(typing) | {"tuple": tuple, "list": list})  # noqa: S307
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if len(non_none) < len(args):
                return None
        return parse_value(value, non_none[0])
    if origin in (tuple, list):
        inner = args[0] if args else str
        if isinstance(value, str):
            text = value.strip()
            items: list[Any] | None = None
            if text[:1] == "[":  # a JSON list, as a shell user writes one: '["dysts:Lorenz", "a, b"]'
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
                items = parsed if isinstance(parsed, list) else None
            if items is None:
                if text[:1] in "[(" and text[-1:] in ")]":  # accept "[4, 8]" and "(4, 8)" as well as "4,8"
                    text = text[1:-1]
                items = [u for u in (_unquote(p.strip()) for p in text.split(",")) if u]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        vals = [parse_value(v, inner) for v in items]
        return tuple(vals) if origin is tuple else vals
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            hints = typing.get_type_hints(annotation)
            unknown = [k for k in value if k not in hints]
            if unknown:
                raise ConfigError(f"unknown key(s) {', '.join(map(shown, unknown))} for {annotation.__name__}")
            return annotation(**{k: parse_value(v, hints[k]) for k, v in value.items()})
        raise ConfigError(f"expected a table of {annotation.__name__} settings, got {shown(value)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"cannot read {shown(value)} as a boolean")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"expected an integer, got {shown(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise ConfigError(f"{shown(value)} is not an integer")
            return int(value)
        text = str(value)
        try:
            return int(text)
        except ValueError:
            as_float = float(text)  # "1e3" → 1000; "1.5" and "nan" stay errors
            if not math.isfinite(as_float) or not as_float.is_integer():
                raise ValueError(f"{shown(text)} is not an integer") from None
            return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"expected a number, got {shown(value)}")
        return float(value) if isinstance(value, (int, float)) else float(str(value))
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {shown(value)}")
        return value
    return value


@dataclasses.dataclass(frozen=True)
class UnknownOption:
    """Where a (possibly dotted) option name fails on a config: the sub-config path before it (``("inner",)``), the
    failing part and what follows it, the valid names there, the nearest one, and whether the part exists but has
    no sub-options (``lr.x``)."""

    path: tuple[str, ...]
    part: str
    rest: str
    valid: list[str]
    close: str | None
    owner: str
    no_sub_options: bool = False

    @property
    def prefix(self) -> str:
        return "".join(p + "." for p in self.path)

    @property
    def hint(self) -> str:
        """`` (did you mean 'inner.width'?)`` or `` ('lr' has no sub-options)`` (dotted from the top)."""
        if self.no_sub_options:
            return f" ({self.prefix + self.part!r} has no sub-options)"
        return f" (did you mean {self.prefix + self.close + self.rest!r}?)" if self.close else ""

    @property
    def valid_dotted(self) -> list[str]:
        return [self.prefix + v for v in self.valid]


def unknown_option(cfg: Any, name: str, exclude: Iterable[str] = ()) -> UnknownOption | None:
    """``None`` when the (possibly dotted) ``name`` is a field of the dataclass ``cfg`` or of its sub-configs
    (``exclude`` hides top-level fields); else where it fails (:class:`UnknownOption`)."""
    obj, parts = cfg, name.split(".")
    for i, part in enumerate(parts):
        valid = [f for f in field_names(type(obj)) if i or f not in set(exclude)]
        rest = "".join(f".{p}" for p in parts[i + 1:])
        if part not in valid:
            close = difflib.get_close_matches(part[:200], valid, n=1)
            return UnknownOption(tuple(parts[:i]), part, rest, valid, close[0] if close else None,
                                 type(obj).__name__)
        obj = getattr(obj, part)
        if rest and not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
            return UnknownOption(tuple(parts[:i]), part, rest, valid, None, type(obj).__name__, True)
    return None


def option_hint(cfg: Any, name: str) -> Any:
    """The type annotation of the (possibly dotted) option ``name`` of ``cfg``."""
    head, dot, rest = name.partition(".")
    if dot:
        return option_hint(getattr(cfg, head), rest)
    return typing.get_type_hints(type(cfg))[name]


def option_of(cfg: Any, name: str) -> Any:
    """The value of the (possibly dotted) option ``name`` of ``cfg``."""
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


def option_value(cfg: Any, name: str, value: Any, where: str) -> Any:
    """``value`` (a string or a TOML value) read as the type of the option ``name`` of ``cfg`` by
    :func:`parse_value`; a :class:`ConfigError` naming ``where``, the value and the option otherwise."""
    try:
        return parse_value(value, option_hint(cfg, name))
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError(f"{where}: bad value {shown(value)} for option {name!r}: {err}") from None


def apply_options(cfg: T, options: Mapping[str, Any]) -> T:
    """A copy of the dataclass ``cfg`` with ``options`` applied (values already of the fields' types): a dotted
    name ``head.rest`` replaces the sub-config ``head`` by ``dataclasses.replace(cfg.head, rest=value)``
    (recursively), so its other fields keep their values; each (sub-)config is validated on construction.

    Raises :class:`ConfigError` for an unknown name (with a "did you mean"), or a sub-config set both whole and
    by its fields."""
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in options.items():
        miss = unknown_option(cfg, name)
        if miss is not None:
            raise ConfigError(f"unknown option {name!r}{miss.hint} for {type(cfg).__name__}; "
                              f"valid options: {', '.join(miss.valid_dotted)}")
        head, dot, rest = name.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            changes[name] = value
    for head, sub in nested.items():
        if head in changes:
            raise ConfigError(f"option {head!r} is set both whole and by its fields ({', '.join(sub)})")
        changes[head] = apply_options(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **changes)


def apply_overrides(cfg: T, assignments: Iterable[str]) -> T:
    """Return a copy of ``cfg`` with ``key=value`` strings applied (values parsed by field type; ``sub.key=value``
    sets one field of a sub-config, see :func:`apply_options`)."""
    parsed: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"override {shown(item)} must look like key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        miss = unknown_option(cfg, key)
        if miss is not None:
            hint = f" (did you mean {miss.close!r}?)" if miss.close else ""
            raise ConfigError(f"{_levels(miss.path)}unknown config key {shown(miss.part + miss.rest)}{hint} for "
                              f"{miss.owner}; valid keys: {', '.join(miss.valid)}")
        *path, leaf = key.split(".")
        if key in parsed:
            raise ConfigError(f"{_levels(path)}config key {leaf!r} is set twice in the overrides")
        try:
            parsed[key] = parse_value(value, option_hint(cfg, key))
        except (ValueError, TypeError, OverflowError) as err:
            raise ConfigError(f"{_levels(path)}bad value {shown(value)} for config key {leaf!r}: {_cut(err)}") \
                from None
    try:
        return apply_options(cfg, parsed)
    except ConfigError:
        raise
    except (TypeError, OverflowError) as err:  # a value of the wrong kind reached a check
        raise ConfigError(f"bad override for {type(cfg).__name__}: {_cut(err)}") from None


def _levels(path: Iterable[str]) -> str:
    """``("inner",)`` → ``"inner: "``: the sub-config an override message is about."""
    return "".join(f"{p}: " for p in path)


def _cut(err: BaseException) -> str:
    text = str(err)
    return text if len(text) <= 2 * MAX_SHOWN else text[: 2 * MAX_SHOWN - 1] + "…"


# --------------------------------------------------------------------------- checks
def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {shown(value)}")


def check_nonneg_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {shown(value)}")


def check_positive_ints(name: str, values: Any) -> tuple[int, ...]:
    """A non-empty tuple of positive integers (depths, widths, …), returned as a tuple."""
    if not isinstance(values, (tuple, list)):
        raise ConfigError(f"{name} must be a list of positive integers, got {shown(values)}")
    if not values:
        raise ConfigError(f"{name} must not be empty")
    for v in values:
        check_positive_int(name, v)
    return tuple(values)


def check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {shown(value)}")


def check_nonneg(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a non-negative finite number, got {shown(value)}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {shown(value)}")


def check_seed(name: str, value: Any) -> int:
    """A seed: an integer ``0 ≤ s ≤ 2**32 − 1`` (larger ones overflow the generators and derived seeds)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {shown(value)}")
    if value > MAX_SEED:
        raise ConfigError(f"{name}: seed {shown(value)} is too large; seeds must be at most 2**32 - 1 = {MAX_SEED}")
    return value


def check_seeds(name: str, values: Any) -> tuple[int, ...]:
    """A non-empty tuple of distinct seeds (see :func:`check_seed`)."""
    values = tuple(values)
    if not values:
        raise ConfigError(f"{name} must hold at least one seed")
    for v in values:
        check_seed(name, v)
    check_unique(name, values)
    return values


def check_unique(name: str, values: Iterable[Any]) -> None:
    """Refuse repeated entries (a repeated seed or system would silently duplicate rows)."""
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"{name} lists {shown(v)} more than once")
        seen.add(v)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and numpy/torch scalars → JSON-serialisable Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    return obj


def parse_int_list(text: str, positive: bool = True) -> list[int]:
    """``"8,16"`` → ``[8, 16]`` (for command-line flags); a clear error for non-integers or an empty list, and
    for values ≤ 0 when ``positive``."""
    import argparse

    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or (positive and any(v <= 0 for v in vals)):
        kind = "positive integers" if positive else "integers"
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got {text!r}")
    return vals
