"""The cost model of Wan 2.1 / 2.2 text-to-video: the transformer, the UMT5 encoder and both
video VAE decoders against torch's FLOP counter on the full-size models built on the meta
device (no memory, no weights), and ``layout_cost`` on clips (frames rule, stacked latent
frames, whole-clip decodes, attention's share)."""

import math

import pytest

from ralu_schedule import Layout, get_preset
from ralu_schedule.cost import (MODELS, QWEN_IMAGE_VAE, UMT5_XXL, WAN21_VAE, WAN22_VAE, CausalVAEDecoderSpec,
                                WanSpec, format_cost, layout_cost)
from ralu_schedule.models import MODEL_INFO

WAN = ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b"]
ONE_STAGE = Layout(steps=(50,), ends=(1.0,))
SEVEN = get_preset("flux-dev-7x").layout


def test_wan_models_are_video_models_with_cfg():
    assert set(WAN) <= set(MODELS) and set(WAN) <= set(MODEL_INFO)
    for name in WAN:
        spec, info = MODELS[name], MODEL_INFO[name]
        assert spec.is_video and info.is_video and info.family == spec.transformer.family == "wan", name
        assert spec.cfg_batches == 2 and spec.encoders == (UMT5_XXL,) and spec.text_tokens == 512, name
        assert spec.diffusers_id.startswith("Wan-AI/") and spec.diffusers_id.endswith("-Diffusers"), name
        assert spec.notes, name
        assert spec.default_frames == info.frames and spec.temporal == spec.vae.temporal == 4, name
        # pixels per token: the VAE's spatial factor times the transformer's 2x2 patch
        assert spec.transformer.pixels_per_token == 2 * spec.vae.downsampling, name
    # Wan 2.2 A14B: two experts of the 14B architecture, one per call
    assert MODELS["wan2.2-t2v-a14b"].transformer == MODELS["wan2.1-t2v-14b"].transformer
    assert MODELS["wan2.2-ti2v-5b"].vae == WAN22_VAE and MODELS["wan2.2-ti2v-5b"].transformer.expand_timesteps
    assert not any(MODELS[n].transformer.expand_timesteps for n in WAN[:3])
    assert all(s.is_video == MODEL_INFO[n].is_video for n, s in MODELS.items())   # the tables agree on video
    # the video models: Wan's text-to-video and image-to-video (tests/test_cost_conditioned.py), HunyuanVideo 1.5's
    # and LTX-2
    assert {n for n, s in MODELS.items() if s.is_video} == set(WAN) | {n for n in MODELS if "-i2v" in n} | {
        n for n in MODELS if n.startswith("hunyuanvideo1.5")} | {"ltx-2"}


# -- frames ----------------------------------------------------------------------------------
def test_frames_must_be_4k_plus_1():
    with pytest.raises(ValueError, match=r"frames must be 4k \+ 1 for wan2.1-t2v-14b .* got 80; "
                                         r"the nearest allowed are 77 and 81"):
        layout_cost(ONE_STAGE, "wan2.1-t2v-14b", (480, 832), frames=80)
    with pytest.raises(ValueError, match="nearest allowed are 1 and 5"):
        layout_cost(ONE_STAGE, "wan2.2-ti2v-5b", frames=2)
    with pytest.raises(ValueError, match="frames must be an integer >= 1, got 0"):
        layout_cost(ONE_STAGE, "wan2.1-t2v-14b", frames=0)
    with pytest.raises(ValueError, match="flux-dev is an image model: frames must be None or 1, got 81"):
        layout_cost(ONE_STAGE, "flux-dev", frames=81)
    assert layout_cost(ONE_STAGE, "flux-dev", frames=1).tflops == layout_cost(ONE_STAGE, "flux-dev").tflops


def test_latent_frames_and_defaults():
    spec = MODELS["wan2.1-t2v-14b"]
    for frames in (1, 5, 81):
        c = layout_cost(ONE_STAGE, spec, (480, 832), frames=frames)
        assert c.latent_frames == (frames - 1) // 4 + 1 and c.frames == frames
        assert spec.vae.frames(c.latent_frames) == frames
    d = layout_cost(ONE_STAGE, "wan2.2-ti2v-5b")
    assert (d.frames, d.resolution) == (MODELS["wan2.2-ti2v-5b"].default_frames, (704, 1280))
    assert layout_cost(ONE_STAGE, "wan2.1-t2v-14b").resolution == MODELS["wan2.1-t2v-14b"].default_resolution


def test_sizes_off_the_grid_are_refused():
    with pytest.raises(ValueError, match="multiples of 32 pixels for wan2.1-t2v-14b"):
        layout_cost(SEVEN, "wan2.1-t2v-14b", (720, 1280))     # 720p: 720 is not a multiple of 32
    with pytest.raises(ValueError, match="multiples of 64 pixels for wan2.2-ti2v-5b"):
        layout_cost(SEVEN, "wan2.2-ti2v-5b", (720, 1280))
    layout_cost(ONE_STAGE, "wan2.1-t2v-14b", (720, 1280))      # one stage: 16-pixel tokens suffice


# -- layouts on clips --------------------------------------------------------------------------
@pytest.mark.parametrize("name", WAN)
def test_one_stage_layout_is_the_baseline(name):
    for convention in ("paper", "full"):
        c = layout_cost(ONE_STAGE, name, convention=convention)
        assert c.tflops == pytest.approx(c.baseline_tflops) and c.speedup == pytest.approx(1.0)
        assert c.stages[0].attention_share == pytest.approx(c.baseline_attention_share)
        assert math.isfinite(c.tflops) and c.text_encoding_tflops > 0 and c.decode_tflops > 0


def test_clip_layout_stacks_latent_frames_and_decodes_the_clip():
    spec = MODELS["wan2.1-t2v-14b"]
    c = layout_cost(SEVEN, spec, (480, 832), frames=81, convention="full")
    rows, cols = spec.token_grid(480, 832, SEVEN.downsampling)
    assert [s.tokens for s in c.stages] == list(SEVEN.stage_tokens(21 * rows, cols))
    for s in c.stages:
        assert s.tflops * 1e12 == pytest.approx(s.steps * spec.step(s.tokens).total("full"))
        assert s.linear_tflops + s.attention_tflops == pytest.approx(s.tflops)
    assert c.decode_tflops * 1e12 == pytest.approx(WAN21_VAE.decode(480, 832, 21).total("full"))
    assert c.edge_decode_tflops[0] * 1e12 == pytest.approx(WAN21_VAE.decode(240, 416, 21).total("full"))
    assert c.edge_decode_tflops[1] == 0.0
    base = 50 * spec.step(21 * rows * cols).total("full") + spec.text_encoding().total("full")
    assert c.baseline_tflops * 1e12 == pytest.approx(base + WAN21_VAE.decode(480, 832, 21).total("full"))
    assert c.to_dict()["frames"] == 81 and "81 frames (21 latent)" in format_cost(c)


@pytest.mark.parametrize("name, shift", [("wan-480p-7x", 3.0), ("wan-480p-4x", 3.0), ("wan-720p-7x", 5.0),
                                         ("wan-720p-4x", 5.0)])
def test_video_presets_are_solved_on_the_flow_shift_they_were_searched_on(name, shift):
    """bench/preset_search.py searched each group on the model cards' fixed flow shift at its
    resolution (3 at 480p, 5 at 720p); the preset is solved on that one, not on the model's
    default rule (Wan 2.1 14B's is 5)."""
    from ralu_schedule import preset

    assert get_preset(name).shift == shift
    assert preset(name).layout.base_shift == shift
    assert preset(name, "optimised").layout.base_shift == shift


def test_attention_share_grows_with_resolution_and_frames():
    def share(res, frames=81):
        return layout_cost(ONE_STAGE, "wan2.1-t2v-14b", res, frames=frames).baseline_attention_share

    assert share((480, 832), 9) < share((480, 832)) < share((704, 1280))
    c = layout_cost(SEVEN, "wan2.1-t2v-14b", (704, 1280))
    assert c.stages[0].attention_share < c.stages[1].attention_share < c.stages[2].attention_share
    assert c.attention_share < c.baseline_attention_share
    # quadratic attention: the full convention's speed-up beats the paper convention's on video
    assert layout_cost(SEVEN, "wan2.1-t2v-14b", (704, 1280), convention="full").speedup > c.speedup


def test_vae_specs_say_what_is_wrong():
    with pytest.raises(ValueError, match="latent frames must be an integer >= 1, got 0"):
        WAN21_VAE.decode(480, 832, 0)
    with pytest.raises(ValueError, match="an image VAE .* latent_frames must be 1, got 3"):
        MODELS["flux-dev"].vae.decode(1024, 1024, 3)
    with pytest.raises(ValueError, match="layers must be an integer >= 1, got 0"):
        WanSpec(layers=0, heads=12, head_dim=128, ffn=8960)
    assert QWEN_IMAGE_VAE == WAN21_VAE and isinstance(WAN22_VAE, CausalVAEDecoderSpec)


# -- against torch's counter ------------------------------------------------------------------
torch = pytest.importorskip("torch")
from tiny import counted  # noqa: E402
from ralu_torch.testing import FULL_TRANSFORMERS  # noqa: E402

# The published diffusers configs (Wan-AI/*-Diffusers transformer/config.json, as diffusers'
# scripts/convert_wan_to_diffusers.py writes them); the rest are WanTransformer3DModel's defaults
# (patch (1, 2, 2), text_dim 4096, freq_dim 256).
WAN_TRANSFORMERS = {
    "wan2.1-t2v-1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
                            in_channels=16, out_channels=16),
    "wan2.1-t2v-14b": FULL_TRANSFORMERS["wan2.1-t2v-14b"],           # what bench/latency.py --model full builds
    "wan2.2-ti2v-5b": dict(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30,
                           in_channels=48, out_channels=48),
}
# AutoencoderKLWan: Wan 2.1's VAE is the class's defaults; Wan 2.2's, Wan2.2-TI2V-5B-Diffusers vae/config.json
WAN_VAES = {"wan2.1": ({}, WAN21_VAE),
            "wan2.2": (dict(base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12,
                            is_residual=True, patch_size=2, scale_factor_spatial=16), WAN22_VAE)}


def agrees(ours, fn, rel=0.005):
    full, linear, out = counted(fn, result=True)
    assert ours.total("full") == pytest.approx(full, rel=rel)
    assert ours.total("paper") == pytest.approx(linear, rel=rel)
    assert ours.attention > 0
    return out


def meta(*shape):
    return torch.empty(*shape, device="meta")


def one_row_grid(tokens, limit=1024):
    """A (1, rows, cols) token grid of exactly ``tokens`` tokens, both sides within the rotary table."""
    rows = max(r for r in range(1, math.isqrt(tokens) + 1) if tokens % r == 0)
    assert tokens // rows <= limit, f"{tokens} tokens have no grid with sides <= {limit}"
    return 1, rows, tokens // rows


@pytest.mark.parametrize("name", list(WAN_TRANSFORMERS))
def test_transformer_against_flop_counter(name):
    from diffusers import WanTransformer3DModel

    spec = MODELS[name]
    with torch.device("meta"):
        tr = WanTransformer3DModel(**WAN_TRANSFORMERS[name])
    C, T = tr.config.in_channels, spec.text_tokens
    # a one-frame grid, a three-frame one, and the mixed stage of the 7x layout on the model's stock clip
    rows, cols = spec.token_grid(*spec.default_resolution, SEVEN.downsampling)
    mixed = SEVEN.stage_tokens(spec.latent_frames() * rows, cols)[1]
    grids = [(1, 8, 8), (3, 6, 10), one_row_grid(mixed)]
    if name == "wan2.1-t2v-14b":
        grids.append((21, 44, 80))    # 704x1280, 81 frames: 73920 tokens
    for F, h, w in grids:
        M = F * h * w
        timestep = meta(1, M) if spec.transformer.expand_timesteps else meta(1)   # the pipeline's shapes
        out = agrees(spec.transformer.forward(M, T),
                     lambda: tr(hidden_states=meta(1, C, F, 2 * h, 2 * w), timestep=timestep,
                                encoder_hidden_states=meta(1, T, 4096), return_dict=False)[0])
        assert tuple(out.shape) == (1, C, F, 2 * h, 2 * w)


@pytest.mark.parametrize("which", list(WAN_VAES))
def test_video_vae_decoder_against_flop_counter(which):
    from diffusers import AutoencoderKLWan

    config, spec = WAN_VAES[which]
    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
    assert spec.downsampling == vae.config.scale_factor_spatial and spec.temporal == vae.config.scale_factor_temporal
    height, width = 64, 96
    s = spec.downsampling
    for n in (1, 2, 5):
        out = agrees(spec.decode(height, width, n),
                     lambda: vae.decode(meta(1, spec.z_dim, n, height // s, width // s), return_dict=False)[0])
        assert tuple(out.shape) == (1, 3, spec.frames(n), height, width)


def test_umt5_encoder_against_flop_counter():
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):   # google/umt5-xxl's encoder
        enc = UMT5EncoderModel(UMT5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                                          feed_forward_proj="gated-gelu", vocab_size=256384))
    n = UMT5_XXL.sequence(MODELS["wan2.1-t2v-14b"].t5_tokens)
    agrees(UMT5_XXL.forward(n), lambda: enc(torch.zeros(1, n, dtype=torch.long, device="meta")))
