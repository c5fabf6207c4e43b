"""The sampler's key checks on every device this machine has: the CPU always (float32), CUDA
when present, in float32 and bfloat16 (``pytest -m cuda`` runs exactly the CUDA set; on a
machine without CUDA it is skipped, saying why). ``bench/gpu_check.py`` runs the CUDA set
first. Tiny random models; the same inputs and CPU generators on every device, so the stock
pipeline and RALU draw the same noise.

- a one-stage layout is the stock pipeline, for every family (float32: 1e-5; bfloat16: within
  twice the stock pipeline's own bfloat16-vs-float32 distance on the same inputs);
- a batch equals its images run one by one; the same seed gives the same bits;
- re-injection noise drawn and shaped on the device has the covariance ``I - c U U^T``;
- the stock pipeline's transformer calls per step, and no host synchronisation inside a
  stage (on CUDA also under ``torch.cuda.set_sync_debug_mode("error")``);
- a diffusers cache inside RALU is the stock pipeline with that cache; every solver runs;
  ``latents=`` replaces the first noise; a callback interrupts.
"""

import copy

import numpy as np
import pytest
import torch

import ralu_torch.sampler as sampler_module
from devices import device_params, on, parity_tolerance
from ralu_schedule import Layout
from ralu_torch import RALU
from ralu_torch.noise import draw, reinjection_noise
from ralu_torch.testing import HostSyncDetector, tiny_inputs, tiny_pipeline
from ralu_torch.tokens import TokenSet, child_source

DEVICES = device_params()
#: every family, guided where its pipeline guides with a negative prompt
FAMILIES = {"flux-dev": True, "sd3-medium": True, "chroma": True, "flux2-dev": False, "flux2-klein-base-4b": True,
            "qwen-image": True, "z-image": True}
ONE_STAGE = Layout(steps=(4,), ends=(1.0,))
#: SD3's default sigmas stop at shift(sigma_min), not at 0: the stock run gets the layout's grid
STOCK = {"sd3-medium": dict(sigmas=np.linspace(1.0, 1 / 4, 4).tolist())}
MIXED = Layout(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))


@pytest.fixture(scope="module")
def pipes():
    """``pipes(model, device, dtype)``: the tiny float32 pipeline built once on the CPU, copied to
    the device in the dtype (the same weights everywhere)."""
    built, cache = {}, {}

    def get(model, device="cpu", dtype=torch.float32):
        if model not in built:
            built[model] = tiny_pipeline(model)
            built[model].set_progress_bar_config(disable=True)
        key = (model, device, dtype)
        if key not in cache:
            same = device == "cpu" and dtype == torch.float32
            cache[key] = built[model] if same else copy.deepcopy(built[model]).to(device, dtype)
        return cache[key]

    return get


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def inputs_for(pipes, model, device, dtype, batch=2, guided=None):
    guided = FAMILIES.get(model, False) if guided is None else guided
    return on(tiny_inputs(pipes(model), batch, guided=guided), device, dtype)


@pytest.mark.parametrize("place", DEVICES)
@pytest.mark.parametrize("model", list(FAMILIES))
def test_one_stage_layout_is_the_stock_pipeline(pipes, model, place):
    device, dtype = place
    pipe = pipes(model, device, dtype)
    kw = dict(height=64, width=96, output_type="latent")
    inputs = inputs_for(pipes, model, device, dtype)
    kw.update(STOCK.get(model, {}))
    stock = pipe(**inputs, num_inference_steps=4, generator=gens(2), **kw).images
    kw.pop("sigmas", None)
    ours = RALU(pipe, ONE_STAGE)(**inputs, generator=gens(2), **kw).images
    stock32 = stock
    if dtype != torch.float32:
        stock32 = pipes(model, device, torch.float32)(**inputs_for(pipes, model, device, torch.float32),
                                                      num_inference_steps=4, generator=gens(2), **kw,
                                                      **STOCK.get(model, {})).images
    tol = parity_tolerance(stock, stock32, dtype)
    assert ours.shape == stock.shape and ours.device.type == device
    assert (ours.double() - stock.double()).abs().max().item() <= tol, (model, device, dtype, tol)


@pytest.mark.parametrize("place", DEVICES)
def test_a_batch_is_its_images_one_by_one_and_a_seed_its_bits(pipes, place):
    device, dtype = place
    pipe = pipes("flux-dev", device, dtype)
    inputs = inputs_for(pipes, "flux-dev", device, dtype, batch=3)
    ralu = RALU(pipe, MIXED, select="random")       # a selection that rounding cannot flip
    kw = dict(height=128, width=128, output_type="latent")
    both = ralu(**inputs, generator=gens(3), **kw).images
    again = ralu(**inputs, generator=gens(3), **kw).images
    assert torch.equal(both, again)                                     # same seed, same bits
    assert not torch.equal(both, ralu(**inputs, generator=gens(3, 10), **kw).images)
    # the stock pipeline's own batch-vs-single difference on this device sets the bound
    stock_both = pipe(**inputs, num_inference_steps=4, generator=gens(3), **kw).images
    stock_gap, gap = 0.0, 0.0
    for b in range(3):
        one = {k: v[b:b + 1] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        single = ralu(**one, generator=gens(1, b), **kw).images
        stock_single = pipe(**one, num_inference_steps=4, generator=gens(1, b), **kw).images
        gap = max(gap, (single[0].double() - both[b].double()).abs().max().item())
        stock_gap = max(stock_gap, (stock_single[0].double() - stock_both[b].double()).abs().max().item())
    assert gap <= max(1e-5 if dtype == torch.float32 else 0.0, 2 * stock_gap), (gap, stock_gap)


@pytest.mark.parametrize("place", device_params(dtypes=("float32",)))
def test_reinjection_noise_on_the_device_has_the_derived_covariance(place):
    device, _ = place
    F, c, f, n = 8, 0.2, 2, 40000
    tokens = TokenSet.regular(1, (2, 4), 2, device=device)
    new, parent, slot = tokens.upsample(torch.tensor([[True, False]], device=device), f)
    source = child_source(f, F, "latent", device=device)
    w = draw((n, new.length, F), torch.Generator(device).manual_seed(0), device)
    z = reinjection_noise(w, parent.expand(n, -1), slot.expand(n, -1), source, 2, c, f)
    assert z.device.type == device and z.dtype == torch.float32
    emp = np.cov(z.reshape(n, -1).double().cpu().numpy(), rowvar=False)
    child = np.repeat((slot[0] >= 0).cpu().numpy(), F)
    U = np.zeros((new.length * F, 2 * F))
    src = source.cpu()
    for i in range(new.length):
        for j in range(F):
            s = int(slot[0, i])
            U[i * F + j, int(parent[0, i]) * F + (int(src[s, j]) if s >= 0 else j)] = 1.0
    Uc = U * child[:, None]
    expected = np.eye(U.shape[0]) - c * Uc @ Uc.T
    expected[~child, ~child] = 1 - c
    assert np.abs(emp - expected).max() < 4.5 / np.sqrt(n)          # ~4.5 standard errors of an entry
    assert np.abs(z.double().mean(0).cpu().numpy()).max() < 4.5 / np.sqrt(n)   # and of a mean


def count_calls(pipe):
    calls = []
    if type(pipe.transformer).__name__ == "ZImageTransformer2DModel":
        return calls, pipe.transformer.t_embedder.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    return calls, pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: calls.append(len(k.get("hidden_states", a[0] if a else None))), with_kwargs=True)


@pytest.mark.parametrize("place", DEVICES)
@pytest.mark.parametrize("model", ["flux-dev", "qwen-image"])
def test_the_stock_calls_per_step_and_no_host_sync_inside_a_stage(pipes, model, place, monkeypatch):
    device, dtype = place
    pipe = pipes(model, device, dtype)
    inputs = inputs_for(pipes, model, device, dtype)               # guided: two calls a step
    calls, handle = count_calls(pipe)
    pipe(**inputs, height=128, width=128, num_inference_steps=2, generator=gens(2), output_type="latent")
    stock = list(calls)
    calls.clear()
    seen, original = [], sampler_module.run_steps

    def watched(*args, **kwargs):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")                # a real synchronisation raises
        try:
            with HostSyncDetector() as sync:
                out = original(*args, **kwargs)
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        seen.append(sync.ops)
        return out

    monkeypatch.setattr(sampler_module, "run_steps", watched)
    try:
        RALU(pipe, MIXED)(**inputs, height=128, width=128, generator=gens(2), output_type="latent")
    finally:
        handle.remove()
    assert len(calls) == len(stock) // 2 * MIXED.total_steps and set(calls) == set(stock)
    assert seen == [[], [], []]


@pytest.mark.parametrize("place", DEVICES)
def test_a_cache_inside_ralu_is_the_stock_pipeline_with_that_cache(pipes, place):
    from diffusers.hooks import TaylorSeerCacheConfig

    device, dtype = place
    layout, kw = Layout(steps=(6,), ends=(1.0,)), dict(height=128, width=128, output_type="latent")

    def both(dt):
        pipe = pipes("flux-dev", device, dt)
        inputs = inputs_for(pipes, "flux-dev", device, dt)
        pipe.transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1))
        try:
            stock = pipe(**inputs, num_inference_steps=6, generator=gens(2), **kw).images
            ours = RALU(pipe, layout)(**inputs, generator=gens(2), **kw)
        finally:
            pipe.transformer.disable_cache()
        return stock, ours

    stock, ours = both(dtype)
    assert ours.stage_calls[0].skipped_calls > 0
    # TaylorSeer's finite differences amplify float32 rounding of the sigmas: 1e-4 (the CPU suite's bound)
    tol = 1e-4 if dtype == torch.float32 else parity_tolerance(stock, both(torch.float32)[0], dtype)
    assert (ours.images.double() - stock.double()).abs().max().item() <= tol


@pytest.mark.parametrize("place", DEVICES)
@pytest.mark.parametrize("solver", ["FlowMatchHeunDiscreteScheduler", "DPMSolverMultistepScheduler",
                                    "UniPCMultistepScheduler"])
def test_every_solver_runs_on_the_device(pipes, solver, place):
    import diffusers

    device, dtype = place
    pipe = pipes("flux-dev", device, dtype)
    out = RALU(pipe, MIXED, solver=getattr(diffusers, solver))(**inputs_for(pipes, "flux-dev", device, dtype),
                                                                height=128, width=128, generator=gens(2),
                                                                output_type="latent")
    assert out.images.device.type == device and torch.isfinite(out.images).all()
    heun = solver.startswith("FlowMatchHeun")
    assert [s.calls for s in out.stage_calls] == [2 * n - 1 if heun else n for n in MIXED.steps]


@pytest.mark.parametrize("place", DEVICES)
def test_latents_replace_the_first_noise_and_a_callback_interrupts(pipes, place):
    from diffusers.utils.torch_utils import randn_tensor

    device, dtype = place
    pipe = pipes("flux-dev", device, dtype)
    inputs = inputs_for(pipes, "flux-dev", device, dtype, batch=1)
    ralu = RALU(pipe, "flux-dev-7x")
    kw = dict(height=128, width=128, output_type="latent")
    ref = ralu(**inputs, generator=gens(1), **kw).images
    g = gens(1)
    noise = randn_tensor((1, 16, 8, 8), generator=g).to(device)      # what RALU draws first, at the first stage
    assert torch.equal(ralu(**inputs, latents=noise, generator=g, **kw).images, ref)

    def stop(owner, step, timestep, tensors):
        owner._interrupt = step == 1
        return {}

    out = ralu(**inputs, generator=gens(1), callback_on_step_end=stop, **kw)
    assert out.interrupted and torch.isfinite(out.images).all() and out.images.device.type == device


@pytest.mark.parametrize("place", DEVICES)
def test_a_wan_clip_with_two_experts_is_wanpipeline(place):
    """Wan 2.2's two experts, guided, a 9-frame clip: a one-stage layout is WanPipeline's run
    on the same sigmas (its scheduler pinned to them, :func:`ralu_torch.stage_scheduler`)."""
    from ralu_torch import stage_scheduler
    from ralu_torch.testing import wan_pipeline

    device, dtype = place
    base = wan_pipeline(experts=2, flow_shift=12.0)
    pipe = base if device == "cpu" and dtype == torch.float32 else copy.deepcopy(base).to(device, dtype)
    kw = dict(height=64, width=96, num_frames=9, output_type="latent")

    def both(p):
        inputs = on(tiny_inputs(base, 2, guided=True), device, p.transformer.dtype)
        ralu = RALU(p, ONE_STAGE)
        sched, scheduler = ralu.schedule_for(64, 96, 9), p.scheduler
        p.scheduler = stage_scheduler(scheduler, sched, 0)
        try:
            stock = p(**inputs, num_inference_steps=4, generator=gens(2), **kw).frames
        finally:
            p.scheduler = scheduler
        return stock, ralu(**inputs, generator=gens(2), **kw).images

    stock, ours = both(pipe)
    stock32 = stock if dtype == torch.float32 else both(copy.deepcopy(base).to(device))[0]
    assert ours.device.type == device
    assert (ours.double() - stock.double()).abs().max().item() <= parity_tolerance(stock, stock32, dtype)
