"""The paper metric of a layout: target and actual timestep densities and their JS distance.

Re-injection restarts stage ``k+1`` at ``s_{k+1} < e_k``, so ``[s_{k+1}, e_k]`` is
traversed twice. The target density is the base sampler's, with the re-traversed
intervals counted again (paper eq. 8, generalised to ``K`` stages)::

    P_target(t) = [f_{h0}(t) + sum_k (e_k - s_{k+1}) f_{h0, s_{k+1}, e_k}(t)] / (1 + sum_k (e_k - s_{k+1}))

A layout that starts at ``s_1 = start > 0`` (an image-to-image run, :mod:`ralu_schedule.strength`)
is matched to the base sampler truncated to ``[s_1, 1]``, weighted by that range's length as
every re-traversed interval is weighted by its own::

    P_target(t) = [(1 - s_1) f_{h0, s_1, 1}(t) + sum_k (e_k - s_{k+1}) f_{h0, s_{k+1}, e_k}(t)]
                  / (1 - s_1 + sum_k (e_k - s_{k+1}))

which is eq. 8 at ``s_1 = 0``.

and the layout's own density is ``P(t) = sum_k N_k f_{h_k, s_k, e_k}(t) / sum_k N_k`` (eq. 9).
The paper metric is scipy's Jensen-Shannon *distance* (natural log) between both densities
sampled on 1000 equispaced points of ``[0, 1]``, each clipped below at 1e-10 and normalised.

The densities are :func:`ralu_schedule.distributions.truncated_pdf`, the formula behind
:class:`ralu_schedule.ShiftedTime`, called unchecked: parameters come from a validated
:class:`~ralu_schedule.Schedule` or from the solver's search box. Everything here broadcasts: shifts ``(K, ...)`` and correlations ``(K-1, ...)`` give metrics
of shape ``(...)``, so the solver evaluates a whole population with the same code that
:attr:`ralu_schedule.Schedule.jsd` uses for one schedule. This module sits below
:mod:`ralu_schedule.layout` and reads layouts by their attributes only.
"""

from __future__ import annotations

import math

import numpy as np

from .distributions import stretched_cdf, stretched_pdf, truncated_pdf
from .reinjection import coefficients

#: The paper metric's grid.
GRID = np.linspace(0.0, 1.0, 1000)
FLOOR = 1e-10


def stage_starts(layout, correlations) -> list:
    """Start times ``[s_1, s_2, ..., s_K]``: the layout's ``start`` (0 unless it starts from an
    image), then each restart by the closed form of :func:`ralu_schedule.reinjection` (the
    callers have checked ``c``)."""
    return [getattr(layout, "start", 0.0)] + [coefficients(e, c)[0] for e, c in zip(layout.ends[:-1], correlations)]


def target_density(t, layout, starts):
    """``P_target(t)`` for a layout whose stages start at ``starts`` (``starts[0]``: where the
    run starts, 0 from pure noise).

    ``starts`` entries may be arrays (one start per member of a population); they
    broadcast against ``t``. With a ``layout.terminal``, the base sampler's density is its
    stretched grid's (:class:`~ralu_schedule.distributions.StretchedTime`, ``total_steps`` steps),
    restricted to each re-traversed interval in the same way.
    """
    t = np.asarray(t, dtype=np.float64)
    spans = [e - s for e, s in zip(layout.ends[:-1], starts[1:])]
    first = starts[0]
    dens = _weighted_sum([1.0 - first] + spans, [_base_pdf(t, layout, first, 1.0)] +
                         [_base_pdf(t, layout, s, e) for e, s in zip(layout.ends[:-1], starts[1:])])
    dens /= 1.0 - first + sum(spans)
    return dens


def _base_pdf(t, layout, start, end):
    """The base sampler's timestep density truncated to ``[start, end]``: its grid of
    ``layout.base_steps`` steps (``total_steps`` for a layout that starts at 0)."""
    h0, n0, tau = layout.base_shift, getattr(layout, "base_steps", layout.total_steps), layout.terminal
    if tau is None or n0 < 2:
        return truncated_pdf(t, h0, start, end)
    mass = stretched_cdf(end, h0, 0.0, n0, tau) - stretched_cdf(start, h0, 0.0, n0, tau)
    dens = stretched_pdf(t, h0, 0.0, n0, tau) / mass
    return np.where((t >= start) & (t <= end), dens, 0.0)


def actual_density(t, layout, starts, shifts):
    """``P(t)``: the density of the layout's timesteps with per-stage shifts ``shifts`` (the
    last stage's stretched when the layout has a ``terminal`` and it takes 2 steps or more)."""
    t = np.asarray(t, dtype=np.float64)
    K = layout.num_stages
    stretch = layout.terminal is not None and layout.steps[-1] >= 2
    terms = [stretched_pdf(t, h, s, n, layout.terminal) if stretch and k == K - 1 else truncated_pdf(t, h, s, e)
             for k, (h, s, e, n) in enumerate(zip(shifts, starts, layout.ends, layout.steps))]
    total = _weighted_sum(layout.steps, terms)
    total /= layout.total_steps
    return total


def _weighted_sum(weights, terms):
    """``sum(w * term)``, accumulated in place into one array of the broadcast shape."""
    out = np.zeros(np.broadcast_shapes(*(np.shape(w) for w in weights), *(np.shape(x) for x in terms)))
    for w, x in zip(weights, terms):
        x *= w
        out += x
    return out


def js_distance(p, q, axis: int = -1):
    """The paper's JS distance between densities sampled on the same grid (along ``axis``)."""
    from scipy.spatial.distance import jensenshannon   # imported on first use: keeps the core import light

    # scipy normalises each density along ``axis`` itself
    p = np.maximum(np.asarray(p, dtype=np.float64), FLOOR)
    q = np.maximum(np.asarray(q, dtype=np.float64), FLOOR)
    with np.errstate(invalid="ignore"):
        d = jensenshannon(p, q, axis=axis)
    # scipy takes the square root of a divergence that rounding can leave at -1e-17 for
    # identical densities; that is a distance of 0, not a NaN.
    if np.ndim(d) == 0:
        return 0.0 if math.isnan(d) else float(d)
    return np.where(np.isnan(d), 0.0, d)


def paper_metric(layout, shifts, correlations):
    """The paper's "JSD" of a layout with shifts ``h_k`` and correlations ``c_k``.

    ``shifts`` ``(K, ...)`` and ``correlations`` ``(K-1, ...)`` give a result of shape ``(...)``:
    a float for one schedule, an array for a population.
    """
    h = np.asarray(shifts, dtype=np.float64)
    c = np.asarray(correlations, dtype=np.float64)
    if h.ndim > 1:                                               # a population: a last axis for the grid
        h, c = h[..., None], c.reshape(len(layout.ends) - 1, *h.shape[1:], 1)
    else:                                                        # one schedule: plain floats are faster
        h, c = h.tolist(), c.reshape(len(layout.ends) - 1).tolist()
    starts = stage_starts(layout, c)
    return js_distance(target_density(GRID, layout, starts), actual_density(GRID, layout, starts, h))
