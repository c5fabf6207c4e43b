"""Noise re-injection at a transition (METHOD section 3), in closed form.

Nearest upsampling ``U`` copies each low-resolution value into ``n = f^2`` places, which
turns ``x_e | x1 ~ N(e x1, (1-e)^2 I)`` into ``N(e U x1, (1-e)^2 U U^T)``. Re-injecting

    x_s = a U(x_e) + b z,        z ~ N(0, I - c U U^T)

with ``delta = (1 - e) / sqrt(c)``, ``s = e / (delta + e)``, ``a = 1 / (delta + e)`` and
``b = delta / (delta + e) = 1 - s`` restores ``x_s | x1 ~ N(s U x1, (1-s)^2 I)`` exactly.
Tokens left at their resolution use ``U = I`` and so noise of variance ``1 - c``.
``I - c U U^T`` is positive semi-definite only for ``c <= 1/n``.

:mod:`ralu_schedule.derivation` derives the same formulas symbolically; the tests check
that both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._errors import check_finite, check_finite_array, check_positive_int


def max_correlation(factor: int) -> float:
    """The largest allowed ``c`` for nearest upsampling by ``factor`` per axis: ``1 / factor^2``."""
    factor = check_positive_int("factor", factor, minimum=2)
    return 1.0 / factor**2


def check_correlation(c, factor: int):
    """Validate ``0 < c <= 1/factor^2`` (elementwise for arrays) and return ``c`` as floats."""
    arr = check_finite_array("c", c)
    bound = max_correlation(factor)
    bad = ~((0.0 < arr) & (arr <= bound * (1.0 + 1e-12)))
    if np.any(bad):
        raise ValueError(
            f"c must lie in (0, 1/n] = (0, {bound:g}] for factor {factor} (n = {factor**2} values "
            f"per block; above it I - c U U^T is not a covariance), got {float(arr[bad].flat[0]):g}")
    return _scalar_or_array(np.minimum(arr, bound))


@dataclass(frozen=True)
class Reinjection:
    """Coefficients of one transition: ``x_s = a * U(x_e) + b * z``, ``z ~ N(0, I - c U U^T)``.

    Floats for one transition; arrays of one shape when :func:`reinjection` was given arrays.
    """

    at: float       # e: the data-time where the previous stage ended
    c: float        # noise correlation inside an upsampled block
    restart: float  # s: the data-time where the next stage starts
    a: float
    b: float


def reinjection(e, c, factor: int = 2) -> Reinjection:
    """Closed-form ``s, a, b`` for a transition at data-time ``e`` with correlation ``c``.

    ``e`` and ``c`` may be arrays (broadcast together, as ``scipy.stats`` parameters are):
    the solver evaluates a whole population of correlations in one call.
    """
    e = check_finite_array("transition time e", e)
    bad = ~((0.0 < e) & (e < 1.0))
    if np.any(bad):
        raise ValueError(f"transition time e must lie in (0, 1), got {float(e[bad].flat[0]):g}")
    c = np.asarray(check_correlation(c, factor))
    e, c = np.broadcast_arrays(e, c)
    s, a, b = coefficients(e, c)
    return Reinjection(**{k: _scalar_or_array(v) for k, v in
                          {"at": e, "c": c, "restart": s, "a": a, "b": b}.items()})


def coefficients(e, c) -> tuple:
    """``(s, a, b)`` with ``delta = (1 - e) / sqrt(c)``: ``s = e / (delta + e)``,
    ``a = 1 / (delta + e)``, ``b = delta / (delta + e)``. Unchecked, broadcasts: the one
    place these formulas are written; :func:`reinjection` checks ``e`` and ``c`` and calls it."""
    delta = (1.0 - e) / np.sqrt(c)
    return e / (delta + e), 1.0 / (delta + e), delta / (delta + e)


def _scalar_or_array(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else np.asarray(x, dtype=np.float64)


def block_noise_beta(n: int, c) -> float:
    """``beta`` such that ``w - beta * sum(w)`` has covariance ``I_n - c 1 1^T`` for ``w ~ N(0, I_n)``.

    ``beta = (1 - sqrt(1 - n c)) / n`` solves ``n beta^2 - 2 beta + c = 0``; this makes
    correlated noise O(number of values) instead of a dense Cholesky factor.
    """
    n = check_positive_int("block size n", n)
    c = check_finite("c", c)
    if not 0.0 <= c <= 1.0 / n * (1.0 + 1e-12):
        raise ValueError(f"c must lie in [0, 1/n] = [0, {1.0 / n:g}] for block size {n}, got {c:g}")
    return (1.0 - math.sqrt(max(0.0, 1.0 - n * c))) / n


def sample_block_noise(rng: np.random.Generator, shape, c) -> np.ndarray:
    """Reference sampler (numpy): noise whose last axis is one block of ``n = shape[-1]``
    values with covariance ``I_n - c 1 1^T``; blocks are independent."""
    w = rng.standard_normal(shape)
    beta = block_noise_beta(int(shape[-1]), c)
    return w - beta * w.sum(axis=-1, keepdims=True)


def nearest_upsampling_matrix(height: int, width: int, factor: int) -> np.ndarray:
    """Dense ``U`` of shape ``(height*factor * width*factor, height * width)`` for nearest
    upsampling of a row-major ``height x width`` grid. For checks and small grids only."""
    height = check_positive_int("height", height)
    width = check_positive_int("width", width)
    factor = check_positive_int("factor", factor)
    rows = np.arange(height * factor)[:, None] // factor
    cols = np.arange(width * factor)[None, :] // factor
    parent = (rows * width + cols).ravel()
    U = np.zeros((parent.size, height * width))
    U[np.arange(parent.size), parent] = 1.0
    return U


def noise_covariance(U: np.ndarray, c) -> np.ndarray:
    """``I - c U U^T``: the covariance of the re-injected noise ``z`` for upsampling ``U``
    (``U = I`` for tokens left at their resolution)."""
    U = np.asarray(U, dtype=np.float64)
    return np.eye(U.shape[0]) - float(c) * U @ U.T


def reinjected_moments(rj: Reinjection, U: np.ndarray, x1: np.ndarray):
    """Mean and covariance of ``x_s | x1`` after re-injection, by covariance algebra.

    ``x_e | x1 ~ N(e x1, (1-e)^2 I)`` on the coarse grid, so ``x_s = a U x_e + b z`` has
    mean ``a e U x1`` and covariance ``a^2 (1-e)^2 U U^T + b^2 (I - c U U^T)``.
    """
    U = np.asarray(U, dtype=np.float64)
    mean = rj.a * rj.at * U @ np.asarray(x1, dtype=np.float64)
    cov = rj.a**2 * (1.0 - rj.at) ** 2 * U @ U.T + rj.b**2 * noise_covariance(U, rj.c)
    return mean, cov
