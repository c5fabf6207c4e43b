"""Shared input checks. Every check raises ``ValueError`` whose message says what was
wrong and what is allowed; the command line prints that message as its one error line."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {brief(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {brief(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_finite_array(name: str, value) -> np.ndarray:
    """A real scalar or array, every element finite, as float64 (0-d for a scalar)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number or an array of them, got {brief(value)}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number or an array of them, got {brief(value)}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {float(arr[~np.isfinite(arr)].flat[0])}")
    return arr


def check_sequence(name: str, values) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        try:
            values = list(values)
        except TypeError:
            raise ValueError(f"{name} must be a list, got {brief(values)}") from None
    return tuple(values)


#: Longest piece of user input an error message quotes; longer input is cut with "...".
MESSAGE_QUOTE = 120

#: Shifts ``h`` (``h0``, ``h_k`` and the solver's bounds) must lie in this range. Beyond it
#: the shifted timestep distribution collapses onto one end of [0, 1] in double precision
#: (``h = 1e20`` makes every matched density equal and the metric 0; ``h = 1e-300`` divides by 0).
SHIFT_RANGE = (1e-3, 1e6)


def brief(value) -> str:
    """``repr(value)``, cut to :data:`MESSAGE_QUOTE` characters: error lines stay short."""
    text = repr(value)
    return text if len(text) <= MESSAGE_QUOTE else text[:MESSAGE_QUOTE - 3] + "..."


def fmt(values) -> str:
    """Compact list formatting for error messages: ``[0.3, 0.2, 1.0]`` (cut when long)."""
    text = "[" + ", ".join(f"{v:g}" if isinstance(v, float) else repr(v) for v in values) + "]"
    return text if len(text) <= MESSAGE_QUOTE else text[:MESSAGE_QUOTE - 4] + "...]"


def check_shift(name: str, value) -> float:
    """A shift: finite and within :data:`SHIFT_RANGE`."""
    h = check_finite(name, value)
    lo, hi = SHIFT_RANGE
    if not lo <= h <= hi:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got {h:g}")
    return h


class UsageError(ValueError):
    """Bad command-line arguments: reported as one line, exit status 2."""


class MissingDependency(RuntimeError):
    """An optional dependency is not installed: reported as one line naming what to install."""
