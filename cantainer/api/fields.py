"""The fields of API requests: each checker takes (name, value) and returns the value,
or raises ``Invalid`` with one line that names the field.  ``server.normalise`` applies
them; a missing field gets its default (``REQUIRED``: it must be given)."""

from __future__ import annotations

import math

from cantainer.errors import Invalid

REQUIRED = object()


def _fail(name: str, what: str, value=None) -> None:
    if value is None:
        raise Invalid(f"request needs {name!r}")
    raise Invalid(f"request field {name!r} must be {what}")


def text(name: str, value) -> str:
    if not isinstance(value, str) or not value:
        _fail(name, "a string", value)
    return value


def flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        _fail(name, "true or false", value)
    return value


def count(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _fail(name, "a whole number >= 0", value)
    return value


def number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        _fail(name, "a number", value)
    return value


def texts(name: str, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(name, "a list of strings", value)
    return value


def command(name: str, value) -> list[str]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, str) and v for v in value):
        _fail(name, "a non-empty list of non-empty strings", value)
    return value


def objects(name: str, value) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        _fail(name, "a list of objects", value)
    return value


def size(name: str, value) -> list[int] | None:
    """A terminal's [rows, cols]; anything else is no size (the default one)."""
    if isinstance(value, list) and len(value) == 2 and \
            all(isinstance(n, int) and 0 < n < 65536 for n in value):
        return value
    return None
