"""Bad input is refused with one clear line, never a silently wrong result (issue 14's cases)."""

import json
import re
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from profiles import examples
from ralu_schedule import Bounds, Layout, Schedule, ShiftedTime, preset, solve
from ralu_schedule.cli import main as schedule_main
from ralu_schedule.layout import MAX_STAGES, MAX_STEPS
from ralu_torch import RALU
from tiny import embeds, tiny_flux

LAYOUT = ["--steps", "2", "3", "5", "--ends", "0.2", "0.3", "1.0"]


def one_line_error(capsys, main, argv, code=2):
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    return err


# -- the schedule core ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, msg", [
    ([*LAYOUT, "--shift-bounds", "1", "1e20"], "shift bounds must lie in [0.001, 1e+06]"),
    ([*LAYOUT, "--base-shift", "1e20"], "base shift must lie in [0.001, 1e+06], got 1e+20"),
    ([*LAYOUT, "--base-shift", "1e-300"], "base shift must lie in [0.001, 1e+06], got 1e-300"),
    (["--steps", *["2"] * (MAX_STAGES + 1), "--ends", *[str(round((i + 1) / (MAX_STAGES + 1), 4))
                                                       for i in range(MAX_STAGES)], "1.0"],
     f"a layout may have at most {MAX_STAGES} stages, got {MAX_STAGES + 1}"),
    (["--steps", "2000", "--ends", "1.0"], f"a layout may have at most {MAX_STEPS} steps in all, got 2000"),
])
def test_solve_refuses_bounds_and_sizes_that_cannot_give_a_valid_schedule(capsys, argv, msg):
    t0 = time.process_time()
    assert msg in one_line_error(capsys, schedule_main, ["solve", *argv, "--json"])
    assert time.process_time() - t0 < 5                                # refused before any work


def test_extreme_but_allowed_shifts_give_finite_valid_json():
    s = solve(Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), base_shift=1e5), bounds=Bounds(shift=(1e-3, 1e6)))
    assert Schedule.from_json(s.to_json()) == s and 0 < s.jsd < 1


@pytest.mark.parametrize("edit, msg", [
    (lambda d: d["transitions"][0].update(at=float("nan")), r"transitions\[0\].at = nan contradicts"),
    (lambda d: d["transitions"][0].update(at="x"), r"transitions\[0\].at = 'x' contradicts"),
    (lambda d: d["transitions"][0].update(at=0.25), r"transitions\[0\].at = 0.25 contradicts"),
    (lambda d: d.update(info=[1, 2]), "'info' must be an object"),
    (lambda d: d.update(info="x"), "'info' must be an object"),
    (lambda d: d.update(stages=[], transitions=[]), "must name at least one stage"),
    (lambda d: d["stages"][0].update(steps=1e10), "each step count must be an integer >= 1, got 10000000000.0"),
    (lambda d: d["stages"][0].update(steps=10**8), "at most 1000 steps in all"),
    (lambda d: d["stages"][0].update(timesteps=[0.5] * 10**6), "timesteps = \\[0.5, 0.5, .*\\.\\.\\. contradicts"),
])
def test_loader_checks_every_field_with_short_messages(edit, msg):
    d = preset("flux-dev-7x").to_dict()
    edit(d)
    t0 = time.process_time()
    with pytest.raises(ValueError, match=msg) as err:
        Schedule.from_json(json.dumps(d))
    assert len(str(err.value)) < 400 and time.process_time() - t0 < 5


def test_deeply_nested_json_is_one_line(capsys, tmp_path):
    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in one_line_error(capsys, schedule_main, ["check", str(f)])


def test_python_api_raises_value_errors_with_messages():
    with pytest.raises(ValueError, match="solve takes a ralu_schedule.Layout, got str; for a preset use"):
        solve("flux-dev-7x")
    with pytest.raises(ValueError, match="bounds must be a ralu_schedule.Bounds"):
        solve(Layout(steps=(2, 3), ends=(0.3, 1.0)), bounds=(0.5, 10))
    for h in (1e-300, 5e-324, 1e300):
        with pytest.raises(ValueError, match="shift must lie in"):
            ShiftedTime(h).grid(3)


def test_plot_output_is_checked_before_work_and_never_overwritten(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    err = one_line_error(capsys, schedule_main, ["plot", "--preset", "flux-dev-7x", "--out", "/nonexistent/dir/x.png"])
    assert "directory '/nonexistent/dir' does not exist" in err
    assert schedule_main(["plot", "--preset", "flux-dev-7x", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'density.png'}"
    err = one_line_error(capsys, schedule_main, ["plot", "--preset", "flux-dev-7x", "--out", str(tmp_path)])
    assert "exists; pass --overwrite" in err
    assert schedule_main(["plot", "--preset", "flux-dev-7x", "--out", str(tmp_path), "--overwrite"]) == 0


def test_ctrl_c_during_solve_is_one_line_exit_130(capsys, monkeypatch):
    import ralu_schedule.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "solve", interrupted)
    assert cli.main(["solve", *LAYOUT]) == 130
    assert capsys.readouterr().err == "ralu-schedule: interrupted\n"


# -- the sampler ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev():
    return tiny_flux()


def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(guidance_scale=float("nan")), "guidance_scale must be finite"),
    (dict(guidance_scale=float("inf")), "guidance_scale must be finite"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt must be an integer >= 1, got 0"),
    (dict(num_images_per_prompt=-1), "num_images_per_prompt must be an integer >= 1, got -1"),
    (dict(generator=0), "generator must be a torch.Generator"),
    (dict(height=2**20, width=2**20), "need about .* GiB for the sampler's latents alone"),
])
def test_call_arguments_are_checked(dev, kwargs, msg):
    kw = dict(height=128, width=128, generator=gen(), output_type="latent")
    kw.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        RALU(dev, "flux-dev-7x")(**embeds(), **kw)


def test_prompt_embeddings_without_pooled_or_with_mismatched_batch_are_refused(dev):
    e = embeds(2)
    with pytest.raises(ValueError, match="prompt_embeds need pooled_prompt_embeds"):
        RALU(dev, "flux-dev-7x")(prompt_embeds=e["prompt_embeds"], height=128, width=128)
    with pytest.raises(ValueError, match="must share one batch size, got prompt_embeds 2, pooled_prompt_embeds 1"):
        RALU(dev, "flux-dev-7x")(prompt_embeds=e["prompt_embeds"], pooled_prompt_embeds=e["pooled_prompt_embeds"][:1],
                                 height=128, width=128)


@pytest.mark.parametrize("n", [2, 3])
def test_num_images_per_prompt_repeats_given_embeddings(dev, n):
    out = RALU(dev, "flux-dev-7x")(**embeds(1), num_images_per_prompt=n, height=128, width=128,
                                   generator=[torch.Generator().manual_seed(i) for i in range(n)], output_type="latent")
    assert out.images.shape[0] == n
    single = RALU(dev, "flux-dev-7x")(**embeds(1), height=128, width=128, generator=torch.Generator().manual_seed(1),
                                      output_type="latent").images
    assert (out.images[1:2] - single).abs().max() < 1e-5             # image 1 = a single run with generator 1


def test_a_preset_for_another_model_family_is_refused_unless_asked(dev):
    with pytest.raises(ValueError, match="preset 'sd3-medium-7x' was made for sd3-medium, but this is a FLUX.1 pipeline; "
                                         "use one of flux-dev-10x, flux-dev-4x, flux-dev-7x, flux-kontext-dev-4x, "
                                         "flux-kontext-dev-7x, flux-schnell-16x"):
        RALU(dev, "sd3-medium-7x")
    out = RALU(dev, "sd3-medium-7x", allow_other_model=True)(**embeds(), height=128, width=128, generator=gen(),
                                                             output_type="latent")
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize("thresholds, msg", [((0.5,), "edge_thresholds"), ((0.3, 0.1), "edge_thresholds")])
def test_edge_thresholds_are_checked_at_construction(dev, thresholds, msg):
    with pytest.raises(ValueError, match=msg):
        RALU(dev, "flux-dev-7x", edge_thresholds=thresholds)


def test_schedule_path_messages(dev, tmp_path):
    with pytest.raises(ValueError, match="schedule file '/x/nope.json' does not exist"):
        RALU(dev, "/x/nope.json")
    with pytest.raises(ValueError, match="is a directory, not a JSON schedule file"):
        RALU(dev, str(tmp_path))


def test_ralu_cli_without_traceback_or_warnings(tmp_path, model_dir):
    bad = [["demo", "--seeds", "2", "--size", "8", "--out", str(tmp_path / "d.png")]]
    r = subprocess.run([sys.executable, "-m", "ralu_torch", *bad[0]], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (tmp_path / "d.png").exists()
    for argv, msg in [(bad[0], "exists; pass --overwrite"),
                      (["generate", "--model", str(model_dir), "--prompt", "p", "--device", "bogus", "--out",
                        str(tmp_path / "a.png")], "--device 'bogus' is not a torch device"),
                      (["generate", "--model", str(model_dir), "--prompt", "p", "--device", "cuda", "--out",
                        str(tmp_path / "a.png")],
                       "this machine has no cuda device"),
                      (["generate", "--model", "x", "--prompt", "p", "--seed", str(2**70), "--out", str(tmp_path / "a.png")],
                       "--seed must lie in [0, 2**63)"),
                      (["generate", "--model", "x", "--prompt", "p", "--out", "/nonexistent/dir/x.png"],
                       "directory '/nonexistent/dir' does not exist"),
                      (["generate", "--model", "x", "--prompt", "p", "--out", str(tmp_path / "noext")],
                       "needs one of the extensions ralu generate writes"),
                      (["generate", "--model", "x", "--prompt", "p", "--schedule", "nope.json"],
                       "schedule file 'nope.json' does not exist")]:
        if "cuda" in argv and torch.cuda.is_available():
            continue
        r = subprocess.run([sys.executable, "-m", "ralu_torch", *argv], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr


# -- fuzz: only ValueError, with a message, quickly ----------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20)
KEYS = ["format", "base_shift", "c", "jsd", "stages", "transitions", "info", "steps", "end", "shift", "start",
        "timesteps", "sigmas", "at", "restart", "a", "b", "factor", "fraction"]
NUMBERS = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True), st.none(),
                    st.text(max_size=3), st.lists(st.floats(), max_size=3))


def _refused_cleanly(fn, hang_limit: float | None = 10):
    """``fn`` runs or raises one short ValueError; ``hang_limit`` seconds of this process's CPU
    time catch a parser that hangs on hostile input (CPU, not wall time: other load on the machine
    does not count; none for model runs)."""
    t0 = time.process_time()
    try:
        fn()
    except ValueError as err:
        assert str(err) and len(str(err)) < 1000
    if hang_limit is not None:
        assert time.process_time() - t0 < hang_limit


@examples(150, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_fuzz_random_json(value):
    _refused_cleanly(lambda: Schedule.from_json(json.dumps(value)))


@examples(150, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["flux-dev-7x", "flux-dev-4x", "flux-dev-10x"]), st.data())
def test_fuzz_mutated_schedules(name, data):
    d = preset(name).to_dict()
    target = data.draw(st.sampled_from(["top", "stage", "transition"]))
    obj = d if target == "top" else data.draw(st.sampled_from(d["stages"] if target == "stage" else d["transitions"]))
    key = data.draw(st.sampled_from(KEYS))
    if data.draw(st.booleans()):
        obj[key] = data.draw(NUMBERS)
    else:
        obj.pop(key, None)
    _refused_cleanly(lambda: Schedule.from_dict(d))


@examples(200)
@given(st.lists(NUMBERS, max_size=10), st.lists(NUMBERS, max_size=10), NUMBERS, st.one_of(NUMBERS, st.lists(NUMBERS)))
def test_fuzz_layouts(steps, ends, base_shift, fractions):
    _refused_cleanly(lambda: Layout(steps=steps, ends=ends, base_shift=base_shift, fractions=fractions))


@examples(25)
@given(st.integers(1, 3), st.floats(1e-3, 1e6), st.floats(1e-3, 1e6))
def test_fuzz_solve_is_bounded_and_finite(k, base_shift, hi):
    ends = tuple(round((i + 1) / k, 3) for i in range(k - 1)) + (1.0,)
    def go():
        s = solve(Layout(steps=(2,) * k, ends=ends, base_shift=base_shift), method="single-start",
                  bounds=Bounds(shift=(1e-3, max(hi, 2e-3))))
        json.loads(s.to_json())                                      # finite: valid JSON
    _refused_cleanly(go)


@examples(20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.none(), st.integers(-64, 256)), st.one_of(st.none(), st.integers(-64, 256)),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), st.integers(-2, 2),
       st.sampled_from(["flux-dev-7x", "flux-dev-10x", "sd3-medium-4x"]))
def test_fuzz_sampler_arguments(dev, height, width, guidance, n, name):
    def go():
        out = RALU(dev, name)(**embeds(), height=height, width=width, guidance_scale=guidance,
                              num_images_per_prompt=n, generator=gen(), output_type="latent")
        assert out.images.shape[0] == n and torch.isfinite(out.images).all()
    _refused_cleanly(go, hang_limit=None)


# -- the diffusers call (issue 13's API part) ----------------------------------------------------
@pytest.mark.parametrize("cls", ["FluxInpaintPipeline", "FluxKontextInpaintPipeline"])
def test_pipelines_ralu_cannot_run_are_refused_at_construction(dev, cls):
    import diffusers

    other = getattr(diffusers, cls).from_pipe(dev)
    from ralu_torch.backends.families import SUPPORTED

    with pytest.raises(ValueError, match=re.escape(f"RALU cannot run {cls}: it runs the text-to-image and text-to-video pipelines "
                                                   f"{', '.join(SUPPORTED)}; load the text-to-image FluxPipeline "
                                                   "instead")):
        RALU(other, "flux-dev-7x")


def test_steps_arguments_get_a_message_that_says_how_to_change_steps(dev):
    with pytest.raises(ValueError, match=r"RALU takes its steps from the schedule, not num_inference_steps "
                                         r"\(2\+3\+5 = 10 steps here\); for other steps pass another preset or a "
                                         r"ralu_schedule.Layout"):
        RALU(dev, "flux-dev-7x")(**embeds(), num_inference_steps=28, height=128, width=128)


def test_latents_replace_the_first_noise_in_either_form(dev):
    from diffusers.utils.torch_utils import randn_tensor

    from ralu_torch.tokens import pack

    r = RALU(dev, "flux-dev-7x")
    ref = r(**embeds(), height=128, width=128, generator=gen(), output_type="latent").images
    for form in (lambda n: n, pack):
        g = gen()
        noise = randn_tensor((1, 16, 8, 8), generator=g)              # what RALU draws first, at the first stage's size
        out = r(**embeds(), height=128, width=128, latents=form(noise), generator=g, output_type="latent").images
        assert torch.equal(out, ref)                                  # g then draws the re-injection noise, as before
    with pytest.raises(ValueError, match=r"latents must be the first stage's noise, a tensor of shape \(1, 16, 8, 8\) "
                                         r"\(or \(1, 16, 64\) packed\), got Tensor \(1, 16, 16, 16\)"):
        r(**embeds(), height=128, width=128, latents=torch.zeros(1, 16, 16, 16))


def test_flux_true_cfg_matches_flux_pipeline(dev):
    e, n = embeds(1, seed=1), embeds(1, seed=7)
    neg = dict(negative_prompt_embeds=n["prompt_embeds"], negative_pooled_prompt_embeds=n["pooled_prompt_embeds"],
               true_cfg_scale=4.0)
    kw = dict(height=128, width=96, output_type="latent", guidance_scale=3.5)
    ref = dev(**e, **neg, num_inference_steps=6, generator=gen(), **kw).images
    ours = RALU(dev, Layout(steps=(6,), ends=(1.0,)))(**e, **neg, generator=gen(), **kw).images
    assert (ours - ref).abs().max() < 1e-5
    plain = RALU(dev, "flux-dev-7x")(**e, generator=gen(), **kw)
    cfg = RALU(dev, "flux-dev-7x")(**e, **neg, generator=gen(), **kw)
    assert torch.isfinite(cfg.images).all() and (cfg.images - plain.images).abs().max() > 1e-3
    assert all(c.tflops == pytest.approx(2 * p.tflops) for c, p in zip(cfg.stage_calls, plain.stage_calls))


