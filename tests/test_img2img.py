"""Starting from an image (img2img) and from a clip (video2video), on tiny random models built
from configs (float32, CPU), for FluxImg2ImgPipeline, StableDiffusion3Img2ImgPipeline,
QwenImageImg2ImgPipeline, ZImageImg2ImgPipeline, ChromaImg2ImgPipeline and
WanVideoToVideoPipeline:

- a one-stage schedule is the stock pipeline (1e-5) at two sizes, batch 2, two strengths (one
  where ``steps x strength`` is not an integer), with the family's guidance, and with the
  pipeline's default strength and guidance when none is given; the decoded output too;
- the strength cut is each pipeline's own ``get_timesteps`` arithmetic;
- a 3-stage layout with a mixed stage at batch 2 and a strength runs the stock number of
  transformer calls per step, gives finite output of the stock shape, and its first model call
  sees the image's latent pooled to the coarse resolution, noised to ``s_1`` (the strength's
  start) with noise drawn at that resolution;
- bad input is refused in one line before any model call.
"""

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ralu_schedule import Layout, Schedule, preset
from ralu_schedule.strength import cut_index, start_time
from ralu_torch import RALU, stage_scheduler
from ralu_torch.testing import tiny_inputs
from ralu_torch.tokens import pack
from tiny import IMG2IMG, pictures, tiny_img2img

PIPELINES = list(IMG2IMG)
ONE_STAGE = Layout(steps=(4,), ends=(1.0,))
MIXED = Layout(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))
#: per rounding: a strength where 4 x strength is an integer, and one where it is not (2.4, 3.2)
STRENGTHS = {"img2img": (0.5, 0.6), "video2video": (0.5, 0.8)}
#: each pipeline's own defaults (its __call__ signature): strength, guidance_scale
DEFAULTS = {"FluxImg2ImgPipeline": (0.6, 7.0), "StableDiffusion3Img2ImgPipeline": (0.6, 7.0),
            "QwenImageImg2ImgPipeline": (0.6, None), "ZImageImg2ImgPipeline": (0.6, 5.0),
            "ChromaImg2ImgPipeline": (0.9, 5.0), "WanVideoToVideoPipeline": (0.8, 5.0)}


@pytest.fixture(scope="module")
def pipes():
    cache = {}

    def get(name, scheduler="euler"):
        if (name, scheduler) not in cache:
            cache[name, scheduler] = tiny_img2img(name, scheduler)
        return cache[name, scheduler]

    return get


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def start_of(name, n, height, width, seed=0, frames=5):
    """The call's input: ``n`` images, or ``n`` clips of ``frames`` frames for Wan."""
    if name == "WanVideoToVideoPipeline":
        clips = [pictures(frames, height, width, seed + i) for i in range(n)]
        return {"video": clips if n > 1 else clips[0]}
    return {"image": pictures(n, height, width, seed)}


def stock(pipe, schedule, **kw):
    """The stock pipeline on the one-stage schedule's grid: FLUX.1, Qwen-Image, Z-Image and Chroma
    on their own default sigmas; SD3 given them (its default grid stops at shift(sigma_min));
    Wan's scheduler pinned to them (its pipeline takes no sigmas)."""
    n = schedule.layout.total_steps
    name = type(pipe).__name__
    if name == "StableDiffusion3Img2ImgPipeline":
        kw["sigmas"] = np.linspace(1.0, 1.0 / n, n).tolist()
    if name != "WanVideoToVideoPipeline":
        return pipe(**kw, num_inference_steps=n).images
    base = pipe.scheduler
    pipe.scheduler = stage_scheduler(base, schedule, 0)
    try:
        return pipe(**kw, num_inference_steps=n).frames
    finally:
        pipe.scheduler = base


def rounding(name):
    return "video2video" if name == "WanVideoToVideoPipeline" else "img2img"


@pytest.mark.parametrize("name", PIPELINES)
def test_one_stage_schedule_is_the_stock_pipeline(pipes, name):
    pipe, base = pipes(name)
    inputs = tiny_inputs(base, 2, guided=True)
    ralu = RALU(pipe, ONE_STAGE)
    video = name == "WanVideoToVideoPipeline"
    # Wan: one clip of 5 frames for both clips at one size, one frame each at the other (its VAE is the slow part)
    for (height, width), frames in [((64, 96), 5), ((96, 64), 1)]:
        frames = frames if video else None
        sched = ralu.schedule_for(height, width, frames)
        start = start_of(name, 1 if video and frames == 5 else 2, height, width, frames=frames or 5)
        size = {} if name == "ZImageImg2ImgPipeline" else dict(height=height, width=width)   # Z-Image: the image's
        for strength in STRENGTHS[rounding(name)]:
            kw = dict(**inputs, **start, **size, strength=strength, output_type="latent")
            ref = stock(pipe, sched, **kw, generator=gens(2))
            ours = RALU(pipe, sched)(**kw, generator=gens(2))
            assert ours.images.shape == ref.shape
            assert (ours.images - ref).abs().max() < 1e-5, (name, height, width, strength)
            kept = 4 - cut_index(4, strength, rounding(name))
            assert [st.steps for st in ours.plan.stages] == [kept] and ours.stage_calls[0].calls == kept
    # the pipeline's own defaults (strength, guidance) when none is given; the decoded output
    kw = dict(**{k: v for k, v in inputs.items() if k != "guidance_scale"},
              **start_of(name, 2, 64, 96, frames=1), **({} if name == "ZImageImg2ImgPipeline" else dict(height=64, width=96)),
              output_type="np")
    sched = ralu.schedule_for(64, 96, 1 if video else None)
    ref = stock(pipe, sched, **kw, generator=gens(2, 5))
    ours = RALU(pipe, sched)(**kw, generator=gens(2, 5))
    assert np.asarray(ours.images).shape == np.asarray(ref).shape
    assert np.abs(np.asarray(ours.images) - np.asarray(ref)).max() < 1e-4
    assert ours.plan.stages[0].steps == 4 - cut_index(4, DEFAULTS[name][0], rounding(name))


@pytest.mark.parametrize("name", PIPELINES)
def test_defaults_are_read_from_the_pipelines_call(pipes, name):
    be = RALU(pipes(name)[0], ONE_STAGE).backend
    assert (be.default_strength, be.default_guidance_scale) == DEFAULTS[name]


def test_wan_video_to_video_with_its_unipc_scheduler(pipes):
    pipe, base = pipes("WanVideoToVideoPipeline", "unipc")
    inputs = tiny_inputs(base, 2, guided=True)
    sched = RALU(pipe, ONE_STAGE).schedule_for(64, 96, 5)
    kw = dict(**inputs, **start_of("WanVideoToVideoPipeline", 1, 64, 96), height=64, width=96, strength=0.8,
              output_type="latent")
    ref = stock(pipe, sched, **kw, generator=gens(2))
    ours = RALU(pipe, sched)(**kw, generator=gens(2))
    assert (ours.images - ref).abs().max() < 1e-5


STOCK_GET_TIMESTEPS = ["FluxImg2ImgPipeline", "StableDiffusion3Img2ImgPipeline", "QwenImageImg2ImgPipeline",
                       "ZImageImg2ImgPipeline", "ChromaImg2ImgPipeline", "WanVideoToVideoPipeline"]


@pytest.mark.parametrize("name", STOCK_GET_TIMESTEPS)
def test_the_strength_cut_is_the_pipelines_own_arithmetic(name):
    import diffusers

    cls = getattr(diffusers, name)
    begun = []
    for n in range(1, 51):
        for s in (0.05, 0.1, 0.25, 1 / 3, 0.35, 0.5, 0.55, 0.56, 0.58, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0):
            grid = torch.arange(n)
            sched = types.SimpleNamespace(timesteps=grid, order=1, set_begin_index=begun.append)
            stub = types.SimpleNamespace(scheduler=sched)
            if name == "WanVideoToVideoPipeline":
                timesteps, kept = cls.get_timesteps(stub, n, grid, s, "cpu")
            else:
                timesteps, kept = cls.get_timesteps(stub, n, s, "cpu")
            assert cut_index(n, s, rounding(name)) == n - kept == n - len(timesteps), (name, n, s)
    # float arithmetic as the pipelines do it: 25 x 0.56 = 14.000000000000002, 50 x 0.58 = 28.999999999999996
    assert cut_index(25, 0.56) == 10 and cut_index(50, 0.58, "video2video") == 22


def count_calls(pipe):
    """Batch sizes of the transformer calls, hooked on the module every call runs once (its
    timestep embedding): the stock forward and RALU's token-level forwards alike."""
    tr = pipe.transformer
    module = next(getattr(tr, n) for n in ("time_text_embed", "t_embedder", "condition_embedder") if hasattr(tr, n))
    calls = []
    return calls, module.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))


@pytest.mark.parametrize("name", PIPELINES)
def test_a_mixed_layout_starts_from_the_image_at_the_coarse_resolution(pipes, name):
    pipe, base = pipes(name)
    inputs = tiny_inputs(base, 2, guided=True)
    video = name == "WanVideoToVideoPipeline"
    size = dict(height=64, width=64) if video else dict(height=128, width=128)
    start = start_of(name, 1 if video else 2, size["height"], size["width"], seed=3)     # Wan: one clip for both
    strength = 0.7
    calls, handle = count_calls(pipe)
    try:
        ref = stock(pipe, RALU(pipe, ONE_STAGE).schedule_for(**size, num_frames=5 if video else None), **inputs,
                    **start, **size, strength=1.0, generator=gens(2), output_type="latent")
        per_step = len(calls) // 4
        stock_batches = set(calls)
        calls.clear()
        ralu = RALU(pipe, MIXED)
        seen = []
        velocity = ralu.backend.velocity

        def first_input(x, positions, sigma, cond):
            seen.append(x.clone())
            return velocity(x, positions, sigma, cond)

        ralu.backend.velocity = first_input
        out = ralu(**inputs, **start, **size, strength=strength, generator=gens(2, 7), output_type="latent")
    finally:
        handle.remove()
    assert out.images.shape == ref.shape and bool(torch.isfinite(out.images).all())
    assert len(calls) == per_step * MIXED.total_steps and set(calls) == stock_batches
    full = out.stage_tokens[-1]
    assert out.stage_tokens[0] == full // 4 < out.stage_tokens[1] < full               # a mixed middle stage
    # s_1 is the strength's start on the base sampler's range, and the first call sees the image there
    lay = out.schedule.layout
    t0 = start_time(strength, lay.base_shift, lay.terminal, MIXED.total_steps)
    assert out.plan.stages[0].timesteps[0] == pytest.approx(t0, abs=1e-12) and lay.start == pytest.approx(t0, abs=1e-12)
    be = ralu.backend
    g = gens(2, 7)
    prepared = be.image_start({**start}, height=size.get("height"), width=size.get("width"), batch=2, generator=g)[1]
    clean = be.encode_start(prepared, 2, g, torch.device("cpu"))                       # consumes g as the run did
    coarse = F.avg_pool2d(clean, 2)
    noise = torch.cat([torch.randn(1, *coarse.shape[1:], generator=gi) for gi in g])
    sigma = 1.0 - t0
    expected = pack(sigma * noise + (1 - sigma) * coarse)
    assert (seen[0] - expected).abs().max() < 1e-5
    assert (seen[0] - pack(noise)).abs().max() > 0.1                                   # the image is in it


def _no_model_calls(pipe):
    """Hooks that record any transformer or VAE call."""
    calls = []
    handles = [m.register_forward_pre_hook(lambda mod, args: calls.append(type(mod).__name__))
               for m in (pipe.transformer, pipe.vae.encoder if hasattr(pipe.vae, "encoder") else pipe.vae)]
    tr = pipe.transformer
    sub = next(getattr(tr, n) for n in ("time_text_embed", "t_embedder", "condition_embedder") if hasattr(tr, n))
    handles.append(sub.register_forward_pre_hook(lambda mod, args: calls.append("transformer")))
    return calls, handles


def _refused(pipe, schedule, match, ralu=None, **kw):
    calls, handles = _no_model_calls(pipe)
    try:
        with pytest.raises(ValueError, match=match) as err:
            RALU(pipe, schedule, **(ralu or {}))(**kw)
    finally:
        for h in handles:
            h.remove()
    assert "\n" not in str(err.value)
    assert calls == [], calls
    return str(err.value)


@pytest.mark.parametrize("strength", [0, -0.1, 1.5, float("nan"), "0.5", True])
@pytest.mark.parametrize("name", ["FluxImg2ImgPipeline", "WanVideoToVideoPipeline"])
def test_strength_outside_zero_one_is_refused(pipes, name, strength):
    pipe, base = pipes(name)
    _refused(pipe, ONE_STAGE, r"strength must (lie in \(0, 1\]|be a number in \(0, 1\])",
             **tiny_inputs(base), **start_of(name, 1, 64, 64), height=64, width=64, strength=strength)


def test_images_the_pipeline_cannot_take_are_refused(pipes):
    import PIL.Image

    pipe, base = pipes("FluxImg2ImgPipeline")
    kw = dict(**tiny_inputs(base), height=64, width=64)
    img = pictures(1, 64, 64)[0]
    _refused(pipe, ONE_STAGE, "encodes RGB images, got a PIL image of mode 'L'; convert it", image=img.convert("L"),
             **kw)
    _refused(pipe, ONE_STAGE, "encodes 3-channel \\(RGB\\) images, or takes 16-channel latents in its place; got 4",
             image=torch.rand(1, 4, 64, 64), **kw)
    _refused(pipe, ONE_STAGE, "starts from an image, got a video", image=[pictures(5, 64, 64)], **kw)
    _refused(pipe, ONE_STAGE, "starts from an image, got a video", image=torch.rand(1, 5, 3, 64, 64), **kw)
    _refused(pipe, ONE_STAGE, "starts from image=, not video=", video=pictures(5, 64, 64), **kw)
    _refused(pipe, ONE_STAGE, "FluxImg2ImgPipeline needs image=", **kw)
    _refused(pipe, ONE_STAGE, "must be a PIL image", image="photo.png", **kw)
    _refused(pipe, MIXED, "height and width must be positive multiples of 32 pixels .* got 80x64",
             image=img, **{**kw, "height": 80})
    _refused(pipe, ONE_STAGE, "3 images cannot start 1 generated images", image=pictures(3, 64, 64), **kw)
    _refused(pipe, ONE_STAGE, "got 3 generators for a batch of 1", image=img, generator=gens(3), **kw)
    _refused(pipe, ONE_STAGE, "RALU does not take latents= with FluxImg2ImgPipeline: its run starts from the image",
             image=img, latents=torch.randn(1, 16, 8, 8), **kw)
    assert isinstance(img, PIL.Image.Image)


def test_sd3_needs_an_image_per_generator(pipes):
    pipe, base = pipes("StableDiffusion3Img2ImgPipeline")
    _refused(pipe, ONE_STAGE, "encodes image i with generator i: give 2 images", **tiny_inputs(base, 2),
             image=pictures(1, 64, 64), height=64, width=64, generator=gens(2))


def test_z_image_runs_at_its_images_size(pipes):
    pipe, base = pipes("ZImageImg2ImgPipeline")
    _refused(pipe, ONE_STAGE, "runs at its image's size, 96x64 .* got height 64 and width 64",
             **tiny_inputs(base), image=pictures(1, 64, 96), height=64, width=64)


def test_videos_the_pipeline_cannot_take_are_refused(pipes):
    pipe, base = pipes("WanVideoToVideoPipeline")
    kw = dict(**tiny_inputs(base), height=64, width=64)
    _refused(pipe, ONE_STAGE, r"starts from a video, got one image; give a list of frames \(video=\[image\]",
             video=pictures(1, 64, 64)[0], **kw)
    _refused(pipe, ONE_STAGE, r"starts from a video, got one image", video=torch.rand(3, 64, 64), **kw)
    _refused(pipe, ONE_STAGE, "a video of 6 frames: WanVideoToVideoPipeline encodes 4 k \\+ 1 frames .* give 5 or 9",
             video=pictures(6, 64, 64), **kw)
    _refused(pipe, ONE_STAGE, "encodes RGB frames, got a PIL image of mode 'RGBA'",
             video=[f.convert("RGBA") for f in pictures(5, 64, 64)], **kw)
    _refused(pipe, ONE_STAGE, "takes no num_frames", video=pictures(5, 64, 64), num_frames=5, **kw)
    _refused(pipe, ONE_STAGE, "starts from video=, not image=", image=pictures(1, 64, 64), **kw)
    _refused(pipe, ONE_STAGE, "2 videos cannot start 1 generated clips", video=[pictures(5, 64, 64)] * 2, **kw)
    sched = RALU(pipe, ONE_STAGE).schedule_for(64, 64, 5)
    _refused(pipe, sched, r"strength 0.1 leaves none of this schedule's steps: WanVideoToVideoPipeline drops "
             r"4 - int\(4 x 0.1\) = 4 of 4", video=pictures(5, 64, 64), strength=0.1, **kw)


def test_strength_to_a_pipeline_that_generates_from_noise_is_refused():
    from ralu_torch.testing import tiny_pipeline

    pipe = tiny_pipeline("flux-dev")
    _refused(pipe, ONE_STAGE, "strength is for pipelines that start from an image or a video; FluxPipeline generates "
             "from noise; load FluxImg2ImgPipeline to start from an image", **tiny_inputs(pipe), height=64, width=64,
             strength=0.5)


def test_fixed_schedules_are_cut_as_the_pipeline_cuts(pipes):
    pipe, base = pipes("FluxImg2ImgPipeline")
    kw = dict(**tiny_inputs(base), **start_of("FluxImg2ImgPipeline", 1, 128, 128), height=128, width=128)
    fixed = preset("flux-dev-7x")                                  # 2 + 3 + 5 steps
    _refused(pipe, fixed, r"strength 0.6 cuts into this fixed schedule beyond its first stage \(2\+3\+5 steps: "
             r"FluxImg2ImgPipeline drops int\(10 - 10 x 0.6\) = 4 of 10 steps and runs 6\)", strength=0.6, **kw)
    _refused(pipe, "flux-dev-7x", "published parameters are for a run from noise", ralu={"parameters": "authors"},
             strength=0.6, **kw)
    # as a schedule it is cut (one first-stage step here); by name it is a layout solved for the strength
    ralu = RALU(pipe, fixed)
    out = ralu(**kw, strength=0.9, generator=gens(1), output_type="latent")
    assert [st.steps for st in out.plan.stages] == [1, 3, 5] and out.schedule is fixed
    np.testing.assert_array_equal(out.plan.stages[0].timesteps, fixed.stages[0].timesteps[1:])
    assert out.plan.stages[1:] == fixed.stages[1:]
    named = RALU(pipe, "flux-dev-7x")(**kw, strength=0.6, generator=gens(1), output_type="latent")
    assert [st.steps for st in named.plan.stages] == [2, 3, 5] and named.schedule.layout.start > 0
    assert RALU(pipe, fixed).schedule_for(128, 128, strength=1.0) is fixed


def test_a_solved_layout_from_an_image_round_trips_as_json(pipes):
    pipe, _ = pipes("QwenImageImg2ImgPipeline")
    sched = RALU(pipe, MIXED).schedule_for(128, 128, strength=0.6)
    assert isinstance(sched, Schedule) and sched.layout.terminal == 0.02 and sched.layout.start > 0
    back = Schedule.from_json(sched.to_json())
    assert back == sched and back.stages[0].timesteps[0] == sched.layout.start
    assert math.isfinite(back.jsd)
