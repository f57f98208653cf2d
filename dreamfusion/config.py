"""Strict, typed configuration.

Every module owns a small dataclass; `build(cls, mapping)` turns a plain mapping (YAML, CLI
overrides) into it, refusing unknown keys with a "did you mean" hint and checking each value
through the dataclass's `validate()`. A typo in a config therefore fails at once, naming the key,
instead of being silently ignored deep inside a run.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key and says why."""


def _suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (ints become floats where a float is expected)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} entries, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping of options, got {value!r}")
        return build(tp, value, prefix=key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def build(cls: type[T], data: Mapping[str, Any] | None = None, prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, strictly: unknown keys and bad values raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            renamed = getattr(cls, "RENAMED", {}).get(key)
            if renamed is not None:
                raise ConfigError(f"config key '{full}' was renamed: use {key_of(prefix, '')}{renamed}")
            raise ConfigError(f"Unknown config key '{full}'{_suggest(str(key), fields)}")
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data form of a config (for YAML files and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# ---- small validators shared by every config dataclass -------------------------------------------

def key_of(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def require_positive(prefix: str, name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key_of(prefix, name)} must be positive, got {value!r}")


def require_nonnegative(prefix: str, name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{key_of(prefix, name)} must be >= 0, got {value!r}")


def require_range(prefix: str, name: str, pair: tuple[float, float], low: float, high: float) -> None:
    """`pair` must be an ordered (min, max) within [low, high]."""
    a, b = pair
    if not (low <= a <= b <= high):
        raise ConfigError(
            f"{key_of(prefix, name)} must be an ordered [min, max] within [{low}, {high}], got {list(pair)}"
        )
