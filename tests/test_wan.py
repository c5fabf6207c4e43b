"""RALU for Wan text-to-video on tiny random WanPipelines (ralu_torch.testing.wan_pipeline):

- a one-stage layout is WanPipeline's own run on the same sigmas (1e-5, float32, CPU), for a
  few frame counts and sizes, with and without classifier-free guidance, on a flow-matching
  Euler scheduler and on Wan's published UniPC configuration, with one expert and with two
  (Wan 2.2 A14B's boundary); a pyramid layout is WanPipeline stage by stage;
- every stage of a UniPC run runs UniPC on exactly its own sigmas;
- mixed-token rotary tables are the stock model's, frame by frame;
- the stock calls per step at batch 2, each call to the expert its own sigma picks (also
  after a transition moved the noise level back up), no host synchronisation in a stage;
- re-injection on stacked video tokens never crosses a frame and has the derived covariance;
- edge selection scores a token by the video frames its latent frame stands for;
- bad input: frame counts off the VAE's 4 k + 1 rule, sizes off the grid, an image-to-video pipeline
  holding a text-to-video transformer (image-to-video itself: tests/test_conditioned_concat.py).
"""

import numpy as np
import pytest
import torch

import ralu_torch.sampler as sampler_module
from ralu_schedule import Layout
from ralu_torch import RALU, next_stage_latents, stage_scheduler
from ralu_torch.backends import backend_for
from ralu_torch.noise import reinjection_noise
from ralu_torch.selection import clip_scores
from ralu_torch.testing import tiny_inputs, wan_pipeline
from ralu_torch.tokens import TokenSet, child_source

ONE_STAGE = Layout(steps=(4,), ends=(1.0,))
MIXED = Layout(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))
PYRAMID = Layout(steps=(2, 3), ends=(0.4, 1.0))


@pytest.fixture(scope="module")
def pipes():
    cache = {}

    def get(scheduler="euler", experts=1):
        key = (scheduler, experts)
        if key not in cache:
            cache[key] = wan_pipeline(scheduler=scheduler, experts=experts, flow_shift=5.0 if experts == 1 else 12.0)
        return cache[key]

    return get


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def stock_on(pipe, schedule, k, **kw):
    """WanPipeline's own run with its scheduler pinned to stage ``k``'s sigmas."""
    base = pipe.scheduler
    pipe.scheduler = stage_scheduler(base, schedule, k)
    try:
        return pipe(**kw, num_inference_steps=schedule.layout.steps[k], output_type="latent").frames
    finally:
        pipe.scheduler = base


@pytest.mark.parametrize("scheduler, experts", [("euler", 1), ("unipc", 1), ("euler", 2), ("unipc", 2)])
@pytest.mark.parametrize("guided", [False, True])
def test_one_stage_layout_is_wanpipeline(pipes, scheduler, experts, guided):
    pipe = pipes(scheduler, experts)
    inputs = tiny_inputs(pipe, 2, guided=guided)
    ralu = RALU(pipe, ONE_STAGE)
    for height, width, frames in [(64, 96, 9), (128, 64, 5), (64, 64, 1)]:
        sched = ralu.schedule_for(height, width, frames)
        stock = stock_on(pipe, sched, 0, **inputs, height=height, width=width, num_frames=frames, generator=gens(2))
        ours = ralu(**inputs, height=height, width=width, num_frames=frames, generator=gens(2), output_type="latent")
        assert ours.images.shape == stock.shape == (2, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
        assert (ours.images - stock).abs().max() < 1e-5, (scheduler, experts, guided, height, width, frames)


def test_a_lora_scale_is_applied_as_wanpipeline_applies_it():
    from peft import LoraConfig

    pipe = wan_pipeline()                          # its own: the adapter changes it
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"],
                                            init_lora_weights=False))
    inputs = {**tiny_inputs(pipe, 1), "height": 64, "width": 64, "num_frames": 5}
    ralu = RALU(pipe, ONE_STAGE)
    sched = ralu.schedule_for(64, 64, 5)
    stock = stock_on(pipe, sched, 0, **inputs, attention_kwargs={"scale": 0.5}, generator=gens(1))
    ours = ralu(**inputs, joint_attention_kwargs={"scale": 0.5}, generator=gens(1), output_type="latent").images
    full = ralu(**inputs, generator=gens(1), output_type="latent").images
    assert (ours - stock).abs().max() < 1e-5
    assert (ours - full).abs().max() > 1e-3


def test_the_schedule_takes_wans_fixed_shift(pipes):
    """NT-matching solves with the scheduler's fixed shift (UniPC's flow_shift), whatever the size."""
    pipe = pipes("unipc")
    ralu = RALU(pipe, ONE_STAGE)
    assert backend_for(pipe).shift_rule().shift == 5.0
    for size in [(64, 64, 1), (128, 128, 9)]:
        assert ralu.schedule_for(*size).layout.base_shift == pytest.approx(5.0)


def test_a_pyramid_is_wanpipeline_stage_by_stage(pipes):
    pipe = pipes("euler", 2)
    inputs = tiny_inputs(pipe, 2, guided=True)
    sched = RALU(pipe, PYRAMID).schedule_for(128, 128, 9)
    ours = RALU(pipe, sched)(**inputs, height=128, width=128, num_frames=9, generator=gens(2),
                             output_type="latent").images
    g = gens(2)
    x = stock_on(pipe, sched, 0, **inputs, height=64, width=64, num_frames=9, generator=g)
    x = next_stage_latents(pipe, x, sched.transitions[0], height=64, width=64, generator=g)
    x = stock_on(pipe, sched, 1, **inputs, height=128, width=128, num_frames=9, generator=g, latents=x)
    assert (x - ours).abs().max() < 1e-5


def test_every_unipc_stage_runs_on_its_own_sigmas(pipes, monkeypatch):
    seen, original = [], sampler_module.run_scheduler

    def spy(backend, x, positions, sched, *args, **kwargs):
        seen.append(sched.sigmas.double().numpy().copy())
        return original(backend, x, positions, sched, *args, **kwargs)

    monkeypatch.setattr(sampler_module, "run_scheduler", spy)
    pipe = pipes("unipc")
    out = RALU(pipe, MIXED)(**tiny_inputs(pipe, 1), height=128, width=128, num_frames=5, generator=gens(1),
                            output_type="latent")
    assert len(seen) == 3
    for got, stage in zip(seen, out.schedule.plan.stages):
        np.testing.assert_allclose(got, stage.sigmas, atol=1e-7)
    # the stock UniPC grid differs: its first sigma lies below 1 and its timesteps are integers
    pipe.scheduler.set_timesteps(4)
    assert float(pipe.scheduler.sigmas[0]) < 1.0 and pipe.scheduler.timesteps.dtype == torch.int64


def test_mixed_tokens_get_the_stock_rotary_tables_frame_by_frame(pipes):
    pipe = pipes()
    be = backend_for(pipe)
    T, rows, cols, D = 3, 8, 6, 2
    be.set_frames(T)
    tokens = TokenSet.regular(2, (T * rows, cols), D)
    mask = torch.zeros(2, tokens.length, dtype=torch.bool)
    mask[0, [1, 13, 25]] = True                       # one coarse token in each frame, different per image
    mask[1, [4, 16, 30]] = True
    mixed, _, _ = tokens.upsample(mask, 2)
    cos, sin = (t[:, :, 0] for t in be.prepare(mixed, None).rotary)
    ours = torch.complex(cos[..., 0::2].double(), sin[..., 0::2].double())       # (B, L, D/2) rotations
    # the stock table of the coarse clip (T frames of rows/D x cols/D patches), as the model builds it
    c0, s0 = pipe.transformer.rope(torch.zeros(1, 16, T, 2 * rows // D, 2 * cols // D))
    stock = torch.complex(c0[0, :, 0, 0::2].double(), s0[0, :, 0, 0::2].double()).view(T, rows // D, cols // D, -1)
    half = cos.shape[-1] // 2
    for b in range(2):
        for i in range(mixed.length):
            r, c = mixed.cells[b, i].tolist()
            t, r = divmod(r, rows)
            if int(mixed.size[b, i]) == D:            # a coarse token: the stock entry at its place in its frame
                torch.testing.assert_close(ours[b, i], stock[t, r // D, c // D], rtol=0, atol=1e-6)
            else:                                     # a child: halfway between its neighbours, in its own frame
                r0, c0_ = r // D, c // D
                r1, c1 = r0 + (r % D != 0), c0_ + (c % D != 0)
                torch.testing.assert_close(ours[b, i] ** 2, stock[t, r0, c0_] * stock[t, r1, c1], rtol=0, atol=1e-5)
                torch.testing.assert_close(ours[b, i, :half // 3], stock[t, r0, c0_, :half // 3], rtol=0, atol=1e-6)


def test_calls_per_step_and_each_call_to_its_own_expert(pipes, monkeypatch):
    pipe = pipes("euler", 2)
    be_boundary = 0.875
    calls = []
    for name, model in (("high", pipe.transformer), ("low", pipe.transformer_2)):
        model.condition_embedder.register_forward_pre_hook(lambda m, a, name=name: calls.append((name, len(a[0]))))
    inputs = tiny_inputs(pipe, 2, guided=True)
    pipe(**inputs, height=64, width=64, num_frames=5, num_inference_steps=4, generator=gens(2), output_type="latent")
    stock = list(calls)
    calls.clear()
    sigmas, original = [], sampler_module._velocity

    def record(backend, x, positions, sigma, cond, scope, index, host_sigma=None):
        sigmas.append(host_sigma)
        return original(backend, x, positions, sigma, cond, scope, index, host_sigma)

    monkeypatch.setattr(sampler_module, "_velocity", record)
    layout = Layout(steps=(2, 2, 3), ends=(0.05, 0.1, 1.0), fractions=(0.25, 1.0))   # restarts above the boundary
    out = RALU(pipe, layout)(**inputs, height=128, width=128, num_frames=5, generator=gens(2), output_type="latent")
    assert len(stock) == 2 * 4 and {n for _, n in stock} == {2}            # two calls a step, the batch each time
    assert len(calls) == 2 * layout.total_steps and {n for _, n in calls} == {2}
    expected = ["high" if s * 1000 >= be_boundary * 1000 else "low" for s in sigmas for _ in range(2)]
    assert [name for name, _ in calls] == expected
    starts = [st.sigmas[0] for st in out.schedule.plan.stages]
    assert all(s * 1000 >= be_boundary * 1000 for s in starts[1:]) and "low" in expected   # back to the high expert


def test_no_host_sync_inside_a_stage(pipes, watched_steps):
    pipe = pipes("euler", 2)
    RALU(pipe, MIXED)(**tiny_inputs(pipe, 2, guided=True), height=128, width=128, num_frames=5, generator=gens(2),
                      output_type="latent")
    assert watched_steps == [[], [], []]


def test_reinjection_on_video_tokens_stays_in_its_frame_and_has_the_derived_covariance():
    T, rows, cols, F, c = 2, 2, 2, 8, 0.2
    tokens = TokenSet.regular(1, (T * rows, cols), 2)          # one coarse token per frame
    new, parent, slot = tokens.upsample(torch.tensor([[True, False]]), 2)
    frame_of = lambda cells: cells[..., 0] // rows  # noqa: E731
    assert torch.equal(frame_of(new.cells[0]), frame_of(tokens.cells[0, parent[0]]))   # children stay in the frame
    src = child_source(2, F, "latent")
    n = 40000
    w = torch.randn(n, new.length, F, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = reinjection_noise(w, parent.expand(n, -1), slot.expand(n, -1), src, tokens.length, c, 2)
    emp = np.cov(z.reshape(n, -1).numpy(), rowvar=False)
    child = np.repeat((slot[0] >= 0).numpy(), F)
    U = np.zeros((new.length * F, tokens.length * F))
    for i in range(new.length):
        for j in range(F):
            s = int(slot[0, i])
            U[i * F + j, int(parent[0, i]) * F + (int(src[s, j]) if s >= 0 else j)] = 1.0
    expected = np.eye(U.shape[0]) - c * (U * child[:, None]) @ (U * child[:, None]).T
    expected[~child, ~child] = 1 - c
    assert np.abs(emp - expected).max() < 4.5 / np.sqrt(n)
    kept = ~child                                               # the other frame's token: variance 1 - c, no coupling
    assert np.abs(emp[np.ix_(kept, child)]).max() < 4.5 / np.sqrt(n)


def test_a_token_is_scored_by_the_video_frames_its_latent_frame_stands_for():
    T, rows, cols, ppt = 3, 2, 2, 16
    tokens = TokenSet.regular(1, (T * rows, cols), 1)
    clip = torch.zeros(1, 3, 1 + 4 * (T - 1), rows * ppt, cols * ppt)
    clip[:, :, 5:9, :ppt, :ppt] = 1.0                           # video frames 5-8: latent frame 2, top-left token
    clip[:, :, 1, ppt:, ppt:] = 1.0                             # one of latent frame 1's four frames, bottom-right
    score = lambda im: im.mean(dim=1).unfold(1, ppt, ppt).unfold(2, ppt, ppt).mean(dim=(-1, -2))  # noqa: E731
    s = clip_scores(clip, score, tokens)
    assert s.shape == (1, T * rows, cols)
    assert s[0, 2 * rows, 0] == 1.0 and s[0, rows + 1, 1] == 0.25 and s.sum() == 1.25
    with pytest.raises(ValueError, match="a clip of 8 frames"):
        clip_scores(clip[:, :, :8], score, tokens)


def test_edge_selection_on_a_clip_picks_the_frames_with_detail(pipes):
    from ralu_torch.selection import EdgeSelection

    T, rows, cols, ppt = 2, 4, 4, 16
    tokens = TokenSet.regular(1, (T * rows, cols), 1)
    clip = torch.full((1, 3, 5, rows * ppt, cols * ppt), -1.0)
    g = torch.Generator().manual_seed(0)
    clip[:, :, 1:, :ppt, :2 * ppt] = torch.rand(1, 3, 4, ppt, 2 * ppt, generator=g) * 2 - 1   # texture in frame 1
    mask = EdgeSelection(ppt)(clip, tokens, 2 / (T * rows * cols))
    picked = mask[0].nonzero().squeeze(1).tolist()
    assert picked == [rows * cols, rows * cols + 1]             # latent frame 1's two textured tokens


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_frames=8), r"num_frames must be 4 k \+ 1 .* got 8; nearest allowed: 5 or 9"),
    (dict(num_frames=0), r"num_frames must be 4 k \+ 1"),
    (dict(height=100, width=64), r"height and width must be positive multiples of 32 pixels"),
    (dict(guidance_scale_2=3.0), "guidance_scale_2 is the low-noise expert's scale; this WanPipeline has one"),
])
def test_bad_input_says_the_rule(pipes, kwargs, message):
    pipe = pipes()
    with pytest.raises(ValueError, match=message):
        RALU(pipe, MIXED)(**{**tiny_inputs(pipe), "height": 64, "width": 64, "num_frames": 5, **kwargs})


def test_image_to_video_and_image_pipelines_are_told_the_rule(pipes):
    import diffusers

    from ralu_torch.testing import tiny_pipeline

    pipe = pipes()
    i2v = diffusers.WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=pipe.vae, scheduler=pipe.scheduler,
                                            transformer=pipe.transformer, image_encoder=None, image_processor=None)
    with pytest.raises(ValueError, match=r"WanImageToVideoPipeline gives its transformer 36 input channels .*; this "
                                         "transformer takes 16"):    # a text-to-video transformer in it
        RALU(i2v)
    flux = tiny_pipeline("flux-dev")
    with pytest.raises(ValueError, match="num_frames is for video pipelines"):
        RALU(flux, MIXED)(**tiny_inputs(flux), height=64, width=64, num_frames=5)


def test_clips_come_out_as_wanpipeline_returns_them(pipes):
    pipe = pipes()
    inputs = tiny_inputs(pipe, 1)
    ralu = RALU(pipe, MIXED)
    out = ralu(**inputs, height=64, width=64, num_frames=5, generator=gens(1), output_type="np")
    stock = pipe(**inputs, height=64, width=64, num_frames=5, num_inference_steps=2, generator=gens(1),
                 output_type="np").frames
    assert out.frames.shape == stock.shape == (1, 5, 64, 64, 3)
    clip = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(3))      # latents=, the clip form
    a = ralu(**inputs, height=64, width=64, num_frames=5, latents=clip, generator=gens(1), output_type="latent").images
    b = ralu(**inputs, height=64, width=64, num_frames=5, latents=clip.reshape(1, 16, 8, 4), generator=gens(1),
             output_type="latent").images
    assert torch.equal(a, b)


def test_a_cache_on_wan_21_is_the_stock_pipeline_with_that_cache_and_refused_on_two_experts(pipes):
    """First Block Cache (TaylorSeer leaves WanPipeline's own run unchanged in this diffusers)."""
    from diffusers import FirstBlockCacheConfig

    pipe = pipes("euler")
    inputs = tiny_inputs(pipe, 2, guided=True)
    ralu = RALU(pipe, Layout(steps=(6,), ends=(1.0,)))
    sched = ralu.schedule_for(64, 64, 5)
    plain = stock_on(pipe, sched, 0, **inputs, height=64, width=64, num_frames=5, generator=gens(2))
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.5))
    try:
        stock = stock_on(pipe, sched, 0, **inputs, height=64, width=64, num_frames=5, generator=gens(2))
        out = ralu(**inputs, height=64, width=64, num_frames=5, generator=gens(2), output_type="latent")
    finally:
        pipe.transformer.disable_cache()
    assert (stock - plain).abs().max() > 1e-3 and out.stage_calls[0].skipped_calls > 0     # the cache did act
    assert (out.images - stock).abs().max() < 1e-4
    with pytest.raises(ValueError, match="has 2 experts .* a cache here is refused"):
        RALU(pipes("euler", 2), MIXED, cache=FirstBlockCacheConfig(threshold=0.5))
