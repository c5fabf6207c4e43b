"""The distribution of data-times that a shifted flow-matching sampler visits.

A sampler that takes uniform steps in unshifted sigma and shifts them by ``h`` places its
data-times ``t`` with density and distribution function

    f_h(t) = h / (1 + (h - 1) t)^2,        F_h(t) = h t / (1 + (h - 1) t),    t in [0, 1],

and truncated to a stage ``[s, e]``: ``f_{h,s,e}(t) = f_h(t) / (F_h(e) - F_h(s))`` there,
0 elsewhere. ``F_h`` is the shift map itself (:func:`ralu_schedule.shift.shift_map`).
:class:`ShiftedTime` owns the public ``pdf/cdf/ppf`` with broadcasting and checks, in the
manner of ``scipy.stats``: ``h``, ``start`` and ``end`` may be arrays (one distribution per
element), and every method broadcasts its argument against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import SHIFT_RANGE, check_finite_array, check_positive_int
from .shift import shift_map, unshift_map


def truncated_pdf(t, h, start, end):
    """``f_{h,start,end}(t)``, unchecked; broadcasts every argument. :class:`ShiftedTime` checks
    its parameters once and calls this; so does the solver's metric, on parameters its
    search box keeps valid."""
    # in place on one result array: the solver calls this on (population x grid) arrays,
    # where every extra temporary costs a page-faulting allocation
    dens = np.empty(np.broadcast_shapes(np.shape(t), np.shape(h), np.shape(start), np.shape(end)))
    np.multiply(np.subtract(h, 1.0), np.clip(t, 0.0, 1.0), out=dens)
    dens += 1.0
    np.square(dens, out=dens)
    np.divide(h / (shift_map(end, h) - shift_map(start, h)), dens, out=dens)
    np.copyto(dens, 0.0, where=~((t >= start) & (t <= end)))
    return dens if dens.ndim else float(dens)


@dataclass(frozen=True, eq=False)
class ShiftedTime:
    """Data-time distribution of a sampler with shift ``h``, truncated to ``[start, end]``.

    Scalar parameters are stored as floats; array parameters (broadcast together) as
    read-only float64 arrays, giving a family of distributions evaluated in one call.
    """

    h: float
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        h, start, end = (check_finite_array(name, v) for name, v in
                         (("shift", self.h), ("start", self.start), ("end", self.end)))
        lo, hi = SHIFT_RANGE
        if np.any(~((lo <= h) & (h <= hi))):
            raise ValueError(f"shift must lie in [{lo:g}, {hi:g}], got {_first(h, ~((lo <= h) & (h <= hi))):g}")
        bad = ~((0.0 <= start) & (start < end) & (end <= 1.0))
        if np.any(bad):
            s, e = np.broadcast_arrays(start, end)
            raise ValueError(f"need 0 <= start < end <= 1, got start={_first(s, bad):g}, end={_first(e, bad):g}")
        for name, value in (("h", h), ("start", start), ("end", end)):
            object.__setattr__(self, name, _frozen(value))

    @property
    def _mass(self):
        return shift_map(self.end, self.h) - shift_map(self.start, self.h)

    def pdf(self, t):
        """Density at ``t``; 0 outside ``[start, end]`` (both ends included)."""
        return truncated_pdf(np.asarray(t, dtype=np.float64), self.h, self.start, self.end)

    def cdf(self, t):
        t = np.clip(np.asarray(t, dtype=np.float64), self.start, self.end)
        return (shift_map(t, self.h) - shift_map(self.start, self.h)) / self._mass

    def ppf(self, q):
        q = np.asarray(q, dtype=np.float64)
        if np.any((q < 0) | (q > 1)):
            raise ValueError("quantiles must lie in [0, 1]")
        return unshift_map(shift_map(self.start, self.h) + q * self._mass, self.h)

    def sample(self, size, rng: np.random.Generator):
        """Draw data-times by inverting the cdf of uniform draws from ``rng``."""
        return self.ppf(rng.random(size))

    def grid(self, steps: int):
        """The ``steps + 1`` data-times of a stage, ascending from ``start`` to ``end``.

        They are uniform in unshifted sigma between the stage's inverse-shifted ends, which
        is the same as equally spaced quantiles of this distribution. The ends are exact.
        With array parameters the result has their shape plus a last axis of ``steps + 1``.
        """
        steps = check_positive_int("steps", steps)
        start, end, h = (np.asarray(v, dtype=np.float64)[..., None] for v in (self.start, self.end, self.h))
        t = ShiftedTime(h, start, end).ppf(np.linspace(0.0, 1.0, steps + 1))
        t = np.array(np.broadcast_to(t, np.broadcast_shapes(t.shape, start.shape, end.shape)))
        t[..., 0], t[..., -1] = start[..., 0], end[..., 0]
        return t


def _frozen(value: np.ndarray):
    if value.ndim == 0:
        return float(value)
    value = value.copy()
    value.flags.writeable = False
    return value


def _first(values: np.ndarray, bad: np.ndarray) -> float:
    return float(np.broadcast_to(values, bad.shape)[bad].flat[0])
