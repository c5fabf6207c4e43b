"""Checks a user runs on their own layout or schedule: the claims of the derivation, verified.

Each ``check_*`` function returns a dict of what it measured and raises
:class:`VerificationError` (an ``AssertionError``, so test runners report it as a failure)
with a message naming the claim, the transition or stage, and the numbers, when a claim
fails. :func:`verify` runs them all. Dense matrices are built for one small coarse grid
only, so every check is cheap.

- :func:`check_reinjection`: the re-injected state of every transition has the
  flow-matching marginal ``x_s | x1 ~ N(s U x1, (1-s)^2 I)``, for upsampled blocks and for
  tokens left at their resolution, and the O(n) block-noise factor gives ``I - c 1 1^T``;
- :func:`check_density_matching`: target and actual timestep densities are normalised,
  every stage's timesteps are equal quantiles of its shifted distribution, restarts lie
  before the ends they restart from, and the stored metric is the recomputed one;
- :func:`check_json_round_trip`: JSON export and import give the same schedule, bit for bit.
"""

from __future__ import annotations

import numpy as np

from .distributions import ShiftedTime
from .layout import Schedule
from .metric import GRID, actual_density, paper_metric, target_density
from .reinjection import block_noise_beta, nearest_upsampling_matrix, reinjected_moments

__all__ = ["VerificationError", "check_density_matching", "check_json_round_trip", "check_reinjection", "verify"]


class VerificationError(AssertionError):
    """A claim of the derivation does not hold for the schedule checked."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise VerificationError(message)


def check_reinjection(schedule: Schedule, coarse_grid: tuple = (2, 3), seed: int = 0, atol: float = 1e-10) -> dict:
    """Mean and covariance of every transition's re-injected state, by covariance algebra
    on a ``coarse_grid`` of blocks with a random clean image ``x1``."""
    _require(isinstance(schedule, Schedule), f"expected a Schedule, got {type(schedule).__name__}")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for k, tr in enumerate(schedule.transitions):
        U = nearest_upsampling_matrix(*coarse_grid, tr.factor)
        x1 = rng.standard_normal(U.shape[1])
        mean, cov = reinjected_moments(tr, U, x1)
        err_mean = float(np.abs(mean - tr.restart * U @ x1).max())
        err_cov = float(np.abs(cov - (1 - tr.restart) ** 2 * np.eye(U.shape[0])).max())
        kept = (tr.a * (1 - tr.at)) ** 2 + tr.b**2 * (1 - tr.c)        # U = I: noise variance 1 - c
        err_kept = abs(kept - (1 - tr.restart) ** 2)
        n = tr.factor**2
        beta = block_noise_beta(n, tr.c)
        A = np.eye(n) - beta * np.ones((n, n))
        err_beta = float(np.abs(A @ A.T - (np.eye(n) - tr.c * np.ones((n, n)))).max())
        for name, err in (("mean", err_mean), ("covariance", err_cov), ("kept-token variance", err_kept),
                          ("block-noise covariance", err_beta)):
            _require(err <= atol, f"transition {k} (e={tr.at:g}, c={tr.c:g}, factor {tr.factor}): re-injected "
                                  f"{name} is off the flow-matching marginal by {err:.3g} > {atol:g}")
        worst = max(worst, err_mean, err_cov, err_kept, err_beta)
    return {"transitions": len(schedule.transitions), "max_error": worst}


def check_density_matching(schedule: Schedule, atol: float = 1e-9, max_jsd: float | None = None) -> dict:
    """The timestep densities behind the schedule's metric, and the metric itself
    (at most ``max_jsd`` if given)."""
    _require(isinstance(schedule, Schedule), f"expected a Schedule, got {type(schedule).__name__}")
    from scipy.integrate import trapezoid

    lay, starts = schedule.layout, schedule.starts
    t = np.linspace(0.0, 1.0, 200001)
    for name, dens in (("target", target_density(t, lay, starts)),
                       ("actual", actual_density(t, lay, starts, schedule.shifts))):
        mass = float(trapezoid(dens, t))
        _require(abs(mass - 1.0) < 1e-4, f"the {name} timestep density integrates to {mass:.6f}, not 1")
    for k, st in enumerate(schedule.stages):
        q = ShiftedTime(st.shift, st.start, st.end).cdf(st.timesteps)
        err = float(np.abs(q - np.linspace(0.0, 1.0, st.steps + 1)).max())
        _require(err <= atol, f"stage {k}: timesteps are not equal quantiles of its shifted distribution "
                              f"(off by {err:.3g})")
    for k, tr in enumerate(schedule.transitions):
        _require(0.0 < tr.restart < tr.at, f"transition {k}: restart {tr.restart:g} is not in (0, e = {tr.at:g})")
    metric = paper_metric(lay, schedule.shifts, schedule.correlations)
    _require(metric == schedule.jsd, f"stored metric {schedule.jsd!r} differs from the recomputed {metric!r}")
    if max_jsd is not None:
        _require(metric <= max_jsd, f"paper metric {metric:.5f} exceeds {max_jsd:g}")
    return {"jsd": metric, "grid_points": GRID.size}


def check_json_round_trip(schedule: Schedule) -> dict:
    """``Schedule.from_json(schedule.to_json())`` is the same schedule, timesteps bit for bit."""
    _require(isinstance(schedule, Schedule), f"expected a Schedule, got {type(schedule).__name__}")
    text = schedule.to_json()
    back = Schedule.from_json(text)
    _require(back == schedule, "the schedule read back from JSON differs from the one written")
    _require(back.jsd == schedule.jsd, f"metric changed in the round trip: {schedule.jsd!r} -> {back.jsd!r}")
    for k, (a, b) in enumerate(zip(back.stages, schedule.stages)):
        _require(np.array_equal(a.timesteps, b.timesteps), f"stage {k}: timesteps changed in the round trip")
    return {"bytes": len(text)}


def verify(schedule: Schedule, **options) -> dict:
    """Every check above; ``options`` go to :func:`check_density_matching` (``max_jsd``)."""
    return {"reinjection": check_reinjection(schedule), "density": check_density_matching(schedule, **options),
            "json": check_json_round_trip(schedule)}
