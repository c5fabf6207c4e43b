import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles import examples
from ralu_schedule import FORMAT, Layout, Schedule, preset, solve, upsample_count
from ralu_schedule.strategies import schedules


@examples(60)
@given(schedules())
def test_json_round_trip(s):
    back = Schedule.from_json(s.to_json())
    assert back == s
    assert back.jsd == s.jsd
    for a, b in zip(back.stages, s.stages):
        np.testing.assert_array_equal(a.timesteps, b.timesteps)


def test_json_contract_keys_and_values():
    d = json.loads(preset("flux-dev-7x").to_json())
    assert d["format"] == FORMAT
    assert set(d) >= {"format", "base_shift", "c", "jsd", "stages", "transitions"}
    assert round(d["jsd"], 4) == 0.0266 and round(d["c"], 4) == 0.0255
    st0, st1 = d["stages"][:2]
    assert set(st0) >= {"start", "end", "steps", "shift", "timesteps", "sigmas"}
    assert st0["start"] == 0.0 and len(st0["timesteps"]) == st0["steps"] + 1
    assert st0["timesteps"][0] == 0.0 and st0["timesteps"][-1] == 0.2
    np.testing.assert_allclose(st0["sigmas"], 1 - np.array(st0["timesteps"]))
    tr = d["transitions"][0]
    assert set(tr) >= {"at", "restart", "a", "b", "c", "factor", "fraction"}
    assert st1["start"] == tr["restart"]
    assert (round(tr["restart"], 4), round(tr["a"], 3), round(tr["b"], 4)) == (0.0384, 0.192, 0.9616)
    assert (tr["factor"], tr["fraction"]) == (2, 0.1)


def test_diffusers_scheduler_accepts_stage_sigmas():
    torch = pytest.importorskip("torch")
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = preset("flux-dev-7x")
    for stage in sched.stages:
        sch = FlowMatchEulerDiscreteScheduler(shift=1.0)  # sigmas are already shifted
        sch.set_timesteps(sigmas=stage.sigmas[:-1].tolist())
        sch.sigmas[-1] = float(stage.sigmas[-1])  # the stage ends at 1 - e, not at 0
        np.testing.assert_allclose(sch.sigmas.numpy(), stage.sigmas, atol=1e-7)
        x = torch.zeros(1, 4)
        for t in sch.timesteps:
            x = sch.step(torch.ones(1, 4), t, x).prev_sample
        # Euler with v = 1 moves x by the sigma travelled
        np.testing.assert_allclose(x.numpy(), stage.sigmas[-1] - stage.sigmas[0], atol=1e-6)


def test_stage_tokens_of_the_presets_at_1024():
    lay = preset("flux-dev-7x").layout
    assert lay.stage_tokens(64, 64) == (1024, 1024 - 102 + 4 * 102, 4096)
    assert upsample_count(1024, 0.3) == 307


def test_multi_level_layout_tokens():
    lay = Layout(steps=(1, 1, 1), ends=(0.2, 0.5, 1.0), factors=(2, 2), fractions=(1.0, 1.0))
    assert lay.downsampling == 4
    assert lay.stage_tokens(64, 64) == (256, 1024, 4096)
    with pytest.raises(ValueError, match="multiples of 4"):
        lay.stage_tokens(62, 64)


def test_json_schedule_with_per_transition_c_has_null_top_level_c():
    s = solve(Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0)), per_transition=True)
    d = s.to_dict()
    assert d["c"] is None
    assert Schedule.from_dict(d) == s


BAD_LAYOUTS = [
    (dict(steps=(2, 3), ends=(0.2, 0.3, 1.0)), "steps and ends must have the same length"),
    (dict(steps=(2, 0, 5), ends=(0.2, 0.3, 1.0)), "each step count must be an integer >= 1, got 0"),
    (dict(steps=(2, 3, 5), ends=(0.3, 0.2, 1.0)), r"ends must increase strictly .* got \[0.3, 0.2, 1\]"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 0.9)), "finish at 1.0"),
    (dict(steps=(2, 3, 5), ends=(0.0, 0.3, 1.0)), r"within \(0, 1\]"),
    (dict(steps=(2, 3, 5), ends=(0.2, 1.3, 1.0)), "ends must increase strictly"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.0, 1.0)), r"fractions must lie in \(0, 1\]"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(1.2, 1.0)), r"fractions must lie in \(0, 1\]"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1,)), "one entry per transition"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1, 0.5)), "last transition must upsample"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), factors=(1, 2)), "each factor must be an integer >= 2"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), factors=(2, 3), fractions=(0.5, 1.0)), "share its factor"),
    (dict(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), base_shift=0.0), r"base shift must lie in \[0.001, 1e\+06\], got 0"),
    (dict(steps=(), ends=()), "at least one stage"),
]


@pytest.mark.parametrize("kwargs, msg", BAD_LAYOUTS)
def test_bad_layouts(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Layout(**kwargs)


def _good():
    return json.loads(preset("flux-dev-7x").to_json())


def _mutate(path, value):
    d = _good()
    obj = d
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return d


@pytest.mark.parametrize("d, msg", [
    (_mutate(("format",), "ralu-schedule/0"), "format must be 'ralu-schedule/1', got 'ralu-schedule/0'"),
    (_mutate(("stages",), KeyError), "missing keys: stages"),
    (_mutate(("stages", 1, "shift"), KeyError), r"stages\[1\] is missing keys: shift"),
    (_mutate(("transitions", 0, "restart"), 0.05), r"transitions\[0\].restart = 0.05 contradicts"),
    (_mutate(("stages", 1, "start"), 0.0), r"stages\[1\].start = 0.0 contradicts"),
    (_mutate(("stages", 0, "timesteps"), [0.0, 0.1, 0.2]), r"stages\[0\].timesteps .* contradicts"),
    (_mutate(("jsd",), 0.01), "jsd = 0.01 contradicts"),
    (_mutate(("c",), 0.03), "c = 0.03 contradicts"),
    (_mutate(("transitions", 0, "c"), 0.3), r"c must lie in \(0, 1/n\]"),
    (_mutate(("transitions",), []), "needs 2 transitions, got 0"),
])
def test_bad_json_schedules(d, msg):
    with pytest.raises(ValueError, match=msg):
        Schedule.from_dict(d)


def test_bad_json_text():
    with pytest.raises(ValueError, match="not valid JSON"):
        Schedule.from_json("{")


@pytest.mark.parametrize("rows, cols", [(-2, -2), (0, 0), (0, 8), (8, -8)])
def test_stage_tokens_refuses_non_positive_grids(rows, cols):
    with pytest.raises(ValueError, match="grid (height|width) must be an integer >= 1"):
        Layout(steps=(2, 3), ends=(0.3, 1.0)).stage_tokens(rows, cols)


@examples(200)
@given(st.integers(-64, 64), st.integers(-64, 64))
def test_stage_tokens_is_positive_and_increasing_or_refused(rows, cols):
    lay = Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1, 1.0))
    try:
        counts = lay.stage_tokens(rows, cols)
    except ValueError:
        assert rows <= 0 or cols <= 0 or rows % 2 or cols % 2
        return
    assert counts[0] > 0 and all(b >= a for a, b in zip(counts, counts[1:])) and counts[-1] == rows * cols
