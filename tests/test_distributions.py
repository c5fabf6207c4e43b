"""Invariants of the shifted timestep distributions over a table of parameters."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.integrate import quad

from profiles import examples
from ralu_schedule import ShiftedTime
from ralu_schedule.strategies import shifted_times


def dists():
    return shifted_times().map(lambda p: ShiftedTime(*p))


@given(dists(), st.floats(0.0, 1.0))
def test_cdf_of_ppf_is_identity(d, q):
    assert d.cdf(d.ppf(q)) == pytest.approx(q, abs=1e-10)


@examples(40)
@given(dists())
def test_pdf_integrates_to_one_and_is_cdf_derivative(d):
    total, _ = quad(d.pdf, d.start, d.end, epsabs=1e-12)
    assert total == pytest.approx(1.0, abs=1e-8)
    t = np.linspace(d.start, d.end, 13)[1:-1]
    eps = 1e-6 * (d.end - d.start)
    num = (d.cdf(t + eps) - d.cdf(t - eps)) / (2 * eps)
    np.testing.assert_allclose(num, d.pdf(t), rtol=1e-5)


@given(dists())
def test_support_and_cdf_ends(d):
    assert d.cdf(d.start) == 0.0 and d.cdf(d.end) == pytest.approx(1.0)
    if d.start > 0:
        assert d.pdf(d.start / 2) == 0.0
    if d.end < 1:
        assert d.pdf((d.end + 1) / 2) == 0.0


@given(dists(), st.integers(1, 30))
def test_grid_is_shifted_uniform_sigmas(d, n):
    from ralu_schedule import shift_sigmas, unshift_sigmas

    t = d.grid(n)
    assert t[0] == d.start and t[-1] == d.end and np.all(np.diff(t) > 0)
    # uniform in unshifted sigma between the inverse-shifted ends
    u = unshift_sigmas(1 - t, d.h)
    np.testing.assert_allclose(np.diff(u), np.full(n, u[1] - u[0]), atol=1e-10)
    np.testing.assert_allclose(shift_sigmas(u, d.h), 1 - t, atol=1e-12)


def test_untruncated_density_formula():
    d = ShiftedTime(3.0)
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(d.pdf(t), 3.0 / (1 + 2.0 * t) ** 2)
    np.testing.assert_allclose(d.cdf(t), 3.0 * t / (1 + 2.0 * t))


def test_sampling_matches_cdf():
    from scipy.stats import kstest

    d = ShiftedTime(4.0, 0.1, 0.7)
    x = d.sample(20000, np.random.default_rng(0))
    assert kstest(x, d.cdf).pvalue > 1e-3


def test_full_grid_matches_flux_pipeline_sigmas():
    # FluxPipeline: sigmas = linspace(1, 1/N, N), shifted by exp(mu), then 0 appended.
    h, n = 3.158, 28
    u = np.linspace(1.0, 1.0 / n, n)
    ref = np.append(h * u / (1 + (h - 1) * u), 0.0)
    np.testing.assert_allclose(1 - ShiftedTime(h).grid(n), ref, atol=1e-12)


@pytest.mark.parametrize("args, msg", [((0.0,), r"shift must lie in \[0.001, 1e\+06\], got 0"), ((2.0, 0.5, 0.5), "start < end"),
                                       ((2.0, -0.1, 0.5), "0 <= start"), ((2.0, 0.1, 1.2), "end <= 1")])
def test_bad_parameters(args, msg):
    with pytest.raises(ValueError, match=msg):
        ShiftedTime(*args)
