"""RALU for LTX-2 (video with a joint audio stream) on a tiny random LTX2Pipeline built from configs
(ralu_torch.testing.ltx2_pipeline; float32, CPU):

- a one-stage layout solved at call time is LTX2Pipeline's own run, its own schedule (the dynamic
  shift of the clip's tokens, the grid stretched to end at 0.1) and its default guidance (three
  calls a step), video and audio, at two sizes and two frame counts, batch 2 (1e-5);
- a three-stage layout with a mixed stage at batch 2: finite video and audio of the stock shapes,
  the stock calls per step (the classifier-free pair in one call of 2 B, then the
  spatio-temporal and the modality calls of B);
- the rotary tables of a mixed token set are the stock model's tables of a uniform grid at each
  token's own resolution (its own temporal bounds, frame by frame);
- the audio stream is re-noised at a transition as RALU re-noises the tokens it keeps;
- the cost model's LTX-2 against torch's FLOP counter on the published transformer (video and
  audio streams, every kind of call) built on the meta device;
- bad input is refused by name.
"""

import copy
import math

import pytest
import torch

from ralu_schedule import Layout, Transition
from ralu_torch import RALU
from ralu_torch.backends import backend_for
from ralu_torch.sampler import SideStream
from ralu_torch.testing import ltx2_pipeline, tiny_inputs
from ralu_torch.tokens import TokenSet

ONE_STAGE = Layout(steps=(3,), ends=(1.0,))
MIXED = Layout(steps=(2, 1, 2), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))


@pytest.fixture(scope="module")
def pipe():
    return ltx2_pipeline()


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def test_one_stage_layout_is_ltx2pipeline_video_and_audio(pipe):
    inputs = tiny_inputs(pipe, 2, guided=True)          # the pipeline's default guidance: CFG, STG, modality
    ralu = RALU(pipe, ONE_STAGE)
    for height, width, frames, output in [(64, 96, 9, "latent"), (64, 64, 5, "latent"), (64, 96, 5, "pt")]:
        sched = ralu.schedule_for(height, width, frames)
        stock = pipe(**inputs, height=height, width=width, num_frames=frames, num_inference_steps=3,
                     generator=gens(2), output_type=output)
        # the schedule solved at call time is the pipeline's own: its shift for the clip's tokens, ending at 0.1
        assert torch.allclose(torch.tensor(sched.plan.stages[0].sigmas, dtype=torch.float32), pipe.scheduler.sigmas,
                              atol=1e-6)
        assert sched.plan.stages[0].sigmas[-2] == pytest.approx(0.1)
        ours = ralu(**inputs, height=height, width=width, num_frames=frames, generator=gens(2), output_type=output)
        assert ours.frames.shape == stock.frames.shape and ours.audio.shape == stock.audio.shape
        if output == "latent":
            assert ours.frames.shape == (2, 4, (frames - 1) // 4 + 1, height // 8, width // 8)
            assert ours.audio.shape == (2, 2, round(frames / 24 * 25), 2)
        assert (ours.frames - stock.frames).abs().max() < 1e-5, (height, width, frames)
        assert (ours.audio - stock.audio).abs().max() < 1e-5, (height, width, frames)


def test_a_mixed_stage_runs_the_stock_calls_per_step(pipe):
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: calls.append((len(k["hidden_states"]), k["isolate_modalities"],
                                      k["spatio_temporal_guidance_blocks"])), with_kwargs=True)
    try:
        out = RALU(pipe, MIXED)(**tiny_inputs(pipe, 2, guided=True), height=64, width=96, num_frames=9,
                                generator=gens(2), output_type="latent")
    finally:
        hook.remove()
    assert out.stage_tokens == list(MIXED.stage_tokens(3 * 4, 6)) == [18, 33, 72]   # 3 frames of 4 x 6 tokens
    assert out.frames.shape == (2, 4, 3, 8, 12) and out.audio.shape == (2, 2, 9, 2)
    assert torch.isfinite(out.frames).all() and torch.isfinite(out.audio).all()
    step = [(4, False, None), (2, False, [1]), (2, True, None)]      # CFG pair, STG, modality isolation
    assert calls == step * MIXED.total_steps


def test_mixed_tokens_get_the_stock_tables_of_a_uniform_grid_at_their_resolution(pipe):
    be = backend_for(pipe)
    T, rows, cols, D = 3, 4, 6, 2                       # RALU tokens of a frame: 4 x 6, latent 8 x 12
    be.set_frames(T)
    fps = 25.0

    class Cond:
        pass

    Cond.fps = fps
    tokens = TokenSet.regular(2, (T * rows, cols), D)
    mask = torch.zeros(2, tokens.length, dtype=torch.bool)
    mask[0, [1, 7, 14]] = True                          # one coarse token in each frame, different per image
    mask[1, [0, 9, 17]] = True
    mixed, _, _ = tokens.upsample(mask, 2)
    pos = be.prepare(mixed, Cond)
    rope = pipe.transformer.rope
    cos, sin = rope(pos.coords)                         # the model's own tables of our bounds

    def uniform(S):     # the stock table of the uniform grid of tokens of side S (pixel pitch 32 S / D)
        r = copy.copy(rope)
        r.scale_factors = (rope.scale_factors[0], *(f * S / D for f in rope.scale_factors[1:]))
        h, w = 2 * rows // S, 2 * cols // S
        c, s = rope(r.prepare_video_coords(1, T, h, w, "cpu", fps=fps))
        return c[0].unflatten(1, (T, h, w)), s[0].unflatten(1, (T, h, w))

    tables = {S: uniform(S) for S in (1, D)}
    seen = set()
    for b in range(2):
        for k, j in enumerate(pos.order[b].tolist()):
            i, (dy, dx) = j // 4, divmod(j % 4, 2)
            S = int(mixed.size[b, i])
            r, c = mixed.cells[b, i].tolist()
            frame, y = divmod(2 * r + dy * S, 2 * rows)
            x = 2 * c + dx * S
            tc, ts = tables[S]
            assert torch.equal(cos[b, :, k], tc[:, frame, y // S, x // S]), (b, k)
            assert torch.equal(sin[b, :, k], ts[:, frame, y // S, x // S]), (b, k)
            seen.add(S)
    assert seen == {1, D}
    # the coarse stage alone is the stock grid of the 1/D-size clip, in the pipeline's token order
    coarse = be.prepare(tokens, Cond)
    stock = rope.prepare_video_coords(2, T, 2 * rows // D, 2 * cols // D, "cpu", fps=fps)
    assert torch.equal(coarse.coords, stock)


def test_audio_is_renoised_as_the_kept_tokens_are():
    tr = Transition(at=0.4, restart=0.3, c=0.2, a=1.1, b=0.7)
    w = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    for kept, scale in (("exact", math.sqrt(1 - 0.2)), ("unit", 1.0)):
        side = SideStream((2, 3, 5, 1), lambda z: z.flatten(2).transpose(1, 2))
        side.state = torch.ones(2, 5, 3)
        side.reinject(tr, None, lambda shape, g, device: w, kept)
        assert torch.allclose(side.state, 1.1 + 0.7 * scale * w)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_frames=0), "num_frames must be an integer >= 1"),
    (dict(height=48), "have to be divisible by 32"),
    (dict(latents=torch.zeros(2, 4, 3, 4, 6)), "RALU does not take latents= with LTX2Pipeline"),
    (dict(audio_latents=torch.zeros(2, 2, 9, 2)), "RALU does not take audio_latents= with LTX2Pipeline"),
    (dict(enable_prompt_enhancement=True), "does not run LTX2Pipeline's prompt enhancement"),
    (dict(decode_timestep=0.05), "LTX2Pipeline does not take 'decode_timestep'"),
    (dict(stg_scale=1.0, spatio_temporal_guidance_blocks=[]), "no STG blocks are supplied"),
])
def test_bad_input_is_refused_by_name(pipe, kwargs, message):
    inputs = {**tiny_inputs(pipe, 2, guided=True), "height": 64, "width": 96, "num_frames": 9, **kwargs}
    with pytest.raises(ValueError, match=message):
        RALU(pipe, ONE_STAGE)(**inputs, generator=gens(2), output_type="latent")
