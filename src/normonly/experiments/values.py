"""Config values: the one syntax of values written as text, and the checks against field types.

Values come typed from ``--config`` files (TOML or JSON) and saved ``config.json`` files, or as
text from ``--set key=VALUE``. Text is read by :func:`parse_value` (TOML values, plus a comma
list shorthand); :func:`coerce` then checks a value against a config field's annotated type.
"""

from __future__ import annotations

import datetime
import tomllib
import types
import typing
from typing import Any

__all__ = ["coerce", "parse_value"]

#: Spellings of "no value" for an optional field (TOML has no null).
_NONE = frozenset({"none", "null"})
_NOT_TOML = object()


def _toml_value(text: str) -> Any:
    """``text`` read as one TOML value, or ``_NOT_TOML``."""
    if "\n" in text or "\r" in text:
        return _NOT_TOML
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return _NOT_TOML
    if isinstance(value, datetime.date | datetime.time):  # "2024-01-02" stays text
        return _NOT_TOML
    return value


def parse_value(text: str) -> Any:
    """Read one config value written as text: a TOML value, or one of two shorthands.

    This is the one syntax of ``--set key=VALUE`` (and of strings passed to
    :meth:`ExperimentConfig.replace`); ``--config`` files are TOML (or JSON) themselves.

    ==============================  =========================================================
    text                            value
    ==============================  =========================================================
    ``2``, ``2.0``, ``1e-3``        a number (TOML: also ``inf``, ``nan``, ``1_000``)
    ``true``, ``false``             a boolean
    ``[2, 5, 8]``                   a list
    ``"affine"``, ``'affine'``      a string
    ``affine``                      a string: text that is no TOML value is taken as it is
    ``2,5,8``, ``adam,sgd``         a list: commas without brackets (``[2,5,8]``,
                                    ``["adam", "sgd"]``); items that are no TOML value are
                                    strings, so ``16-16-16,8-8-8`` is two strings
    (empty)                         the empty string (an empty list for a list field)
    ==============================  =========================================================

    Examples
    --------
    >>> parse_value("2,5,8"), parse_value("[2, 5, 8]"), parse_value("2.0"), parse_value("affine")
    ([2, 5, 8], [2, 5, 8], 2.0, 'affine')
    >>> parse_value('"8-8-8"'), parse_value("8-8-8,4-4"), parse_value("true")
    ('8-8-8', ['8-8-8', '4-4'], True)
    """
    text = str(text).strip()
    value = _toml_value(text) if text else _NOT_TOML
    if value is not _NOT_TOML:
        return value
    if "," in text:
        value = _toml_value(f"[{text}]")
        if value is not _NOT_TOML:
            return value
        items = [item.strip() for item in text.split(",")]
        return [item if (v := _toml_value(item)) is _NOT_TOML else v for item in items]
    return text


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str, *, text: bool = False) -> Any:
    """Check ``value`` against the annotated type ``tp``, converting where nothing is lost.

    With ``text=True`` a string is first read by :func:`parse_value` (a string field keeps the
    text unless it is a quoted TOML string). Conversions of typed values: int -> float, an
    integral float -> int, 0/1 -> bool, a list -> tuple.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    shown = value
    if text and isinstance(value, str):
        if origin in (typing.Union, types.UnionType) and value.strip().lower() in _NONE:
            if type(None) in args:
                return None
        parsed = parse_value(value)
        if tp is str:
            return parsed if isinstance(parsed, str) else value
        value = parsed
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {shown!r}")
    if origin is typing.Literal:
        for option in args:
            try:
                if coerce(value, type(option), where) == option:
                    return option
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{where}: expected one of {list(args)}, got {shown!r}")
    if origin in (tuple, list):
        if text and isinstance(shown, str):  # text: one value is a list of one, "" is empty
            items: list[Any] = (
                list(value) if isinstance(value, list) else [] if value == "" else [value]
            )
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise TypeError(f"{where}: expected a list like [1, 2, 3], got {shown!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            out = [coerce(v, args[0], where) for v in items]
        elif origin is tuple and args:
            if len(items) != len(args):
                raise ValueError(f"{where}: expected {len(args)} values, got {shown!r}")
            out = [coerce(v, a, where) for v, a in zip(items, args, strict=True)]
        else:
            out = [coerce(v, args[0], where) if args else v for v in items]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{where}: expected a boolean (true or false), got {shown!r}")
    if tp is int:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected int, got bool {shown!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{where}: expected an integer, got {shown!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{where}: expected a number, got {shown!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{where}: expected a string, got {shown!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(f"{where}: cannot convert {shown!r} to {_type_name(tp)}")
