"""The distribution of data-times that a shifted flow-matching sampler visits.

A sampler that takes uniform steps in unshifted sigma and shifts them by ``h`` places its
data-times ``t`` with density and distribution function

    f_h(t) = h / (1 + (h - 1) t)^2,        F_h(t) = h t / (1 + (h - 1) t),    t in [0, 1],

and truncated to a stage ``[s, e]``: ``f_{h,s,e}(t) = f_h(t) / (F_h(e) - F_h(s))`` there,
0 elsewhere. ``F_h`` is the shift map itself (:func:`ralu_schedule.shift.shift_map`).
:class:`ShiftedTime` owns the public ``pdf/cdf/ppf`` with broadcasting and checks, in the
manner of ``scipy.stats``: ``h``, ``start`` and ``end`` may be arrays (one distribution per
element), and every method broadcasts its argument against them.

Some schedulers stretch their shifted grid so that its last step starts at a fixed
``sigma = terminal`` (diffusers' ``shift_terminal``; Qwen-Image: 0.02). For a stage that ends
at ``t = 1`` in ``N >= 2`` steps, :class:`StretchedTime` is that grid's distribution: the
first ``N - 1`` steps are the shifted grid of ``[start, t_{N-1}]`` mapped affinely onto
``[start, 1 - terminal]`` (``t_{N-1}`` the shifted grid's last interior point), the last step
covers ``[1 - terminal, 1]``; each step carries mass ``1/N``::

    g(t) = (N-1)/N * k f_{h, start, t_{N-1}}(start + k (t - start))   on [start, 1 - terminal],
    g(t) = 1 / (N terminal)                                           on (1 - terminal, 1],

with ``k = (t_{N-1} - start) / (1 - terminal - start)``. Its grid is the scheduler's.
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


@dataclass(frozen=True, eq=False)
class StretchedTime:
    """Data-time distribution of an ``steps``-step grid on ``[start, 1]`` with shift ``h``,
    stretched so that its last step starts at ``sigma = terminal`` (module docstring).
    ``h`` and ``start`` may be arrays, as in :class:`ShiftedTime`; ``steps >= 2``."""

    h: float
    start: float
    steps: int
    terminal: float

    def __post_init__(self):
        check_positive_int("steps", self.steps, minimum=2)
        tau = float(self.terminal)
        if not 0.0 < tau < 1.0:
            raise ValueError(f"terminal must lie in (0, 1), got {tau:g}")
        start = check_finite_array("start", self.start)
        if np.any(start >= 1.0 - tau):
            raise ValueError(f"a grid stretched to end at sigma {tau:g} must start before t = {1.0 - tau:g}, "
                             f"got start={float(np.max(start)):g}")
        base = ShiftedTime(self.h, start, 1.0)          # checks h and start
        object.__setattr__(self, "h", base.h)
        object.__setattr__(self, "start", base.start)
        object.__setattr__(self, "terminal", tau)

    @property
    def _knee(self):
        """``t_{N-1}``: the unstretched grid's last interior point."""
        return ShiftedTime(self.h, self.start, 1.0).ppf((self.steps - 1) / self.steps)

    @property
    def _scale(self):
        return (self._knee - self.start) / (1.0 - self.terminal - self.start)

    def pdf(self, t):
        return stretched_pdf(np.asarray(t, dtype=np.float64), self.h, self.start, self.steps, self.terminal)

    def cdf(self, t):
        return stretched_cdf(np.asarray(t, dtype=np.float64), self.h, self.start, self.steps, self.terminal)

    def grid(self, steps: int | None = None):
        """The scheduler's ``steps + 1`` data-times, ascending from ``start`` to 1."""
        if steps is not None and steps != self.steps:
            raise ValueError(f"this stretched grid has {self.steps} steps, got {steps}")
        t = ShiftedTime(self.h, self.start, 1.0).grid(self.steps)
        start = np.asarray(self.start)[..., None]
        out = start + (t - start) / np.asarray(self._scale)[..., None]
        out[..., -1] = 1.0
        return out


def stretched_pdf(t, h, start, steps, terminal):
    """:class:`StretchedTime`'s density, unchecked; broadcasts ``t`` against ``h`` and ``start``."""
    q = (steps - 1) / steps
    lo = 1.0 - terminal
    knee = unshift_map(shift_map(start, h) + q * (1.0 - shift_map(start, h)), h)
    k = (knee - start) / (lo - start)
    u = start + (np.clip(t, 0.0, lo) - start) * k
    dens = q * k * truncated_pdf(u, h, start, knee)
    dens = np.where(t > lo, (1.0 / steps) / terminal, dens)
    dens = np.where((t < start) | (t > 1.0), 0.0, dens)
    return dens if np.ndim(dens) else float(dens)


def stretched_cdf(t, h, start, steps, terminal):
    """:class:`StretchedTime`'s distribution function, unchecked; broadcasts."""
    q = (steps - 1) / steps
    lo = 1.0 - terminal
    knee = unshift_map(shift_map(start, h) + q * (1.0 - shift_map(start, h)), h)
    k = (knee - start) / (lo - start)
    u = start + (np.clip(t, start, lo) - start) * k
    below = q * (shift_map(u, h) - shift_map(start, h)) / (shift_map(knee, h) - shift_map(start, h))
    above = q + (np.clip(t, lo, 1.0) - lo) / (steps * terminal)
    out = np.where(t > lo, above, below)
    return out if np.ndim(out) else float(out)


def _frozen(value: np.ndarray):
    if value.ndim == 0:
        return float(value)
    value = value.copy()
    value.flags.writeable = False
    return value


def _first(values: np.ndarray, bad: np.ndarray) -> float:
    return float(np.broadcast_to(values, bad.shape)[bad].flat[0])
