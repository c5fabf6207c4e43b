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


@pytest.mark.parametrize("name", ["LTX2ImageToVideoPipeline", "LTX2ConditionPipeline", "LTX2LatentUpsamplePipeline",
                                  "LTX2DFRPipeline", "LTX2InContextPipeline", "LTX2HDRPipeline"])
def test_the_other_ltx2_pipelines_are_refused_by_name(name):
    import diffusers

    cls = getattr(diffusers, name)
    with pytest.raises(ValueError, match=f"RALU cannot run {name}: it runs .*LTX2Pipeline"):
        backend_for(cls.__new__(cls))


# -- the cost model against torch's FLOP counter -------------------------------------------------
from tiny import counted  # noqa: E402
from ralu_schedule.cost import (GEMMA3_12B, LTX2_AUDIO, LTX2_CONNECTORS, LTX2_VAE, MODELS,  # noqa: E402
                                AudioDecoderSpec, LTX2Spec, format_cost, layout_cost)

# Lightricks/LTX-2 as diffusers' scripts/convert_ltx2_to_diffusers.py (version "2.0") writes it; the rest are
# LTX2VideoTransformer3DModel's defaults
LTX2_TRANSFORMER = dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
                        attention_head_dim=128, cross_attention_dim=4096, audio_in_channels=128, audio_out_channels=128,
                        audio_num_attention_heads=32, audio_attention_head_dim=64, audio_cross_attention_dim=2048,
                        num_layers=48, caption_channels=3840)
LTX2_VIDEO_VAE = dict(latent_channels=128, block_out_channels=(256, 512, 1024, 2048),
                      decoder_block_out_channels=(256, 512, 1024), layers_per_block=(4, 6, 6, 2, 2),
                      decoder_layers_per_block=(5, 5, 5, 5), spatio_temporal_scaling=(True, True, True, True),
                      decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False,) * 4,
                      downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                      upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), patch_size=4,
                      decoder_causal=False, decoder_spatial_padding_mode="reflect", spatial_compression_ratio=32,
                      temporal_compression_ratio=8)
#: LTX-2.3's transformer features, on the 2.0 sizes (a spec read from any such config must still count right)
LTX23_FEATURES = dict(perturbed_attn=True, gated_attn=True, audio_gated_attn=True, cross_attn_mod=True,
                      audio_cross_attn_mod=True)


def meta(*shape):
    return torch.empty(*shape, device="meta")


def same(ours, fn, paper_only=False):
    full, linear, out = counted(fn, result=True)
    assert ours.total("paper") == linear
    if not paper_only:                   # on the meta device the counter sees the attention kernels too
        assert ours.total("full") == full
    return out


@pytest.mark.parametrize("features", [{"num_layers": 3}, {**LTX23_FEATURES, "num_layers": 2}])
def test_transformer_against_flop_counter_every_kind_of_call(features):
    """The published widths at 3 and 2 blocks (every block counts alike; 48 cost the counter 16x the time)."""
    from diffusers import LTX2VideoTransformer3DModel

    with torch.device("meta"):
        tr = LTX2VideoTransformer3DModel(**{**LTX2_TRANSFORMER, **features})
    spec = LTX2Spec.from_config(tr.config)
    if features.keys() == {"num_layers"}:               # the published spec is the config's, at its 48 blocks
        assert LTX2Spec.from_config({**tr.config, "num_layers": 48}) == MODELS["ltx-2"].transformer
    blocks = [0, features["num_layers"] - 1]
    F, h, w, A, T = 3, 4, 6, 9, 16                      # 72 video tokens: 18 of RALU's 2 x 2 tokens
    calls = [dict(isolated=False, perturbed=0), dict(isolated=True, perturbed=0), dict(isolated=False, perturbed=2)]
    for call in calls:
        same(spec.forward(F * h * w // 4, T, audio_tokens=A, **call),
             lambda: tr(hidden_states=meta(1, F * h * w, 128), audio_hidden_states=meta(1, A, 128),
                        encoder_hidden_states=meta(1, T, 3840), audio_encoder_hidden_states=meta(1, T, 3840),
                        timestep=meta(1), sigma=meta(1), num_frames=F, height=h, width=w, audio_num_frames=A,
                        isolate_modalities=call["isolated"], spatio_temporal_guidance_blocks=blocks[:call["perturbed"]],
                        return_dict=False))


def test_tiny_pipeline_parts_against_flop_counter():
    """The specs read from the tiny pipeline's configs (what the backend prices its calls with)."""
    pipe = ltx2_pipeline()
    be = backend_for(pipe)
    spec = be.cost_spec()
    for kind in ("plain", "isolated", "perturbed"):
        same(spec.forward(12, 8, audio_tokens=5, isolated=kind == "isolated", perturbed=int(kind == "perturbed")),
             lambda: pipe.transformer(hidden_states=torch.randn(1, 48, 4), audio_hidden_states=torch.randn(1, 5, 4),
                                      encoder_hidden_states=torch.randn(1, 8, 32),
                                      audio_encoder_hidden_states=torch.randn(1, 8, 32), timestep=torch.ones(1),
                                      sigma=torch.ones(1), num_frames=2, height=4, width=6, audio_num_frames=5,
                                      isolate_modalities=kind == "isolated",
                                      spatio_temporal_guidance_blocks=[1] if kind == "perturbed" else None,
                                      return_dict=False), paper_only=True)
    a, voc = pipe.audio_vae.config, pipe.vocoder.config
    vae = be.vae_spec()
    assert (vae.downsampling, vae.temporal) == (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio)
    out = same(vae.decode(32, 48, 3), lambda: pipe.vae.decode(torch.randn(1, 4, 3, 4, 6), return_dict=False)[0],
               paper_only=True)
    assert tuple(out.shape) == (1, 3, vae.frames(3), 32, 48)
    audio = AudioDecoderSpec(latent_channels=a.latent_channels, mel_bins=a.mel_bins, base=a.base_channels,
                             ch_mult=tuple(a.ch_mult), res_blocks=a.num_res_blocks, out_channels=a.output_channels,
                             vocoder_hidden=voc.hidden_channels, vocoder_out=voc.out_channels,
                             kernels=tuple(voc.upsample_kernel_sizes), factors=tuple(voc.upsample_factors),
                             resnet_kernels=tuple(voc.resnet_kernel_sizes),
                             dilations=tuple(map(tuple, voc.resnet_dilations)))
    same(audio.decode(9), lambda: pipe.vocoder(pipe.audio_vae.decode(torch.randn(1, 2, 9, 2), return_dict=False)[0]),
         paper_only=True)


def test_video_vae_audio_decode_text_encoder_and_connectors_against_flop_counter():
    import diffusers as d
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    with torch.device("meta"):
        vae = d.AutoencoderKLLTX2Video(**LTX2_VIDEO_VAE)
        audio, vocoder = d.AutoencoderKLLTX2Audio(), LTX2Vocoder()
        # Gemma 3 12B's text model (google/gemma-3-12b-it), as Gemma3ForConditionalGeneration: logits too
        gemma = Gemma3ForConditionalGeneration(Gemma3Config(text_config=dict(
            hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
            num_key_value_heads=8, head_dim=256, vocab_size=262208, sliding_window=1024)))
        connectors = LTX2TextConnectors()
    assert (LTX2_VAE.downsampling, LTX2_VAE.temporal) == (vae.spatial_compression_ratio, vae.temporal_compression_ratio)
    for n in (1, 3):
        out = same(LTX2_VAE.decode(64, 96, n), lambda: vae.decode(meta(1, 128, n, 2, 3), return_dict=False)[0])
        assert tuple(out.shape) == (1, 3, LTX2_VAE.frames(n), 64, 96)
    out = same(LTX2_AUDIO.decode(126), lambda: vocoder(audio.decode(meta(1, 8, 126, 16), return_dict=False)[0]))
    assert tuple(out.shape) == (1, 2, (4 * 126 - 3) * 240)          # 5.04 s at 24 kHz
    n = 256
    same(GEMMA3_12B.forward(n), lambda: gemma(input_ids=torch.zeros(1, n, dtype=torch.long, device="meta"),
                                              output_hidden_states=True))
    same(LTX2_CONNECTORS.forward(1024), lambda: connectors(meta(1, 1024, 3840 * 49),
                                                           torch.ones(1, 1024, dtype=torch.long, device="meta")))


def test_layout_cost_prices_the_clip_video_and_audio():
    spec = MODELS["ltx-2"]
    c = layout_cost(MIXED, "ltx-2", convention="full", baseline_steps=30)
    assert (c.resolution, c.frames, c.latent_frames) == ((512, 768), 121, 16)
    rows, cols = spec.token_grid(512, 768, MIXED.downsampling)            # 8 x 12 RALU tokens a frame
    assert [s.tokens for s in c.stages] == list(MIXED.stage_tokens(16 * rows, cols))
    tr = spec.transformer
    assert tr.audio_tokens == 126 == round(121 / 24 * 25)
    for s in c.stages:        # each step: the CFG pair, the STG call (one block), the modality call, video and audio
        step = (2 * tr.forward(s.tokens, 1024) + tr.forward(s.tokens, 1024, perturbed=1)
                + tr.forward(s.tokens, 1024, isolated=True))
        assert s.tflops * 1e12 == pytest.approx(s.steps * step.total("full"))
    shorter = layout_cost(MIXED, "ltx-2", frames=49, convention="full", baseline_steps=30)
    assert shorter.latent_frames == 7 and spec.for_clip(49).transformer.audio_tokens == 51
    assert c.decode_tflops * 1e12 == pytest.approx((LTX2_VAE.decode(512, 768, 16)
                                                    + LTX2_AUDIO.decode(126)).total("full"))
    assert c.edge_decode_tflops[0] * 1e12 == pytest.approx(LTX2_VAE.decode(256, 384, 16).total("full"))
    text = 2 * (GEMMA3_12B.forward(1024) + LTX2_CONNECTORS.forward(1024))      # the negative prompt too
    assert c.text_encoding_tflops * 1e12 == pytest.approx(text.total("full"))
    assert "121 frames (16 latent)" in format_cost(c)
    with pytest.raises(ValueError, match="frames must be 8k \\+ 1 for ltx-2"):
        layout_cost(MIXED, "ltx-2", frames=120)


# -- ralu generate and ralu eval ---------------------------------------------------------------
def test_generate_writes_a_clip_with_its_sound_and_eval_refuses_it(tmp_path, capsys):
    import json
    import subprocess

    import imageio_ffmpeg

    from ralu_torch.backends.families import BY_NAME
    from ralu_torch.cli import main
    from ralu_torch.generation.execute import call_args
    from ralu_torch.jobs import Job
    from ralu_torch.testing import ltx2_pipeline_with_text

    model = tmp_path / "ltx2"
    ltx2_pipeline_with_text().save_pretrained(model)
    out = tmp_path / "cat.mp4"
    assert main(["generate", "--model", str(model), "--prompt", "a red cat", "--negative-prompt", "blurry",
                 "--height", "128", "--width", "128", "--num-frames", "9", "--max-sequence-length", "16",
                 "--device", "cpu", "--out", str(out)]) == 0      # sizes: the published model's 64-pixel tokens x 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.json", "cat.mp4", "ltx2"]
    recipe = json.loads((tmp_path / "cat.json").read_text())
    assert (recipe["num_frames"], recipe["fps"], recipe["schedule_source"]) == (9, 24, "ltx2-512x768-7x")
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(out)], capture_output=True, text=True).stderr
    streams = [line.split("Stream")[1] for line in probe.splitlines() if "Stream #" in line]
    assert len(streams) == 2 and "Video: h264" in streams[0] and "128x128" in streams[0] and "24 fps" in streams[0]
    assert "Audio: aac" in streams[1] and "16000 Hz, stereo" in streams[1]        # the vocoder's rate and channels
    # the clip's frame rate is LTX2Pipeline's frame_rate: its time axis and its audio's length
    job = Job(index=0, prompt="a", seed=0, height=64, width=64, negative_prompt=None, file="x.mp4")

    class Args:
        guidance_scale = max_sequence_length = true_cfg = None
        num_frames, fps = 5, 12.0

    assert call_args(Args, [job], None, BY_NAME["ltx2"])["frame_rate"] == 12.0
    assert "frame_rate" not in call_args(Args, [job], None, BY_NAME["wan"])
    capsys.readouterr()
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    assert main(["eval", "--model", str(model), "--configs", "baseline:2", "ltx2-512x768-7x", "--prompts",
                 str(prompts), "--out-dir", str(tmp_path / "eval")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ralu: error:")]
    assert len(errors) == 1 and "scores images" in errors[0] and "video model (ltx2)" in errors[0], errors
