"""Checks of option values that refuse in one sentence: one of a set (with "did you mean" for a near miss), a range."""

from __future__ import annotations

import difflib
from typing import Iterable, Optional

from .errors import InputError


def one_of(option: str, value: str, choices: Iterable[str]) -> str:
    """`value` when it is one of `choices`; otherwise an InputError naming `option`, with the nearest choice."""
    choices = tuple(choices)
    if value in choices:
        return value
    near = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise InputError(f"unknown {option.lstrip('-')} {value!r}{hint}; pass {option} with one of {', '.join(choices)}.")


def in_range(option: str, value: float, low: Optional[float] = None, high: Optional[float] = None, *,
             low_open: bool = False, high_open: bool = False, example: str = "") -> float:
    """`value` when low <= value <= high (strictly where open; None: unbounded); otherwise an InputError naming
    `option`, the value and the allowed interval."""
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not (below or above):
        return value
    interval = (f"{'(' if low_open or low is None else '['}{'-inf' if low is None else _number(low)}, "
                f"{'inf' if high is None else _number(high)}{')' if high_open or high is None else ']'}")
    raise InputError(f"{option} {value} is outside {interval}; pass {example or 'a value inside it'}.")


def positive(option: str, value: float) -> float:
    """`value` when it is above 0."""
    if value <= 0:
        raise InputError(f"{option} must be positive, got {value}; pass a value above 0.")
    return value


def fraction(option: str, value: float, *, with_zero: bool = False, example: str = "e.g. 0.5") -> float:
    """A share: (0, 1], or [0, 1) `with_zero` (an overlap: all of it would never move)."""
    if with_zero:
        return in_range(option, value, 0, 1, high_open=True, example=example)
    return in_range(option, value, 0, 1, low_open=True, example=example)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
