"""The hand-written closed forms equal the sympy derivation."""

import pytest
import sympy as sp
from hypothesis import given, strategies as st

from profiles import examples
from ralu_schedule import block_noise_beta, derive, reinjection
from ralu_schedule.derivation import in_delta_form, kept_token_residual


@pytest.fixture(scope="module")
def symbolic():
    return derive()


def test_solution_in_delta_form_is_the_papers(symbolic):
    e, delta = sp.Symbol("e", positive=True), sp.Symbol("delta", positive=True)
    forms = in_delta_form(symbolic)
    assert sp.simplify(forms["s"] - e / (delta + e)) == 0
    assert sp.simplify(forms["a"] - 1 / (delta + e)) == 0
    assert sp.simplify(forms["b"] - delta / (delta + e)) == 0


def test_validity_condition(symbolic):
    c, n = symbolic.symbols["c"], symbolic.symbols["n"]
    assert symbolic.validity == sp.Le(c, 1 / n)


def test_kept_tokens_use_the_same_coefficients(symbolic):
    assert kept_token_residual(symbolic) == 0


@examples(200)
@given(st.floats(0.01, 0.99), st.floats(1e-4, 1.0), st.integers(2, 5))
def test_closed_form_equals_derivation(symbolic, e, frac, f):
    c = frac / f**2
    rj = reinjection(e, c, f)
    assert symbolic.numeric("s")(e, c) == pytest.approx(rj.restart, rel=1e-12)
    assert symbolic.numeric("a")(e, c) == pytest.approx(rj.a, rel=1e-12)
    assert symbolic.numeric("b")(e, c) == pytest.approx(rj.b, rel=1e-12)
    assert symbolic.numeric("beta")(e, c, f * f) == pytest.approx(block_noise_beta(f * f, c), rel=1e-10)


@pytest.mark.parametrize("n", [2, 4, 9])
def test_explicit_matrix_derivation_agrees(symbolic, n):
    d = derive(n)
    for key in ("s", "a", "b"):
        assert sp.simplify(d.solution[key] - symbolic.solution[key]) == 0
    assert d.validity == sp.Le(symbolic.symbols["c"], sp.Rational(1, n))


def test_printable(symbolic):
    text = str(symbolic)
    assert "a*e = s" in text and "valid for: c <= 1/n" in text
    tex = symbolic.latex()
    assert tex.startswith("\\begin{align}") and "\\sqrt{c}" in tex


def test_bad_block_size():
    with pytest.raises(ValueError, match="block_size must be None or an integer >= 2"):
        derive(1)
