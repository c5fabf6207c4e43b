"""Timestep distribution matching (NT-matching, METHOD section 4) for any number of stages.

Re-injection restarts stage ``k+1`` at ``s_{k+1} < e_k``, so ``[s_{k+1}, e_k]`` is
traversed twice. The target density is the base sampler's, with the re-traversed
intervals counted again (paper eq. 8, generalised to ``K`` stages)::

    P_target(t) = [f_{h0}(t) + sum_k (e_k - s_{k+1}) f_{h0, s_{k+1}, e_k}(t)] / (1 + sum_k (e_k - s_{k+1}))

and the layout's own density is ``P(t) = sum_k N_k f_{h_k, s_k, e_k}(t) / sum_k N_k`` (eq. 9).
``(c, h_1..h_K)`` minimise the paper metric: scipy's Jensen-Shannon *distance* (natural
log) between both densities sampled on 1000 equispaced points of ``[0, 1]``, each clipped
below at 1e-10 and normalised.

The metric is piecewise smooth (stage edges cross grid points as ``c`` moves), so a
single gradient start stalls in local optima. :func:`solve` runs a seeded differential
evolution over the whole box, polishes its best point, and also runs the authors' single
L-BFGS-B start; it returns the best of them, so it is never worse than that start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import differential_evolution, minimize
from scipy.spatial.distance import jensenshannon

from ._errors import check_finite, fmt
from .layout import Layout, Schedule

#: The paper metric's grid.
GRID = np.linspace(0.0, 1.0, 1000)
_FLOOR = 1e-10


def _truncated_pdf(t, h, s, e):
    """``f_{h,s,e}(t)``, broadcasting ``h, s, e`` of shape ``(..., 1)`` against ``t``."""
    F = lambda x: h * x / (1.0 + (h - 1.0) * x)  # noqa: E731
    dens = h / (1.0 + (h - 1.0) * t) ** 2 / (F(e) - F(s))
    return np.where((t >= s) & (t <= e), dens, 0.0)


def _restarts(ends, cs):
    """Restart times ``s_{k+1} = e_k / ((1 - e_k)/sqrt(c_k) + e_k)``; broadcasts over columns."""
    ends = np.asarray(ends, dtype=np.float64)
    cs = np.asarray(cs, dtype=np.float64)
    shape = (ends.shape[0],) + cs.shape[1:]
    e = ends.reshape((-1,) + (1,) * (cs.ndim - 1))
    return np.broadcast_to(e / ((1.0 - e) / np.sqrt(cs) + e), shape)


def target_density(t, layout: Layout, starts):
    """``P_target(t)`` for a layout whose stages start at ``starts`` (``starts[0] = 0``)."""
    t = np.asarray(t, dtype=np.float64)
    h0 = layout.base_shift
    dens = _truncated_pdf(t, h0, 0.0, 1.0)
    weight = 1.0
    for e, s in zip(layout.ends[:-1], starts[1:]):
        dens = dens + (e - s) * _truncated_pdf(t, h0, s, e)
        weight += e - s
    return dens / weight


def actual_density(t, layout: Layout, starts, shifts):
    """``P(t)``: the density of the layout's timesteps with per-stage shifts ``shifts``."""
    t = np.asarray(t, dtype=np.float64)
    total = sum(n * _truncated_pdf(t, h, s, e)
                for n, h, s, e in zip(layout.steps, shifts, starts, layout.ends))
    return total / layout.total_steps


def js_distance(p, q) -> float:
    """The paper's JS distance between two densities sampled on the same grid."""
    p = np.clip(np.asarray(p, dtype=np.float64), _FLOOR, None)
    q = np.clip(np.asarray(q, dtype=np.float64), _FLOOR, None)
    with np.errstate(invalid="ignore"):
        d = float(jensenshannon(p / p.sum(), q / q.sum()))
    # scipy takes the square root of a divergence that rounding can leave at -1e-17 for
    # identical densities; that is a distance of 0, not a NaN.
    return 0.0 if math.isnan(d) else d


def paper_metric(layout: Layout, shifts, correlations) -> float:
    """The paper's "JSD" of a layout with shifts ``h_k`` and correlations ``c_k``."""
    starts = [0.0] + list(_restarts(layout.ends[:-1], correlations))
    return js_distance(target_density(GRID, layout, starts), actual_density(GRID, layout, starts, shifts))


def _batch_metric(layout: Layout, shifts, cs):
    """The paper metric for a batch: ``shifts`` ``(K, S)``, ``cs`` ``(K-1 or 1, S)``."""
    K, S = shifts.shape
    t = GRID[None, :]
    starts = np.zeros((K, S))
    if K > 1:
        starts[1:] = _restarts(layout.ends[:-1], np.broadcast_to(cs, (K - 1, S)))
    ends = np.asarray(layout.ends)
    h0 = layout.base_shift
    target = _truncated_pdf(t, h0, 0.0, 1.0) * np.ones((S, 1))
    weight = np.ones((S, 1))
    act = np.zeros((S, GRID.size))
    for k in range(K):
        s = starts[k][:, None]
        act += layout.steps[k] * _truncated_pdf(t, shifts[k][:, None], s, ends[k])
        if k:
            span = ends[k - 1] - s
            target += span * _truncated_pdf(t, h0, s, ends[k - 1])
            weight += span
    p = np.clip(target / weight, _FLOOR, None)
    q = np.clip(act / layout.total_steps, _FLOOR, None)
    p /= p.sum(axis=1, keepdims=True)
    q /= q.sum(axis=1, keepdims=True)
    m = 0.5 * (p + q)
    kl = lambda x: np.sum(x * np.log(x / m), axis=1)  # noqa: E731
    return np.sqrt(np.maximum(0.5 * (kl(p) + kl(q)), 0.0))


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """Search box: ``h_k`` in ``shift``, ``Z = 1/sqrt(c)`` in ``z`` (authors: ``[0.5, 10]``, ``[2, 100]``).

    ``z=None`` takes ``[max(2, largest factor), 100]``, the authors' box where it is valid;
    an explicit ``z`` whose lower end admits ``c > 1/n`` is rejected.
    """

    shift: tuple = (0.5, 10.0)
    z: tuple | None = None

    def resolve(self, layout: Layout) -> tuple:
        sh = _pair("shift bounds", self.shift)
        if sh[0] <= 0:
            raise ValueError(f"shift bounds must be > 0, got {fmt(sh)}")
        fmax = math.isqrt(layout.max_block_size)
        z = (max(2.0, float(fmax)), 100.0) if self.z is None else _pair("Z bounds", self.z)
        if z[0] < fmax:
            raise ValueError(
                f"Z bounds {fmt(z)} allow c = 1/Z^2 > 1/n = {1 / fmax**2:g} for factor {fmax}; "
                f"the lower Z bound must be >= {fmax}")
        return sh, z


def _pair(name, value):
    try:
        lo, hi = (check_finite(name, v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers LO HI, got {value!r}") from None
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
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    K = layout.num_stages
    (hlo, hhi), (zlo, zhi) = bounds.resolve(layout)
    meta = {"solver": method, "seed": seed, "per_transition": per_transition}
    meta.update(info or {})
    if K == 1 and hlo <= layout.base_shift <= hhi:
        # one stage: the base sampler itself (h_1 = h0) matches exactly, metric 0
        return Schedule(layout=layout, shifts=[layout.base_shift], correlations=[], info=meta)
    nz = (K - 1 if per_transition else 1) if K > 1 else 0
    box = [(zlo, zhi)] * nz + [(hlo, hhi)] * K

    def split(x):
        x = np.asarray(x, dtype=np.float64)
        x2 = x.reshape(len(box), -1)
        cs = 1.0 / x2[:nz] ** 2 if nz else np.full((1, x2.shape[1]), 0.25)
        return x2[nz:], cs

    def objective(x):
        h, cs = split(x)
        if np.ndim(x) > 1:  # a population (differential evolution): vectorised metric
            return _batch_metric(layout, h, cs)
        return paper_metric(layout, h[:, 0], np.broadcast_to(cs[:, 0], (K - 1,)))

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
    return Schedule(layout=layout, shifts=[float(v) for v in h],
                    correlations=[float(v) for v in cs], info=meta)
