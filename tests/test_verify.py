"""The public verification tools: strategies and checks, on the project's own schedules."""

import dataclasses
import json

import pytest
from hypothesis import given

from profiles import examples
from ralu_schedule import Layout, Plan, Schedule, preset, token_grid
from ralu_schedule.strategies import layouts, resolutions, schedules
from ralu_schedule.verify import (VerificationError, check_density_matching, check_json_round_trip,
                                  check_reinjection, verify)


@examples(40)
@given(schedules(layouts(factors=(2, 3))))
def test_every_drawn_schedule_passes_every_check(s):
    report = verify(s)
    assert report["reinjection"]["transitions"] == s.layout.num_stages - 1
    assert report["density"]["jsd"] == s.jsd


@examples(40)
@given(layouts().flatmap(lambda lay: resolutions(lay).map(lambda r: (lay, r))))
def test_drawn_resolutions_split_by_their_layout(case):
    lay, (height, width) = case
    counts = lay.stage_tokens(*token_grid(height, width, downsampling=lay.downsampling))
    assert counts[-1] == (height // 16) * (width // 16)
    assert all(a <= b for a, b in zip(counts, counts[1:]))


def test_presets_verify_with_their_published_metric():
    assert verify(preset("flux-dev-7x"), max_jsd=0.0267)["density"]["jsd"] == pytest.approx(0.0266, abs=1e-4)
    with pytest.raises(VerificationError, match="exceeds 0.02"):
        check_density_matching(preset("flux-dev-7x"), max_jsd=0.02)


def test_checks_catch_a_wrong_coefficient():
    s = preset("flux-dev-7x")
    tr = s.transitions[0]
    broken = dataclasses.replace(tr, a=tr.a * 1.01)
    fake = Schedule.__new__(Schedule)      # a schedule whose cached transitions were tampered with
    object.__setattr__(fake, "__dict__", {**s.__dict__, "transitions": (broken,) + s.transitions[1:]})
    with pytest.raises(VerificationError, match=r"transition 0 \(e=0.2.*re-injected mean"):
        check_reinjection(fake)
    assert isinstance(VerificationError("x"), AssertionError)   # test runners report it as a failure


def test_round_trip_report_and_type_errors():
    assert check_json_round_trip(preset("flux-dev-4x"))["bytes"] > 100
    with pytest.raises(VerificationError, match="expected a Schedule, got Layout"):
        check_reinjection(preset("flux-dev-4x").layout)


def test_one_stage_schedule_with_a_numeric_c_says_why():
    d = json.loads(Schedule(layout=Layout(steps=(4,), ends=(1.0,)), shifts=(3.0,), correlations=()).to_json())
    assert d["c"] is None
    d["c"] = 0.02
    with pytest.raises(ValueError, match=r"c = 0.02 names a noise correlation, but a one-stage schedule has no "
                                         r"transitions for it to act on; set \"c\" to null or leave it out"):
        Schedule.from_dict(d)


def test_plan_checks_its_shape():
    s = preset("flux-dev-7x")
    assert s.plan.stages == s.stages
    with pytest.raises(ValueError, match=r"one Stage per stage of its layout \(3\), got 2"):
        Plan(layout=s.layout, stages=s.stages[:2], transitions=s.transitions)
    with pytest.raises(ValueError, match="stage 0 runs 2 steps to 0.2, its layout says 4 to 0.2"):
        Plan(layout=dataclasses.replace(s.layout, steps=(4, 3, 5)), stages=s.stages, transitions=s.transitions)
