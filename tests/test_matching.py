import math

import numpy as np
import pytest
from scipy.integrate import trapezoid

from ralu_schedule import Bounds, Layout, Schedule, actual_density, paper_metric, preset, solve, target_density
from ralu_schedule.metric import GRID

L7 = Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1, 1.0))
L4 = Layout(steps=(5, 6, 7), ends=(0.3, 0.45, 1.0), fractions=(0.3, 1.0))


def test_paper_metric_of_the_7x_preset():
    # published parameters h = [8.141, 2.856, 2.193], Z = 6.261, h0 = 3
    assert round(paper_metric(L7, (8.141, 2.856, 2.193), (6.261**-2,) * 2), 4) == 0.0266


def test_paper_metric_of_the_4x_preset():
    assert round(paper_metric(L4, (5.019, 2.589, 2.226), (6.317**-2,) * 2), 4) == 0.0175


def test_metric_is_scipy_js_distance_on_the_grid():
    from scipy.spatial.distance import jensenshannon

    s = preset("flux-dev-7x")
    p = np.clip(target_density(GRID, s.layout, s.starts), 1e-10, None)
    q = np.clip(actual_density(GRID, s.layout, s.starts, s.shifts), 1e-10, None)
    assert s.jsd == pytest.approx(jensenshannon(p / p.sum(), q / q.sum()), rel=1e-12)


@pytest.mark.parametrize("layout", [L7, L4, Layout(steps=(3, 4, 2, 6), ends=(0.1, 0.3, 0.5, 1.0))])
def test_densities_integrate_to_one(layout):
    s = solve(layout, method="single-start")
    t = np.linspace(0, 1, 200001)
    assert trapezoid(target_density(t, layout, s.starts), t) == pytest.approx(1, abs=1e-3)
    assert trapezoid(actual_density(t, layout, s.starts, s.shifts), t) == pytest.approx(1, abs=1e-3)


def test_single_start_is_the_authors_optimiser():
    # one L-BFGS-B start from h = 3, Z = 2 lands on the authors' published parameters
    s = solve(L7, method="single-start")
    np.testing.assert_allclose(s.shifts, (8.141, 2.856, 2.193), atol=2e-3)
    assert s.c ** -0.5 == pytest.approx(6.261, abs=2e-3)


@pytest.mark.parametrize("layout", [L7, L4], ids=["7x", "4x"])
def test_global_solver_beats_single_start_where_it_stalls(layout):
    single = solve(layout, method="single-start")
    best = solve(layout)
    assert best.jsd < single.jsd - 1e-4
    assert best.jsd == pytest.approx(paper_metric(layout, best.shifts, best.correlations))


@pytest.mark.parametrize("layout", [
    Layout(steps=(4, 4, 6, 8), ends=(0.2, 0.35, 0.55, 1.0), fractions=(0.2, 0.5, 1.0)),
    Layout(steps=(2, 2, 2, 3, 5), ends=(0.1, 0.2, 0.3, 0.5, 1.0)),
    Layout(steps=(4, 6), ends=(0.4, 1.0), factors=(3,), base_shift=3.16),
    Layout(steps=(12,), ends=(1.0,), base_shift=3.16),
], ids=["4-stage", "5-stage", "factor-3", "1-stage"])
def test_many_stage_layouts_solve_no_worse_than_single_start(layout):
    single = solve(layout, method="single-start")
    best = solve(layout)
    assert best.jsd <= single.jsd + 1e-12
    assert np.isfinite(best.jsd)
    assert len(best.shifts) == layout.num_stages
    assert all(0 < t.c <= 1 / t.factor**2 for t in best.transitions)


def test_one_stage_layout_matches_its_base_shift():
    s = solve(Layout(steps=(20,), ends=(1.0,), base_shift=3.16))
    assert s.shifts[0] == pytest.approx(3.16, rel=1e-3)
    assert s.jsd < 1e-4


def test_per_transition_correlations_do_at_least_as_well():
    shared = solve(L7)
    own = solve(L7, per_transition=True)
    assert len(set(own.correlations)) == 2
    assert own.jsd <= shared.jsd + 1e-9


def test_solver_is_deterministic():
    a, b = solve(L4), solve(L4)
    assert a.shifts == b.shifts and a.correlations == b.correlations


def test_bounds_are_respected():
    s = solve(L7, bounds=Bounds(shift=(1.0, 4.0), z=(3.0, 5.0)))
    assert all(1.0 <= h <= 4.0 for h in s.shifts)
    assert 3.0 - 1e-9 <= s.c ** -0.5 <= 5.0 + 1e-9


@pytest.mark.parametrize("bounds, msg", [
    (Bounds(z=(1.5, 100)), r"Z bounds \[1.5, 100\] allow c = 1/Z\^2 > 1/n = 0.25 for factor 2"),
    (Bounds(shift=(0.0, 10)), r"shift bounds must lie in \[0.001, 1e\+06\]"),
    (Bounds(shift=(5, 2)), "LO < HI"),
])
def test_bad_bounds(bounds, msg):
    with pytest.raises(ValueError, match=msg):
        solve(L7, bounds=bounds)


def test_factor_three_default_bounds_respect_its_limit():
    lay = Layout(steps=(3, 5), ends=(0.3, 1.0), factors=(3,))
    assert solve(lay).c <= 1 / 9
    with pytest.raises(ValueError, match="for factor 3"):
        solve(lay, bounds=Bounds(z=(2.0, 100.0)))


def test_unknown_method():
    with pytest.raises(ValueError, match="method must be one of global, single-start"):
        solve(L7, method="bfgs")


def test_schedule_jsd_property_is_the_metric():
    s = Schedule(layout=L7, shifts=(8.141, 2.856, 2.193), correlations=(6.261**-2,) * 2)
    assert s.jsd == paper_metric(L7, s.shifts, s.correlations)


def test_vectorised_metric_equals_scalar_metric():
    """The solver's population call and the one-schedule call are the same function."""
    rng = np.random.default_rng(1)
    h = rng.uniform(0.5, 10, size=(3, 7))
    cs = rng.uniform(1e-4, 0.25, size=(2, 7))
    batch = paper_metric(L7, h, cs)
    assert batch.shape == (7,)
    for j in range(7):
        assert batch[j] == pytest.approx(paper_metric(L7, h[:, j], cs[:, j]), rel=1e-9, abs=1e-12)


# -- every integer factor solves (issue 27: above 100 the default Z box was empty) -----------------

from hypothesis import example, given, settings, strategies as st  # noqa: E402

from ralu_schedule.layout import MAX_FACTOR, _levels  # noqa: E402
from ralu_schedule.strategies import layouts  # noqa: E402

FACTORS = st.integers(2, MAX_FACTOR)


@st.composite
def layouts_with_factors(draw):
    """A drawn layout of 2 to 4 stages, each resolution level with its own factor in [2, MAX_FACTOR]."""
    lay = draw(layouts(max_stages=4, max_steps=4))
    factors = [0] * (lay.num_stages - 1)
    for group in _levels(lay.fractions):
        f = draw(FACTORS)
        for i in group:
            factors[i] = f
    return Layout(steps=lay.steps, ends=lay.ends, fractions=lay.fractions, factors=factors,
                  base_shift=lay.base_shift)


def check_solved(lay, s):
    """A valid, finite schedule for ``lay`` whose correlations lie in the default box."""
    f = math.isqrt(lay.max_block_size)
    assert s.layout == lay and np.isfinite(s.jsd) and len(s.shifts) == lay.num_stages
    assert all(0 < t.c <= 1 / t.factor**2 * (1 + 1e-12) for t in s.transitions)
    assert all(f * (1 - 1e-9) <= t.c ** -0.5 <= 50 * f * (1 + 1e-9) for t in s.transitions)
    assert all(0 < t.restart < t.at for t in s.transitions)


@settings(max_examples=30)
@example(lay=Layout(steps=(2, 3), ends=(0.3, 1.0), factors=(101,)), per_transition=False)
@example(lay=Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), factors=(MAX_FACTOR, MAX_FACTOR),
                    fractions=(0.1, 1.0)), per_transition=True)
@given(lay=layouts_with_factors().filter(lambda lay: lay.num_stages > 1), per_transition=st.booleans())
def test_every_factor_solves(lay, per_transition):
    check_solved(lay, solve(lay, method="single-start", per_transition=per_transition))


@settings(max_examples=4)
@example(factor=100)
@example(factor=101)
@given(factor=FACTORS)
def test_every_factor_solves_globally(factor):
    lay = Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1, 1.0), factors=(factor, factor))
    s = solve(lay)
    check_solved(lay, s)
    assert s.jsd <= solve(lay, method="single-start").jsd + 1e-12


def test_default_z_box_is_the_authors_for_factor_two():
    lay = Layout(steps=(2, 3), ends=(0.3, 1.0))
    assert Bounds().resolve(lay)[1] == (2.0, 100.0)
    assert Bounds().resolve(Layout(steps=(2, 3), ends=(0.3, 1.0), factors=(300,)))[1] == (300.0, 15000.0)


def test_factor_above_the_limit_is_refused():
    with pytest.raises(ValueError, match=f"each factor must be at most {MAX_FACTOR}"):
        Layout(steps=(2, 3), ends=(0.3, 1.0), factors=(MAX_FACTOR + 1,))
