"""The argument rules of the library, written once: integers, numbers, flags and choices.

Every public function and configuration dataclass checks its arguments at the boundary with these
helpers and then trusts them. Each helper raises ``TypeError`` (wrong kind of value) or
``ValueError`` (right kind, outside the rule) with one line that names the argument and the rule,
for example "`steps_per_frame` must be a positive integer, got 0". ``bool`` is never accepted as an
integer or a number (``True`` is rarely meant as 1). ``sim`` and ``controllers`` keep their own
checks: they import nothing of ``latenttune``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np

__all__ = ["check_int", "check_number", "check_bool", "check_choice", "is_integer"]


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers, False for bools and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _int_rule(low: int | None, high: int | None) -> str:
    if high is not None and low == 1:
        return f"a positive integer <= {high}"
    if high is not None and low is not None:
        return f"an integer in [{low}, {high}]"
    if high is not None:
        return f"an integer <= {high}"
    if low == 1:
        return "a positive integer"
    if low is not None:
        return f"an integer >= {low}"
    return "an integer"


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` if it is an integer in ``[low, high]`` (None when allowed).

    Parameters
    ----------
    name : str
        The argument's name, as the caller spells it (quoted in the message).
    value : object
        What was given.
    low, high : int, optional
        Inclusive bounds.
    allow_none : bool
        Accept None (and return it).

    Raises
    ------
    ValueError
        Not an integer, or outside the bounds (one rule for both, so a float such as 2.5 reads
        "must be a positive integer, got 2.5").
    """
    if value is None and allow_none:
        return None
    rule = ("None or " if allow_none else "") + _int_rule(low, high)
    if not is_integer(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"`{name}` must be {rule}, got {value!r}")
    return int(value)


def _number_rule(low: float, high: float, open_low: bool, open_high: bool) -> str:
    if math.isinf(high) and low == 0:
        return "a positive finite number" if open_low else "a finite number >= 0"
    if math.isinf(high) and math.isinf(low):
        return "a finite number"
    if math.isinf(high):
        return f"a finite number {'>' if open_low else '>='} {low:g}"
    return f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"


def check_number(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf, open_low: bool = False,
                 open_high: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high`` (None when allowed).

    Parameters
    ----------
    name : str
        The argument's name.
    value : object
        A real number (Python or numpy, not bool).
    low, high : float
        Bounds; infinite bounds mean none on that side. The value itself must always be finite.
    open_low, open_high : bool
        Exclude the bound itself.
    allow_none : bool
        Accept None (and return it).

    Raises
    ------
    TypeError
        Not a real number.
    ValueError
        Not finite, or outside the interval.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number{' or None' if allow_none else ''}, got {type(value).__name__}")
    v = float(value)
    inside = (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not (math.isfinite(v) and inside):
        rule = ("None or " if allow_none else "") + _number_rule(low, high, open_low, open_high)
        raise ValueError(f"`{name}` must be {rule}, got {value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a ``bool`` if it is one (Python or numpy); ``TypeError`` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices``; ``ValueError`` naming them otherwise."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value asked of a set
        ok = False
    if not ok:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return value
