"""Schedule export for other samplers (torch-free): diffusers settings, sigma lists, k-diffusion."""

import json

import numpy as np
import pytest
from hypothesis import given, settings

from profiles import examples
from ralu_schedule import preset, solve
from ralu_schedule.cli import main
from ralu_schedule.cost import layout_cost
from ralu_schedule.export import (EXACT_SIGMA_CONFIG, FORMATS, diffusers_stages, export, kdiffusion_schedule,
                                  sigma_lists)
from ralu_schedule.strategies import schedules


@examples(25)
@given(schedules())
def test_every_route_carries_the_same_sigmas_and_transitions(sched):
    lists = sigma_lists(sched)
    stages = diffusers_stages(sched)
    flat = kdiffusion_schedule(sched)
    for k, st in enumerate(sched.stages):
        np.testing.assert_array_equal(lists[k], st.sigmas)
        assert stages[k]["sigmas"] + [stages[k]["terminal_sigma"]] == lists[k]
        assert stages[k]["num_inference_steps"] == st.steps == len(lists[k]) - 1
        assert stages[k]["scheduler_config"] == EXACT_SIGMA_CONFIG
    assert flat["stages"] == lists
    assert [(t["a"], t["b"], t["c"]) for t in flat["transitions"]] == [(t.a, t.b, t.c) for t in sched.transitions]
    assert lists[-1][-1] == 0.0 and all(sig[-1] > 0 for sig in lists[:-1])   # only the last stage ends at 0


def test_downsampling_per_stage_marks_the_stages_a_stock_pipeline_can_run():
    assert [s["downsampling"] for s in diffusers_stages(preset("flux-dev-7x"))] == [2, None, 1]
    pyramid = solve(__import__("ralu_schedule").Layout(steps=(2, 2, 3), ends=(0.3, 0.6, 1.0)))
    assert [s["downsampling"] for s in diffusers_stages(pyramid)] == [4, 2, 1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_formats(capsys, fmt):
    assert main(["preset", "flux-dev-7x", "--format", fmt]) == 0
    out = capsys.readouterr().out
    sched = preset("flux-dev-7x")
    if fmt == "sigmas":
        rows = [[float(v) for v in line.split(",")] for line in out.strip().splitlines()]
        assert rows == sigma_lists(sched)
    else:
        assert json.loads(out) == json.loads(export(sched, fmt))
    if fmt == "json":
        assert json.loads(out)["format"] == "ralu-schedule/1"


def test_cli_format_errors(capsys):
    assert main(["preset", "flux-dev-7x", "--format", "csv"]) == 2
    assert "invalid choice: 'csv'" in capsys.readouterr().err
    assert main(["preset", "flux-dev-7x", "--json", "--format", "sigmas"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be combined" in err
    with pytest.raises(ValueError, match="format must be one of"):
        export(preset("flux-dev-7x"), "yaml")


def test_cost_counts_model_evaluations_per_solver(capsys):
    lay = preset("flux-dev-7x").layout
    euler, heun = layout_cost(lay), layout_cost(lay, solver="heun")
    assert [s.evaluations for s in heun.stages] == [3, 5, 9]
    for e, h in zip(euler.stages, heun.stages):
        assert h.tflops == pytest.approx(e.tflops / e.steps * (2 * e.steps - 1))
    assert heun.baseline_tflops == euler.baseline_tflops
    assert main(["cost", "flux-dev-7x", "--solver", "heun", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tflops"] == pytest.approx(heun.tflops)
