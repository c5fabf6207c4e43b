"""Any diffusers flow-matching scheduler per stage, and the export to stock samplers."""

import numpy as np
import pytest
import torch
from diffusers import (DEISMultistepScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, FluxPipeline,
                       FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler)

from ralu_schedule import Layout, preset, solve
from ralu_schedule.cost import layout_cost
from ralu_schedule.export import diffusers_stages, kdiffusion_schedule, model_evaluations, solver_name
from ralu_torch import RALU, flow_denoiser, stage_scheduler, upsample_latents
from ralu_torch.backends.gaussian import GaussianBackend, GaussianField
from ralu_torch.noise import draw
from ralu_torch.sampler import sample
from ralu_torch.tokens import pack, unpack
from tiny import embeds, tiny_flux

SOLVERS = [FlowMatchHeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler]
PYRAMID = Layout(steps=(2, 3), ends=(0.4, 1.0))


@pytest.fixture(scope="module")
def dev():
    return tiny_flux(guidance_embeds=True)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def run(pipe, schedule, solver="scheduler", size=(128, 128), batch=1, **kw):
    return RALU(pipe, schedule, solver=solver)(**embeds(batch), height=size[0], width=size[1],
                                               generator=[gen(i) for i in range(batch)], output_type="latent",
                                               **kw).images


class CountCalls:
    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append(kwargs["hidden_states"].shape[1])

    def per_stage(self):
        counts, last = [], None
        for n in self.calls:
            if n != last:
                counts.append(0)
            counts[-1] += 1
            last = n
        return counts


# -- the solver option --------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["euler", FlowMatchEulerDiscreteScheduler,
                                    FlowMatchEulerDiscreteScheduler(shift=7.0, use_dynamic_shifting=False)])
def test_euler_in_any_form_is_bit_identical_to_the_default(dev, solver):
    ref = run(dev, "flux-dev-7x", batch=2)
    assert torch.equal(run(dev, "flux-dev-7x", solver=solver, batch=2), ref)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", ["flux-dev-7x", "flux-dev-4x"])
def test_each_solver_runs_presets_with_the_calls_the_cost_model_counts(dev, solver, name):
    counter = CountCalls(dev.transformer)
    try:
        out = run(dev, name, solver=solver)
    finally:
        counter.handle.remove()
    assert torch.isfinite(out).all()
    ref = run(dev, name)
    assert (out - ref).abs().max() > 1e-4                            # really another solver
    cost = layout_cost(preset(name).layout, "flux-dev", (128, 128), solver=solver_name(solver.__name__))
    assert counter.per_stage() == [s.evaluations for s in cost.stages]


def test_pipe_scheduler_class_decides_the_solver(dev):
    heun = run(dev, "flux-dev-7x", solver=FlowMatchHeunDiscreteScheduler)
    original = dev.scheduler
    dev.scheduler = FlowMatchHeunDiscreteScheduler.from_config(original.config)
    try:
        assert torch.equal(run(dev, "flux-dev-7x"), heun)
    finally:
        dev.scheduler = original


@pytest.mark.parametrize("solver", [DPMSolverMultistepScheduler, UniPCMultistepScheduler])
def test_multistep_history_is_reset_at_each_transition(dev, solver):
    # one step per stage: with fresh history every step is the solver's first-order step, which
    # for flow matching is exactly Euler; carried-over history would make later steps higher order
    layout = Layout(steps=(1, 1, 1), ends=(0.3, 0.6, 1.0))
    sched = solve(layout)
    diff = (run(dev, sched, solver=solver) - run(dev, sched)).abs().max()
    assert diff < 1e-5


def test_one_stage_dpm_equals_the_stock_pipeline_with_that_scheduler(dev):
    steps, (h, w) = 5, (128, 96)
    dpm = DPMSolverMultistepScheduler.from_config(dev.scheduler.config, use_flow_sigmas=True,
                                                  prediction_type="flow_prediction")
    ours = RALU(dev, Layout(steps=(steps,), ends=(1.0,)), solver=dpm)
    sched = ours.schedule_for(h, w)
    stock = FluxPipeline(**{**dev.components, "scheduler": stage_scheduler(dpm, sched, 0)})
    stock.set_progress_bar_config(disable=True)
    ref = stock(**embeds(), height=h, width=w, num_inference_steps=steps, generator=gen(), output_type="latent",
                guidance_scale=3.5).images
    out = ours(**embeds(), height=h, width=w, generator=gen(), output_type="latent", guidance_scale=3.5).images
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize("solver, message", [
    (EulerDiscreteScheduler(), "not a flow-matching scheduler"),
    (DEISMultistepScheduler, "DEISMultistepScheduler cannot run RALU stage 0 .sigma 1.0000 to 0.8000.: its update is "
                             "not finite"),
    (DPMSolverMultistepScheduler(), "use_flow_sigmas=False"),
    ("heun", "solver must be one of 'scheduler', 'euler'"),
    (3, "got int"),
])
def test_solver_errors_name_the_scheduler_and_the_fix(dev, solver, message):
    with pytest.raises(ValueError, match=message):
        RALU(dev, "flux-dev-7x", solver=solver)


def test_model_evaluations_and_solver_names():
    assert [model_evaluations(n, "heun") for n in (1, 2, 5)] == [1, 3, 9]
    assert model_evaluations(5, "dpm-multistep") == model_evaluations(5, "euler") == 5
    assert solver_name("FlowMatchHeunDiscreteScheduler") == "heun"
    assert solver_name("DEISMultistepScheduler") == "dpm-multistep"
    with pytest.raises(ValueError, match="solver must be one of"):
        model_evaluations(3, "rk4")


# -- the export ----------------------------------------------------------------------------------
def test_stock_scheduler_shifts_stage_sigmas_again_and_ends_at_zero_the_trap():
    stage = diffusers_stages(preset("flux-dev-7x"))[2]
    stock = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0)
    stock.set_timesteps(sigmas=stage["sigmas"], mu=1.15)
    assert not np.allclose(stock.sigmas[:-1].numpy(), stage["sigmas"], atol=1e-3)   # shifted twice
    exact = stage_scheduler(stock, preset("flux-dev-7x"), 2)
    np.testing.assert_allclose(exact.sigmas.numpy(), stage["sigmas"] + [stage["terminal_sigma"]], atol=1e-7)
    mid = stage_scheduler(stock, preset("flux-dev-7x"), 0)
    assert float(mid.sigmas[-1]) == pytest.approx(0.8)                  # not the appended 0


def test_pinned_scheduler_refuses_other_steps_or_sigmas():
    s = stage_scheduler(FlowMatchEulerDiscreteScheduler(), preset("flux-dev-7x"), 2)
    with pytest.raises(ValueError, match="num_inference_steps=5"):
        s.set_timesteps(num_inference_steps=28)
    with pytest.raises(ValueError, match="leave sigmas out"):
        s.set_timesteps(sigmas=[0.9, 0.7, 0.5, 0.3, 0.1])
    s.set_timesteps(sigmas=np.linspace(1.0, 0.2, 5), mu=0.7)            # FluxPipeline's default: the stage
    assert float(s.sigmas[0]) == pytest.approx(preset("flux-dev-7x").stages[2].sigmas[0], abs=1e-6)
    with pytest.raises(ValueError, match="stage must be an integer in 0..2"):
        stage_scheduler(FlowMatchEulerDiscreteScheduler(), preset("flux-dev-7x"), 3)


def test_last_stage_of_a_preset_runs_exactly_in_a_stock_flux_pipeline(dev):
    sched = preset("flux-dev-7x")
    be = RALU(dev, sched).backend
    seen, original = [], be.velocity

    def spy(x, positions, sigma, cond):
        seen.append(x.clone())
        return original(x, positions, sigma, cond)

    be.velocity = spy
    try:
        ralu = RALU(dev, sched)
        ralu.backend = be
        out = ralu(**embeds(), height=128, width=128, generator=gen(), output_type="latent").images
    finally:
        del be.velocity
    start = seen[sum(sched.layout.steps[:-1])]                          # the state entering the last stage
    assert start.shape[1] == 8 * 8                                     # every token at full resolution, raster order
    stock = FluxPipeline(**{**dev.components, "scheduler": stage_scheduler(dev.scheduler, sched, 2)})
    stock.set_progress_bar_config(disable=True)
    ref = stock(**embeds(), height=128, width=128, latents=start, num_inference_steps=sched.layout.steps[-1],
                output_type="latent").images
    assert (out - ref).abs().max() < 1e-5


def test_pyramid_layout_runs_with_stock_pipelines_and_the_transition_helper(dev):
    sched = solve(PYRAMID)
    out = RALU(dev, sched)(**embeds(), height=128, width=128, generator=gen(), output_type="latent").images
    stages = diffusers_stages(sched)
    assert [s["downsampling"] for s in stages] == [2, 1]
    g = gen()
    x = draw((1, 16, 8, 8), g, "cpu")                                  # the first stage's noise, at half size
    for k, st in enumerate(stages):
        size = 128 // st["downsampling"]
        stock = FluxPipeline(**{**dev.components, "scheduler": stage_scheduler(dev.scheduler, sched, k)})
        stock.set_progress_bar_config(disable=True)
        x = stock(**embeds(), height=size, width=size, latents=pack(x), num_inference_steps=st["num_inference_steps"],
                  output_type="latent").images
        x = unpack(x, (size // 16, size // 16))
        if k < len(sched.transitions):
            x = upsample_latents(x, sched.transitions[k], generator=g)
    assert (pack(x) - out).abs().max() < 1e-5


def test_upsample_latents_refuses_partial_transitions_and_bad_shapes():
    with pytest.raises(ValueError, match="pyramid transitions"):
        upsample_latents(torch.zeros(1, 4, 8, 8), preset("flux-dev-7x").transitions[0])
    with pytest.raises(ValueError, match="even height and width"):
        upsample_latents(torch.zeros(1, 4, 7, 8), solve(PYRAMID).transitions[0])
    with pytest.raises(ValueError, match="ralu_schedule.Transition"):
        upsample_latents(torch.zeros(1, 4, 8, 8), {"a": 1})


def _kdiffusion_route(field, sched, sample_euler, generator):
    """Run a pyramid with a k-diffusion-convention Euler sampler, stage by stage."""
    flat = kdiffusion_schedule(sched)
    D = sched.layout.downsampling
    x = draw((1, field.channels, field.height // D, field.width // D), generator, "cpu")
    size = D
    for k, sigmas in enumerate(flat["stages"]):
        model = flow_denoiser(lambda x, s, size=size: field.velocity(x, s.reshape(-1)[0], size).float())
        x = sample_euler(model, x, torch.tensor(sigmas, dtype=torch.float32))
        if k < len(sched.transitions):
            x = upsample_latents(x, sched.transitions[k], generator=generator)
            size //= sched.transitions[k].factor
    return x


def _euler_in_kdiffusion_convention(model, x, sigmas):
    """k-diffusion's calling convention (``model(x, sigma * s_in)`` returns the denoised
    estimate, ``d = (x - denoised) / sigma``), written here because k-diffusion itself does not
    install beside the CPU torch; the test below runs k-diffusion's own sampler where it is."""
    s_in = x.new_ones(x.shape[0])
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - model(x, s * s_in)) / s
        x = x + d * (s_next - s)
    return x


def test_exported_sigma_lists_and_transitions_reproduce_ralu_in_kdiffusion_convention():
    field = GaussianField(height=32, width=32)
    sched = solve(Layout(steps=(2, 2, 3), ends=(0.3, 0.6, 1.0)))
    ref = sample(GaussianBackend(field), sched, None, batch=1, grid=(16, 16), generator=gen(3)).latents
    x = _kdiffusion_route(field, sched, _euler_in_kdiffusion_convention, gen(3))
    assert (pack(x) - ref).abs().max() < 1e-5


def test_kdiffusion_euler_runs_the_exported_sigmas_like_ralu():
    k_sampling = pytest.importorskip(
        "k_diffusion.sampling",
        reason="k-diffusion is not in the test extra: its dependencies pull torchvision, which either replaces the "
               "CPU torch with a CUDA build or (pinned) does not load with it (docs/schedule.md)")
    field = GaussianField(height=32, width=32)
    sched = solve(Layout(steps=(2, 2, 3), ends=(0.3, 0.6, 1.0)))
    be = GaussianBackend(field)
    ref = sample(be, sched, None, batch=1, grid=(16, 16), generator=gen(3)).latents
    x = _kdiffusion_route(field, sched, lambda m, x, s: k_sampling.sample_euler(m, x, s, disable=True), gen(3))
    assert (pack(x) - ref).abs().max() < 1e-5


def test_flow_denoiser_is_x_minus_sigma_v_for_scalar_and_per_image_sigma():
    x = torch.randn(2, 3, 4, 4, generator=gen())
    den = flow_denoiser(lambda x, s: 2.0 * x)
    torch.testing.assert_close(den(x, 0.25), x - 0.25 * 2.0 * x)
    torch.testing.assert_close(den(x, torch.tensor([0.25, 0.5])),
                               x - torch.tensor([0.25, 0.5]).view(2, 1, 1, 1) * 2.0 * x)
    with pytest.raises(ValueError, match="callable"):
        flow_denoiser(3)


@pytest.mark.parametrize("solver", SOLVERS)
def test_each_solver_runs_sd3(solver):
    from ralu_torch.testing import sd3_pipeline, sd3_prompt_embeds

    pipe = sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    out = RALU(pipe, "sd3-medium-7x", solver=solver)(**sd3_prompt_embeds(pipe), height=128, width=128,
                                                     generator=gen(), output_type="latent").images
    assert torch.isfinite(out).all()
