import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ralu_schedule import SHIFT_RULES, ShiftRule, shift_rule, shift_sigmas, unshift_sigmas

shifts = st.floats(0.05, 50.0)
unit = st.floats(0.0, 1.0)


@given(shifts, unit)
def test_unshift_inverts_shift(h, u):
    assert unshift_sigmas(shift_sigmas(u, h), h) == pytest.approx(u, abs=1e-12)


@given(shifts)
def test_shift_fixes_ends_and_is_monotone(h):
    u = np.linspace(0, 1, 101)
    s = shift_sigmas(u, h)
    assert s[0] == 0.0 and s[-1] == pytest.approx(1.0)
    assert np.all(np.diff(s) > 0)


def test_shift_matches_diffusers_exponential_time_shift():
    # diffusers: exp(mu) / (exp(mu) + (1/sigma - 1)) is shift_{exp(mu)}
    mu, sigma = 1.15, np.linspace(0.01, 1, 50)
    ref = math.exp(mu) / (math.exp(mu) + (1 / sigma - 1))
    np.testing.assert_allclose(shift_sigmas(sigma, math.exp(mu)), ref, rtol=1e-13)


def test_flux_dev_dynamic_rule_anchor_points():
    rule = shift_rule("flux-dev")
    assert rule.mu(256) == pytest.approx(0.5)
    assert rule.mu(4096) == pytest.approx(1.15)
    assert rule(4096) == pytest.approx(math.exp(1.15))  # about 3.16 at 1024x1024
    assert rule(1024) == pytest.approx(math.exp(0.5 + 0.65 / 3840 * 768))


def test_static_rules():
    assert shift_rule("flux-schnell")(4096) == 1.0
    assert shift_rule("sd3-medium")(1) == 3.0


def test_rule_from_scheduler_config_matches_table():
    cfg = {"use_dynamic_shifting": True, "shift": 3.0, "base_shift": 0.5, "max_shift": 1.15,
           "base_image_seq_len": 256, "max_image_seq_len": 4096, "time_shift_type": "exponential"}
    assert ShiftRule.from_scheduler_config(cfg) == SHIFT_RULES["flux-dev"]
    lin = ShiftRule.from_scheduler_config({**cfg, "time_shift_type": "linear"})
    assert lin(4096) == pytest.approx(1.15)


@pytest.mark.parametrize("bad, msg", [(0.0, r"shift must lie in \[0.001, 1e\+06\], got 0"), (-1.0, "got -1"), (1e-300, "got 1e-300"), (1e20, r"got 1e\+20"),
                                      (float("nan"), "must be finite")])
def test_bad_shift(bad, msg):
    with pytest.raises(ValueError, match=msg):
        shift_sigmas(0.5, bad)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'flux-pro'; known: flux-dev"):
        shift_rule("flux-pro")
