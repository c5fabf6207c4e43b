import numpy as np
import pytest
from hypothesis import given, strategies as st

from profiles import examples
from ralu_schedule import (block_noise_beta, nearest_upsampling_matrix, noise_covariance, reinjection,
                           sample_block_noise)
from ralu_schedule.reinjection import reinjected_moments
from ralu_schedule.strategies import transitions


def test_paper_values_7x():
    rj = reinjection(0.2, 1 / 6.261**2)
    assert rj.restart == pytest.approx(0.0384, abs=5e-5)
    assert rj.a == pytest.approx(0.192, abs=5e-4)
    assert rj.b == pytest.approx(0.9616, abs=5e-5)


@given(transitions())
def test_closed_form_identities(t):
    f, e, c = t
    rj = reinjection(e, c, f)
    delta = (1 - e) / np.sqrt(c)
    assert rj.b == pytest.approx(1 - rj.restart)
    assert rj.restart == pytest.approx(e * rj.a)
    assert rj.a == pytest.approx(1 / (delta + e))
    assert 0 < rj.restart < e


@examples(40)
@given(transitions(), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_reinjected_marginal_is_exact(t, h, w, seed):
    """x_s | x1 ~ N(s U x1, (1-s)^2 I) for upsampled blocks (covariance algebra)."""
    f, e, c = t
    rj = reinjection(e, c, f)
    U = nearest_upsampling_matrix(h, w, f)
    x1 = np.random.default_rng(seed).standard_normal(h * w)
    mean, cov = reinjected_moments(rj, U, x1)
    np.testing.assert_allclose(mean, rj.restart * U @ x1, atol=1e-12)
    np.testing.assert_allclose(cov, (1 - rj.restart) ** 2 * np.eye(U.shape[0]), atol=1e-12)


@given(transitions())
def test_kept_tokens_need_variance_one_minus_c(t):
    f, e, c = t
    rj = reinjection(e, c, f)
    I = np.eye(5)
    _, cov = reinjected_moments(rj, I, np.zeros(5))
    np.testing.assert_allclose(noise_covariance(I, c), (1 - c) * I)
    np.testing.assert_allclose(cov, (1 - rj.restart) ** 2 * I, atol=1e-12)
    # the authors' variance-1 noise leaves the kept tokens' variance too large by the
    # factor (a^2 (1-e)^2 + b^2) / (1-s)^2 = 1 + c
    authors = rj.a**2 * (1 - e) ** 2 + rj.b**2
    assert authors / (1 - rj.restart) ** 2 == pytest.approx(1 + c)


def test_mixed_token_set_covariance_is_block_diagonal():
    # two coarse tokens, the first upsampled by 2 (4 children), the second kept
    U = np.zeros((5, 2))
    U[:4, 0] = 1
    U[4, 1] = 1
    cov = noise_covariance(U, 0.2)
    expected = np.eye(5)
    expected[:4, :4] -= 0.2
    expected[4, 4] = 0.8
    np.testing.assert_allclose(cov, expected)


@given(st.integers(1, 16), st.floats(0.0, 1.0))
def test_block_noise_beta_gives_the_covariance(n, frac):
    c = frac / n
    beta = block_noise_beta(n, c)
    A = np.eye(n) - beta * np.ones((n, n))
    np.testing.assert_allclose(A @ A.T, np.eye(n) - c * np.ones((n, n)), atol=1e-12)


def test_block_noise_sampler_empirical_covariance():
    z = sample_block_noise(np.random.default_rng(0), (200000, 4), 0.2)
    emp = np.cov(z, rowvar=False)
    np.testing.assert_allclose(emp, np.eye(4) - 0.2, atol=0.015)


def test_upsampling_matrix_is_nearest():
    U = nearest_upsampling_matrix(2, 3, 2)
    x = np.arange(6.0)
    up = (U @ x).reshape(4, 6)
    np.testing.assert_array_equal(up, np.kron(x.reshape(2, 3), np.ones((2, 2))))


@pytest.mark.parametrize("e, c, f, msg", [
    (0.3, 0.26, 2, r"c must lie in \(0, 1/n\] = \(0, 0.25\] for factor 2"),
    (0.3, 0.12, 3, r"\(0, 0.111111\] for factor 3"),
    (0.3, 0.0, 2, "c must lie in"),
    (1.0, 0.1, 2, r"transition time e must lie in \(0, 1\)"),
    (0.3, 0.1, 1, "factor must be an integer >= 2"),
])
def test_bad_inputs(e, c, f, msg):
    with pytest.raises(ValueError, match=msg):
        reinjection(e, c, f)
