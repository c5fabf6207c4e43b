"""Schedulers whose grid ends at a fixed sigma (diffusers' ``shift_terminal``, Qwen-Image's
0.02) and FLUX.2's step-dependent shift: the core's rules against the pipelines' own."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ralu_schedule import Layout, Schedule, ShiftRule, solve
from ralu_schedule.distributions import StretchedTime
from ralu_schedule.shift import SHIFT_RULES

stretched = st.tuples(st.floats(0.3, 12.0), st.floats(0.0, 0.9), st.integers(2, 60), st.floats(0.005, 0.09))


@given(stretched)
def test_stretched_grid_gives_each_step_equal_mass(params):
    h, start, steps, tau = params
    d = StretchedTime(h, start, steps, tau)
    g = d.grid()
    assert g[0] == pytest.approx(start) and g[-1] == 1.0
    assert g[-2] == pytest.approx(1.0 - tau, abs=1e-12)          # the last step starts at sigma = tau
    assert np.all(np.diff(g) > 0)
    np.testing.assert_allclose(np.diff(d.cdf(g)), 1.0 / steps, atol=1e-10)


@given(stretched)
def test_stretched_pdf_is_the_derivative_of_the_cdf(params):
    h, start, steps, tau = params
    d = StretchedTime(h, start, steps, tau)
    knots = d.grid()[[0, -2, -1]]
    t = np.linspace(start, 1.0, 41)[1:-1]
    t = t[np.min(np.abs(t[:, None] - knots[None]), axis=1) > 1e-4]  # away from the kinks
    eps = 1e-7
    numeric = (d.cdf(t + eps) - d.cdf(t - eps)) / (2 * eps)
    np.testing.assert_allclose(numeric, d.pdf(t), rtol=1e-4, atol=1e-6)
    assert d.cdf(start) == pytest.approx(0.0, abs=1e-12) and d.cdf(1.0) == pytest.approx(1.0)


def test_stretched_grid_is_diffusers_shift_terminal():
    pytest.importorskip("torch")
    from diffusers import FlowMatchEulerDiscreteScheduler

    rule = SHIFT_RULES["qwen-image"]
    for tokens, steps in [(1024, 8), (4096, 50), (6400, 23)]:
        sched = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02)
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=rule.mu(tokens))
        lay = Layout(steps=(steps,), ends=(1.0,), base_shift=rule(tokens), terminal=rule.terminal)
        ours = solve(lay).stages[0].sigmas
        np.testing.assert_allclose(ours, sched.sigmas.numpy(), atol=2e-7)   # float32 in diffusers


def test_one_stage_terminal_layout_is_the_base_sampler():
    s = solve(Layout(steps=(30,), ends=(1.0,), base_shift=2.0, terminal=0.02))
    assert s.shifts == (2.0,) and s.jsd == 0.0


def test_terminal_changes_the_matching_and_survives_json():
    lay = Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1, 1.0), base_shift=2.0, terminal=0.02)
    s = solve(lay)
    plain = solve(lay.with_base(2.0, None))
    assert s.shifts != plain.shifts
    assert s.stages[-1].sigmas[-2] == pytest.approx(0.02) and plain.stages[-1].sigmas[-2] > 0.05
    back = Schedule.from_json(s.to_json())
    assert back == s and back.layout.terminal == 0.02
    np.testing.assert_allclose(back.stages[-1].sigmas, s.stages[-1].sigmas)
    assert "terminal" not in plain.to_dict()                  # schedules without one are written as before


def test_a_one_step_last_stage_is_not_stretched():
    s = solve(Layout(steps=(3, 1), ends=(0.5, 1.0), base_shift=2.0, terminal=0.02))
    assert list(s.stages[-1].sigmas[-1:]) == [0.0] and len(s.stages[-1].sigmas) == 2


@pytest.mark.parametrize("kw, msg", [
    (dict(terminal=0.0), r"terminal .* must lie in \(0, 1\), got 0"),
    (dict(terminal=1.5), r"must lie in \(0, 1\), got 1.5"),
    (dict(terminal=float("nan")), "terminal must be finite"),
    (dict(steps=(2, 3), ends=(0.99, 1.0), terminal=0.02), r"must end before t = 0.98"),
])
def test_bad_terminal(kw, msg):
    args = {"steps": (4,), "ends": (1.0,), **kw}
    with pytest.raises(ValueError, match=msg):
        Layout(**args)


def test_rule_reads_shift_terminal():
    cfg = {"use_dynamic_shifting": True, "shift": 1.0, "base_shift": 0.5, "max_shift": 0.9,
           "base_image_seq_len": 256, "max_image_seq_len": 8192, "shift_terminal": 0.02}
    assert ShiftRule.from_scheduler_config(cfg) == SHIFT_RULES["qwen-image"]
    for none in (None, 0, False):
        assert ShiftRule.from_scheduler_config({**cfg, "shift_terminal": none}).terminal is None
    assert SHIFT_RULES["qwen-image"](4096) == pytest.approx(math.exp(0.5 + 0.4 / 7936 * 3840))


def test_flux2_rule_is_the_pipelines_empirical_mu():
    pytest.importorskip("torch")
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu as klein_mu

    rule = SHIFT_RULES["flux2-dev"]
    for tokens in (64, 256, 1000, 4096, 4300, 4301, 16384):
        for steps in (1, 4, 10, 28, 50, 200):
            assert rule.mu(tokens, steps) == pytest.approx(compute_empirical_mu(tokens, steps), rel=1e-12, abs=1e-12)
            assert rule.mu(tokens, steps) == pytest.approx(klein_mu(tokens, steps), rel=1e-12, abs=1e-12)
            assert rule(tokens, steps) == pytest.approx(math.exp(compute_empirical_mu(tokens, steps)))
    assert rule.needs_steps and not SHIFT_RULES["flux-dev"].needs_steps
    with pytest.raises(ValueError, match="depends on the step count"):
        rule(4096)
