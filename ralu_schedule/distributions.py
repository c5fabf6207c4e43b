"""The distribution of data-times that a shifted flow-matching sampler visits.

A sampler that takes uniform steps in unshifted sigma and shifts them by ``h`` places its
data-times ``t`` with density and distribution function

    f_h(t) = h / (1 + (h - 1) t)^2,        F_h(t) = h t / (1 + (h - 1) t),    t in [0, 1],

and truncated to a stage ``[s, e]``: ``f_{h,s,e}(t) = f_h(t) / (F_h(e) - F_h(s))`` there,
0 elsewhere. :class:`ShiftedTime` owns the public ``pdf/cdf/ppf`` with broadcasting and
checks, in the manner of ``scipy.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import check_finite, check_positive_int


def _F(t, h):
    return h * t / (1.0 + (h - 1.0) * t)


def _F_inv(q, h):
    return q / (h - (h - 1.0) * q)


@dataclass(frozen=True)
class ShiftedTime:
    """Data-time distribution of a sampler with shift ``h``, truncated to ``[start, end]``."""

    h: float
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        h = check_finite("shift", self.h)
        start = check_finite("start", self.start)
        end = check_finite("end", self.end)
        if h <= 0:
            raise ValueError(f"shift must be > 0, got {h:g}")
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"need 0 <= start < end <= 1, got start={start:g}, end={end:g}")
        object.__setattr__(self, "h", h)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @property
    def _mass(self) -> float:
        return _F(self.end, self.h) - _F(self.start, self.h)

    def pdf(self, t):
        """Density at ``t``; 0 outside ``[start, end]`` (both ends included)."""
        t = np.asarray(t, dtype=np.float64)
        inside = (t >= self.start) & (t <= self.end)
        dens = self.h / (1.0 + (self.h - 1.0) * np.clip(t, 0.0, 1.0)) ** 2 / self._mass
        return np.where(inside, dens, 0.0)

    def cdf(self, t):
        t = np.clip(np.asarray(t, dtype=np.float64), self.start, self.end)
        return (_F(t, self.h) - _F(self.start, self.h)) / self._mass

    def ppf(self, q):
        q = np.asarray(q, dtype=np.float64)
        if np.any((q < 0) | (q > 1)):
            raise ValueError("quantiles must lie in [0, 1]")
        return _F_inv(_F(self.start, self.h) + q * self._mass, self.h)

    def sample(self, size, rng: np.random.Generator):
        """Draw data-times by inverting the cdf of uniform draws from ``rng``."""
        return self.ppf(rng.random(size))

    def grid(self, steps: int):
        """The ``steps + 1`` data-times of a stage, ascending from ``start`` to ``end``.

        They are uniform in unshifted sigma between the stage's inverse-shifted ends, which
        is the same as equally spaced quantiles of this distribution. The ends are exact.
        """
        steps = check_positive_int("steps", steps)
        t = self.ppf(np.linspace(0.0, 1.0, steps + 1))
        t[0], t[-1] = self.start, self.end
        return t
