"""Argument checks shared by every layer, op, the registry, the CLI and the config loader.

One home for the messages users read most: a bad size, an unknown option name (with the
closest valid name, as MONAI's ``look_up_option`` does), a tensor of the wrong shape.

    >>> positive_int(8, "d_state", "Mamba")
    8
    >>> one_of("sum", ("sum", "mean"), "reduce", "SS2D")
    'sum'
    >>> closest("lenght", ["length", "width"])
    'length'
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def closest(name: str, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name closest to ``name`` (difflib ratio >= ``cutoff``), or None."""
    found = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(name: str, valid: Iterable[str], cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` for the closest valid name, or ``""``."""
    hit = closest(name, valid, cutoff)
    return f" Did you mean {hit!r}?" if hit is not None else ""


def unknown_name(what: str, name: str, valid: Iterable[str], cutoff: float = 0.6) -> str:
    """The message for an unknown name: the name, the closest valid one, and all valid ones."""
    valid = sorted(str(v) for v in valid)
    return f"unknown {what} {name!r}.{did_you_mean(name, valid, cutoff)} Valid: {', '.join(valid) or '(none)'}"


def _owner(owner: str) -> str:
    return f"{owner} " if owner else ""


def positive_int(value: Any, name: str, owner: str = "") -> int:
    """``value`` if it is an int >= 1 (bools are not ints here), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{_owner(owner)}{name} must be a positive int; got {value!r}")
    return value


def non_negative_int(value: Any, name: str, owner: str = "") -> int:
    """``value`` if it is an int >= 0, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{_owner(owner)}{name} must be an int >= 0; got {value!r}")
    return value


def in_range(value: Any, name: str, owner: str = "", lo: float | None = None, hi: float | None = None,
             lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` if it is a real number inside the interval, else ValueError naming the interval."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        left = "-inf" if lo is None else f"{lo:g}"
        right = "inf" if hi is None else f"{hi:g}"
        interval = f"{'(' if lo_open or lo is None else '['}{left}, {right}{')' if hi_open or hi is None else ']'}"
        raise ValueError(f"{_owner(owner)}{name} must be in {interval}; got {value!r}")
    return value


def one_of(value: T, options: Sequence[T], name: str, owner: str = "") -> T:
    """``value`` if it is one of ``options``, else ValueError with the closest option."""
    if value in options:
        return value
    hint = did_you_mean(str(value), [str(o) for o in options]) if isinstance(value, str) else ""
    raise ValueError(f"{_owner(owner)}{name} must be one of {list(options)}; got {value!r}.{hint}".rstrip("."))


def check_shape(t: Any, expected: Sequence[int | str | None], name: str, owner: str = "") -> tuple[int, ...]:
    """Check a tensor's shape against ``expected``: ints must match, strings name a dimension
    (equal strings must be equal sizes), None matches anything. Returns the shape.

    >>> import torch
    >>> check_shape(torch.zeros(2, 3, 5), ("B", "D", "L"), "u")
    (2, 3, 5)
    """
    shape = tuple(getattr(t, "shape", ()))
    spec = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
    if not hasattr(t, "shape") or len(shape) != len(expected):
        got = shape if hasattr(t, "shape") else type(t).__name__
        raise ValueError(f"{_owner(owner)}{name} must be {spec}; got {got}")
    seen: dict[str, int] = {}
    for size, want in zip(shape, expected):
        if want is None:
            continue
        if isinstance(want, str):
            if seen.setdefault(want, size) != size:
                raise ValueError(f"{_owner(owner)}{name} must be {spec}; got {shape} ({want} differs)")
        elif size != want:
            raise ValueError(f"{_owner(owner)}{name} must be {spec}; got {shape}")
    return shape


__all__ = ["check_shape", "closest", "did_you_mean", "in_range", "non_negative_int", "one_of", "positive_int",
           "unknown_name"]
