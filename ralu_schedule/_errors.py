"""Shared input checks. Every check raises ``ValueError`` whose message says what was
wrong and what is allowed; the command line prints that message as its one error line."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_finite_array(name: str, value) -> np.ndarray:
    """A real scalar or array, every element finite, as float64 (0-d for a scalar)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number or an array of them, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number or an array of them, got {value!r}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {float(arr[~np.isfinite(arr)].flat[0])}")
    return arr


def check_sequence(name: str, values) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        try:
            values = list(values)
        except TypeError:
            raise ValueError(f"{name} must be a list, got {values!r}") from None
    return tuple(values)


def fmt(values) -> str:
    """Compact list formatting for error messages: ``[0.3, 0.2, 1.0]``."""
    return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else repr(v) for v in values) + "]"


class UsageError(ValueError):
    """Bad command-line arguments: reported as one line, exit status 2."""


class MissingDependency(RuntimeError):
    """An optional dependency is not installed: reported as one line naming what to install."""
