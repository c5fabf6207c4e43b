"""Starting from an image, in ralu_schedule (torch-free): layouts that start later, solved on the
truncated range; the continuous start of a strength against the stock grid; a fixed
schedule's cut; ``ralu-schedule solve --strength``."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.integrate import trapezoid
from scipy.spatial.distance import jensenshannon

from ralu_schedule import Layout, Plan, Schedule, ShiftedTime, paper_metric, preset, solve
from ralu_schedule.cli import main
from ralu_schedule.layout import Stage
from ralu_schedule.metric import GRID, actual_density, target_density
from ralu_schedule.strategies import layouts
from ralu_schedule.strength import base_cdf, base_steps, cut_index, kept_steps, map_time, start_time


@st.composite
def started_layouts(draw, terminal=True):
    """A layout of up to 3 stages moved to start at any ``t0`` in (0, 1): its ends placed
    linearly on ``[t0, 1]``; with a terminal sometimes (Qwen-Image's 0.02)."""
    lay = draw(layouts(max_stages=3, max_steps=4))
    t0 = draw(st.floats(1e-3, 0.99))
    tau = draw(st.sampled_from([None, 0.02])) if terminal else None
    ends = [t0 + (1.0 - t0) * e for e in lay.ends[:-1]] + [1.0]
    try:
        return Layout(steps=lay.steps, ends=ends, factors=lay.factors, fractions=lay.fractions,
                      base_shift=lay.base_shift, terminal=tau, start=t0)
    except ValueError:          # ends that collapse in floating point, or a start inside the stretched last step
        assume(False)


@settings(max_examples=25)
@given(started_layouts())
def test_a_truncated_solve_is_valid_for_any_start(lay):
    s = solve(lay, method="single-start")
    assert s.stages[0].timesteps[0] == lay.start and s.starts[0] == lay.start
    for stage, end in zip(s.stages, lay.ends):
        t = stage.timesteps
        assert np.all(np.isfinite(t)) and np.all(np.diff(t) > 0) and 0.0 <= t[0] and t[-1] == end
    assert all(tr.restart < tr.at for tr in s.transitions)
    assert np.isfinite(s.jsd) and 0.0 <= s.jsd <= 1.0
    # never worse than where the solver starts (h = 3, the largest c its box allows)
    assert s.jsd <= paper_metric(lay, [3.0] * lay.num_stages, [0.25] * (lay.num_stages - 1)) + 1e-12
    # the target has no mass before the run (re)starts, and both densities are normalised
    t = np.linspace(0.0, 1.0, 200001)
    target = target_density(t, lay, s.starts)
    assert np.all(target[t < min(s.starts) - 1e-9] == 0.0)
    assert trapezoid(target, t) == pytest.approx(1.0, abs=2e-3)
    assert trapezoid(actual_density(t, lay, s.starts, s.shifts), t) == pytest.approx(1.0, abs=2e-3)
    assert Schedule.from_json(s.to_json()) == s


def _independent_metric(lay, shifts, cs):
    """The paper metric written out from METHOD section 4, generalised to a start ``s_1`` (a distance
    of identical densities is the square root of rounding, up to ~1e-6: compare squares):
    ``[(1 - s_1) f_{h0,s_1,1} + sum (e_k - s_{k+1}) f_{h0,s_{k+1},e_k}] / (1 - s_1 + sum ...)`` against
    ``sum N_k f_{h_k,s_k,e_k} / sum N_k`` (no terminal), with scipy's JS distance."""
    starts = [lay.start]
    for e, c in zip(lay.ends[:-1], cs):
        delta = (1 - e) / np.sqrt(c)
        starts.append(e / (delta + e))
    spans = [(s, e) for s, e in zip([lay.start] + starts[1:], [1.0] + list(lay.ends[:-1]))]
    target = sum((e - s) * ShiftedTime(lay.base_shift, s, e).pdf(GRID) for s, e in spans)
    target /= sum(e - s for s, e in spans)
    actual = sum(n * ShiftedTime(h, s, e).pdf(GRID) for n, h, s, e in zip(lay.steps, shifts, starts, lay.ends))
    with np.errstate(invalid="ignore"):
        d = jensenshannon(np.maximum(target, 1e-10), np.maximum(actual, 1e-10))
    return 0.0 if np.isnan(d) else d            # identical densities: sqrt of a rounding-negative divergence


@settings(max_examples=40)
@given(st.one_of(layouts(max_stages=3, max_steps=4), started_layouts(terminal=False)),
       st.lists(st.floats(0.5, 10.0), min_size=3, max_size=3), st.floats(1e-4, 0.25))
def test_the_metric_is_eq_8_on_the_truncated_range_and_eq_8_itself_at_start_0(lay, h, c):
    shifts, cs = h[:lay.num_stages], [c] * (lay.num_stages - 1)
    # compared as divergences (the distances squared): identical densities give a divergence of
    # rounding size (1e-12 to 1e-11 where the densities are narrow), whose square root (up to ~3e-6) no
    # distance tolerance separates from a real gap (the solved schedules' distances are ~1e-2)
    assert paper_metric(lay, shifts, cs) ** 2 == pytest.approx(_independent_metric(lay, shifts, cs) ** 2, abs=1e-9)


def test_start_zero_is_todays_solve():
    """The authors' 7x layout solved from start 0 is the published solve (the paper metric 0.0266); the
    metric at start 0 is eq. 8 itself for any layout (the property above)."""
    lay = preset("flux-dev-7x").layout
    a, b = solve(lay, method="single-start"), solve(lay.with_start(0.0), method="single-start")
    assert (a.shifts, a.correlations, a.jsd) == (b.shifts, b.correlations, b.jsd)
    assert round(a.jsd, 4) == 0.0266 and "start" not in a.to_dict()


@settings(max_examples=60)
@given(st.integers(1, 50), st.data(), st.floats(0.5, 10.0), st.sampled_from([None, 0.02]))
def test_the_continuous_start_is_the_stock_grids_point_where_steps_x_strength_is_whole(n, data, h0, tau):
    k = data.draw(st.integers(1, n))
    s = k / n
    assume(cut_index(n, s) == n - k)                    # the pipeline's float arithmetic agrees with k
    t0 = start_time(s, h0, tau, k)
    grid = Stage(0.0, 1.0, n, h0, tau).timesteps
    assert t0 == pytest.approx(grid[n - k], abs=1e-12)
    if 0.0 < t0 and (tau is None or t0 < 1 - tau):
        assert base_steps(t0, h0, tau, k) == pytest.approx(n, rel=1e-9)


@settings(max_examples=40)
@given(layouts(max_stages=3, max_steps=5), st.floats(0.01, 1.0), st.sampled_from([None, 0.02]))
def test_for_strength_keeps_each_stages_share_of_the_base_steps(lay, s, tau):
    lay = lay.with_base(lay.base_shift, tau)
    assume(tau is None or lay.ends[-2:-1] == () or lay.ends[-2] < 1 - tau)
    try:
        moved = lay.for_strength(s)
    except ValueError:
        assume(False)                                   # a start inside the stretched last step
    m = lay.total_steps
    assert moved.start == start_time(s, lay.base_shift, tau, m) and moved.ends[-1] == 1.0
    assert (moved.steps, moved.factors, moved.fractions) == (lay.steps, lay.factors, lay.fractions)
    for e, e2 in zip(lay.ends[:-1], moved.ends[:-1]):
        share = 1 - s + s * base_cdf(e, lay.base_shift, tau, m)
        assert base_cdf(e2, lay.base_shift, tau, m / s) == pytest.approx(share, abs=1e-9)
    assert list(map_time(np.array([0.0, 1.0]), s, lay.base_shift, tau, m)) == pytest.approx([moved.start, 1.0])
    assert lay.for_strength(1.0) is lay


def test_a_one_stage_layout_from_a_strength_is_the_truncated_base_sampler():
    lay = Layout(steps=(6,), ends=(1.0,), base_shift=3.0).for_strength(0.5)
    s = solve(lay)
    assert s.shifts == (3.0,) and s.jsd == 0.0
    np.testing.assert_allclose(s.stages[0].timesteps, Stage(0.0, 1.0, 12, 3.0).timesteps[6:], atol=1e-12)
    qwen = solve(Layout(steps=(6,), ends=(1.0,), base_shift=2.0, terminal=0.02).for_strength(0.5))
    assert qwen.jsd < 1e-3                              # the stretched grids differ; solved, not assumed


@pytest.mark.parametrize("tau", [None, 0.02])
def test_a_fixed_schedule_is_cut_where_the_pipeline_cuts(tau):
    sched = solve(Layout(steps=(10,), ends=(1.0,), base_shift=3.0, terminal=tau))
    full = sched.stages[0].timesteps
    for s in (0.1, 0.35, 0.5, 0.56, 0.7, 1.0):
        plan = sched.cut(s)
        cut = cut_index(10, s)
        assert isinstance(plan, Plan) and plan.stages[0].steps == kept_steps(10, s) == 10 - cut
        np.testing.assert_array_equal(plan.stages[0].timesteps, full[cut:])
        assert plan.start == full[cut]
    with pytest.raises(ValueError, match=r"strength 0.01 leaves none of this schedule's steps: the pipeline drops "
                                         r"10 - int\(10 x 0.01\) = 10 of 10"):
        sched.cut(0.01, "video2video")


def test_a_multi_stage_cut_may_take_first_stage_steps_only():
    fixed = preset("flux-dev-7x")
    plan = fixed.cut(0.9)
    assert [st.steps for st in plan.stages] == [1, 3, 5] and plan.stages[1:] == fixed.stages[1:]
    assert plan.transitions == fixed.transitions
    with pytest.raises(ValueError, match=r"cuts into this fixed schedule beyond its first stage \(2\+3\+5 steps"):
        fixed.cut(0.6)
    st0 = fixed.stages[1]
    with pytest.raises(ValueError, match="only the first stage may"):
        Plan(layout=fixed.layout, stages=(fixed.stages[0], Stage(st0.start, st0.end, 2, st0.shift, skip=1),
                                          fixed.stages[2]), transitions=fixed.transitions)


MIXED = dict(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(MIXED, start=0.3), r"start must lie in \[0, 0.3\) \(before the first stage's end\), got 0.3"),
    (dict(MIXED, start=-0.1), r"start must lie in \[0, 0.3\)"),
    (dict(MIXED, start=float("nan")), "start must be finite"),
    (dict(MIXED, start="0.1"), "start must be a real number"),
    (dict(steps=(3,), ends=(1.0,), start=0.99, terminal=0.02), "with terminal 0.02 a layout must start before t = 0.98"),
])
def test_a_start_is_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Layout(**kwargs)
    Layout(**{**kwargs, "start": 0.25})


def test_strength_is_checked_and_a_started_layout_is_not_moved_twice():
    lay = Layout(steps=(2, 3), ends=(0.4, 1.0))
    for bad in (0, -1, 1.5, float("nan"), "0.5", True, None):
        with pytest.raises(ValueError, match=r"strength must (lie in|be a number in) \(0, 1\]"):
            lay.for_strength(bad)
    with pytest.raises(ValueError, match="already starts at"):
        lay.for_strength(0.5).for_strength(0.5)


def test_json_with_a_start_round_trips_and_a_contradicting_start_is_refused():
    s = solve(Layout(steps=(2, 3), ends=(0.4, 1.0)).for_strength(0.6), method="single-start")
    d = s.to_dict()
    assert d["start"] == s.layout.start == d["stages"][0]["start"] > 0
    assert Schedule.from_dict(d) == s
    d["stages"][0]["start"] = 0.0
    with pytest.raises(ValueError, match=r"stages\[0\].start = 0.0 contradicts"):
        Schedule.from_dict(d)


def test_cli_solve_takes_a_strength(capsys):
    assert main(["solve", "--steps", "2", "3", "--ends", "0.4", "1.0", "--strength", "0.5",
                 "--method", "single-start"]) == 0
    out = capsys.readouterr().out
    t0 = start_time(0.5, 3.0, None, 5)
    assert f"2 stages, 5 steps, starting at t = {t0:.4f}, base shift h0 = 3" in out
    assert main(["solve", "--steps", "2", "3", "--ends", "0.4", "1.0", "--strength", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "strength must lie in (0, 1]" in err
