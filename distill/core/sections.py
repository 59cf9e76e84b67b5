"""Dataclass sections built from plain data (YAML or overrides), every problem gathered: unknown keys with a "did
you mean", wrong types, values that do not parse. Recipes (`core.recipe`) and evaluation suites use it."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal

_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
INT64 = 2**63 - 1
"""The largest integer a field takes: torch and numpy hold integers in 64 bits."""


class _Invalid:
    """Stands in for a value whose type was wrong, so the cross-field checks skip it instead of reporting a
    follow-on problem (`train.max_steps=1.5` is one mistake, not also "max_steps and max_tokens are both null")."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID = _Invalid()


def _list_hint(value: Any, tp: Any) -> str:
    """`student.layers=0,29` was meant as a list: say how to write one."""
    origin = typing.get_origin(tp)
    wants_list = origin is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))
    if wants_list and isinstance(value, str | int | float) and not isinstance(value, bool):
        return f"; write a list in brackets, e.g. [{value}]"
    return ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list ({_type_name(inner)} each)"
    if origin is dict:
        return "a mapping"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true/false",
        type(None): "null",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return the (lightly converted) value or record a problem."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            sub: list[str] = []
            out = _coerce(value, a, where, sub)
            if not sub:
                return out
        problems.append(f"{where} must be {_type_name(tp)}, got {value!r}{_list_hint(value, tp)}")
        return _INVALID
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted `off`/`no` as false and `on`/`yes` as true
            word = next(
                (w for w in (("off", "no") if value is False else ("on", "yes")) if w in allowed), None
            )
            if word is not None:
                return word
        if value not in allowed:
            hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(f"{where} must be one of {', '.join(map(repr, allowed))}, got {value!r}{extra}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            problems.append(f"{where} must be {_type_name(tp)}, got {value!r}{_list_hint(value, tp)}")
            return _INVALID
        return [_coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where} must be a mapping, got {value!r}")
            return _INVALID
        bad = _non_finite(value, where)
        if bad:
            problems.append(_non_finite_problem(*bad))
            return _INVALID
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where} must be true/false, got {value!r}")
            return _INVALID
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where} must be an integer, got {value!r}")
            return _INVALID
        return value
    if tp is float:
        return _coerce_float(value, where, problems)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where} must be a string, got {value!r}")
            return _INVALID
        return value
    return value


def _coerce_float(value: Any, where: str, problems: list[str]) -> Any:
    """A finite float from a number (or a `3e-4` YAML 1.1 left as a string). NaN and the infinities are refused
    however they arrive (YAML `.nan`/`.inf`, `1e999`, an integer too large for a float): no range check can hold
    them (every comparison with NaN is false), and the maths downstream would carry them silently."""
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = value.strip()  # YAML 1.1 reads `3e-4` (no dot) as a string
    elif isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{where} must be a number, got {value!r}")
        return _INVALID
    try:
        out = float(value)
    except OverflowError:  # an integer beyond a float's range
        out = math.inf
    if not math.isfinite(out):
        problems.append(_non_finite_problem(where, value))
        return _INVALID
    return out


def _non_finite(value: Any, where: str) -> tuple[str, Any] | None:
    """The first NaN or infinity inside plain data (a mapping such as `student.config_overrides`), with where."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where}[{k}]" if isinstance(value, list | tuple) else f"{where}.{k}")
        if found:
            return found
    return None


def _non_finite_problem(where: str, value: Any) -> str:
    shown = value if isinstance(value, str) else repr(value)
    if isinstance(value, int) and len(shown) > 24:
        shown = f"{shown[:8]}... ({len(shown)} digits)"
    return (
        f"{where} must be a finite number, got {shown} (YAML reads .nan, .inf and numbers past 1.8e308 as "
        "not-a-number or infinity); give a number such as 0.5"
    )


def build_section(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """The dataclass `cls` from a recipe mapping `data` at `where` (e.g. "kd"); what is wrong goes to `problems`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{where or 'the recipe'} must be a mapping of keys, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            extra = f"; did you mean '{(where + '.') if where else ''}{hint[0]}'?" if hint else ""
            problems.append(f"unknown key '{full}'{extra} (valid: {', '.join(fields)})")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_section(tp, value, full, problems)
        else:
            kwargs[key] = _coerce(value, tp, full, problems)
    try:
        return cls(**kwargs)
    except TypeError as e:  # only reachable through a bug in the schema itself
        raise AssertionError(e) from e
