"""Timestep distribution matching (NT-matching, METHOD section 4) for any number of stages.

``(c, h_1..h_K)`` minimise the paper metric (:mod:`ralu_schedule.metric`: the JS distance
between the target density, which counts re-traversed intervals twice, and the density of
the layout's own timesteps).

The metric is piecewise smooth (stage edges cross grid points as ``c`` moves), so a
single gradient start stalls in local optima. :func:`solve` runs a seeded differential
evolution over the whole box, polishes its best point, and also runs the authors' single
L-BFGS-B start; it returns the best of them, so it is never worse than that start.
``scipy.optimize`` is imported when a solve runs, not when the package is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._errors import SHIFT_RANGE, brief, check_finite, fmt
from .layout import Layout, Schedule, check_schedule_finite
from .metric import paper_metric

#: Population members per metric call in the differential evolution (see ``objective``).
CHUNK = 32

#: The authors' search box: ``h_k`` in [0.5, 10], ``Z = 1/sqrt(c)`` in [2, 100] (factor 2).
DEFAULT_SHIFT_BOUNDS = (0.5, 10.0)
DEFAULT_Z_MAX = 100.0

#: The default Z box for the largest factor ``f`` is the authors' box scaled by ``f / 2``:
#: ``[f, Z_SPAN f]``, so ``c`` runs from ``c_max / Z_SPAN^2`` to ``c_max = 1/f^2`` for every
#: factor (for ``f = 2`` exactly ``[2, 100]``). A fixed upper end of 100 would leave no room
#: at ``f = 100`` and an empty box above it.
Z_SPAN = DEFAULT_Z_MAX / 2.0


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """Search box: ``h_k`` in ``shift``, ``Z = 1/sqrt(c)`` in ``z`` (authors: ``[0.5, 10]``, ``[2, 100]``).

    ``z=None`` takes ``[f, 50 f]`` for the largest factor ``f`` (at least 2): the authors'
    box ``[2, 100]`` scaled to the factor (:data:`Z_SPAN`); an explicit ``z`` whose lower end
    admits ``c > 1/n`` is rejected.
    """

    shift: tuple = DEFAULT_SHIFT_BOUNDS
    z: tuple | None = None

    def resolve(self, layout: Layout) -> tuple:
        sh = _pair("shift bounds", self.shift)
        lo, hi = SHIFT_RANGE
        if not (lo <= sh[0] and sh[1] <= hi):
            raise ValueError(f"shift bounds must lie in [{lo:g}, {hi:g}], got {fmt(sh)}")
        fmax = math.isqrt(layout.max_block_size)
        f = max(2, fmax)
        z = (float(f), Z_SPAN * f) if self.z is None else _pair("Z bounds", self.z)
        if z[0] < fmax:
            raise ValueError(
                f"Z bounds {fmt(z)} allow c = 1/Z^2 > 1/n = {1 / fmax**2:g} for factor {fmax}; "
                f"the lower Z bound must be >= {fmax}")
        return sh, z


def _pair(name, value):
    try:
        lo, hi = (check_finite(name, v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers LO HI, got {brief(value)}") from None
    if not lo < hi:
        raise ValueError(f"{name} must satisfy LO < HI, got {fmt((lo, hi))}")
    return lo, hi


METHODS = ("global", "single-start")


def solve(layout: Layout, *, method: str = "global", bounds: Bounds = Bounds(),
          per_transition: bool = False, seed: int = 0, info: dict | None = None) -> Schedule:
    """Find ``(c, h_1..h_K)`` minimising the paper metric for ``layout``.

    ``method="single-start"`` is the authors' optimiser: one L-BFGS-B start from
    ``h = 3, Z = 2``. ``"global"`` (default) adds a seeded differential evolution and
    returns the better result. ``per_transition=True`` gives every transition its own
    ``c_k``. Deterministic for a given ``seed``.
    """
    from scipy.optimize import differential_evolution, minimize

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {brief(method)}")
    if not isinstance(layout, Layout):
        hint = "; for a preset use ralu_schedule.preset(name)" if isinstance(layout, str) else ""
        raise ValueError(f"solve takes a ralu_schedule.Layout, got {type(layout).__name__}{hint}")
    if not isinstance(bounds, Bounds):
        raise ValueError(f"bounds must be a ralu_schedule.Bounds, e.g. Bounds(shift=(0.5, 10)), "
                         f"got {type(bounds).__name__}")
    K = layout.num_stages
    (hlo, hhi), (zlo, zhi) = bounds.resolve(layout)
    meta = {"solver": method, "seed": seed, "per_transition": per_transition}
    meta.update(info or {})
    if K == 1 and hlo <= layout.base_shift <= hhi and (layout.start == 0.0 or layout.terminal is None):
        # one stage: the base sampler itself (h_1 = h0) matches exactly, metric 0 (also from a later start, whose
        # grid is the base sampler's truncated, except where a terminal stretches the grids differently)
        return Schedule(layout=layout, shifts=[layout.base_shift], correlations=[], info=meta)
    nz = (K - 1 if per_transition else 1) if K > 1 else 0
    box = [(zlo, zhi)] * nz + [(hlo, hhi)] * K

    def split(x):
        x = np.asarray(x, dtype=np.float64)
        x2 = x.reshape(len(box), -1)
        cs = 1.0 / x2[:nz] ** 2 if nz else np.full((1, x2.shape[1]), 0.25)
        return x2[nz:], cs

    def objective(x):  # one point (shape (P,)) or a population (shape (P, S)): the same metric
        h, cs = split(x)
        h = h.reshape(K, *np.shape(x)[1:])
        cs = np.broadcast_to(cs.reshape(len(cs), *h.shape[1:]), (K - 1,) + h.shape[1:])
        if h.ndim == 1:
            return paper_metric(layout, h, cs)
        # a population in blocks of CHUNK members: the (members x grid) temporaries stay small
        # enough to be reused from the heap and cache instead of page-faulting on every call
        return np.concatenate([paper_metric(layout, h[:, i:i + CHUNK], cs[:, i:i + CHUNK])
                               for i in range(0, h.shape[1], CHUNK)])

    x0 = np.clip(np.array([zlo] * nz + [3.0] * K), [b[0] for b in box], [b[1] for b in box])
    candidates = [minimize(objective, x0, method="L-BFGS-B", bounds=box)]
    if method == "global":
        de = differential_evolution(objective, box, seed=seed, tol=1e-10, maxiter=400,
                                    popsize=15, polish=False,
                                    init="sobol", vectorized=True, updating="deferred")
        candidates.append(de)
        candidates.append(minimize(objective, de.x, method="L-BFGS-B", bounds=box))
        candidates.append(minimize(objective, de.x, method="Nelder-Mead", bounds=box,
                                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}))
    best = min(candidates, key=lambda r: (float(r.fun), tuple(np.ravel(r.x))))
    h, cs = split(best.x)
    h = h[:, 0]
    cs = np.broadcast_to(cs[:, 0], (K - 1,)) if K > 1 else []
    sched = Schedule(layout=layout, shifts=[float(v) for v in h],
                     correlations=[float(v) for v in cs], info=meta)
    check_schedule_finite(sched)
    return sched
