"""The cost model of the image-conditioned models (FLUX.1 Kontext, Qwen-Image-Edit and -2509, Wan
2.1 I2V 480p/720p, Wan 2.2 I2V A14B, Wan 2.2 TI2V-5B from an image): what encodes the
conditioning images (the VAE encoders, Wan 2.1 I2V's CLIP ViT-H/14, Qwen2.5-VL's vision tower)
and the Wan 2.1 I2V transformer's image cross-attention against torch's FLOP counter on the
full-size models built on the meta device; ``layout_cost`` with reference tokens in both
reference modes."""

import math
from dataclasses import replace

import pytest

from ralu_schedule import Layout, get_preset
from ralu_schedule.cost import (CLIP_VIT_H, MODELS, QWEN2_5_VL_VISION, QWEN_IMAGE_VAE, VAE_32, WAN21_VAE, WAN22_VAE,
                                format_cost, layout_cost)
from ralu_schedule.models import MODEL_INFO

CONDITIONED = ["flux-kontext-dev", "qwen-image-edit", "qwen-image-edit-2509", "wan2.1-i2v-14b-480p",
               "wan2.1-i2v-14b-720p", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b-i2v"]
REFERENCES = ["flux-kontext-dev", "qwen-image-edit", "qwen-image-edit-2509"]
ONE_STAGE = Layout(steps=(50,), ends=(1.0,))
SEVEN = get_preset("flux-dev-7x").layout          # stages at 1/2 (uniform), 1/2 (mixed), full resolution


def test_conditioned_models_are_known_everywhere():
    for name in CONDITIONED:
        spec = MODELS[name]
        assert name in MODEL_INFO and spec.diffusers_id and spec.notes, name
        assert MODEL_INFO[name].is_video == spec.is_video, name
        assert (spec.references is not None) == (name in REFERENCES), name


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_tokens_per_stage_in_both_modes(name):
    spec = MODELS[name]
    rows, cols = spec.reference_grid()
    assert (rows, cols) == (64, 64)                  # a 1024x1024 reference: 4096 tokens
    full = layout_cost(SEVEN, name, convention="full", references="full")
    stage = layout_cost(SEVEN, name, convention="full", references="stage")
    assert [s.reference_tokens for s in full.stages] == [4096] * 3 and full.baseline_stage.reference_tokens == 4096
    assert [s.reference_tokens for s in stage.stages] == [1024, 1024, 4096]
    for c in (full, stage):      # every call: the transformer on generated plus reference tokens, prompt and images
        for s in c.stages:
            ours = s.steps * spec.step(s.tokens, s.reference_tokens).total("full") / 1e12
            assert s.tflops == pytest.approx(ours)
        assert c.baseline_tflops == pytest.approx(full.baseline_tflops)   # the baseline is the stock run either way
        assert c.image_encoding_tflops * 1e12 == pytest.approx(QWEN_IMAGE_VAE.encode(1024, 1024).total("full")
                                                               if name != "flux-kontext-dev" else
                                                               spec.vae.encode(1024, 1024).total("full"))
    assert 1 < full.speedup < stage.speedup
    assert layout_cost(SEVEN, name).references == "full"                 # the default
    text = format_cost(stage)
    assert "references 'stage': reference tokens per call by stage 1024, 1024, 4096 (baseline 4096)" in text
    assert "image encoding" in text


def test_qwen_edit_prompts_carry_the_image_tokens():
    """Qwen-Image-Edit's transformer and text encoder see the reference's vision tokens: 1369 for
    a 1024x1024 image (37 x 37 merged patches of 28 pixels), two markers around them; Edit Plus
    shows Qwen2.5-VL 384x384 (14 x 14) after "Picture 1: "."""
    assert QWEN2_5_VL_VISION.resized(1024, 1024) == (1036, 1036) and QWEN2_5_VL_VISION.image_tokens(1024, 1024) == 1369
    assert QWEN2_5_VL_VISION.image_tokens(384, 384) == 196
    edit, plus = MODELS["qwen-image-edit"], MODELS["qwen-image-edit-2509"]
    assert edit.references.prompt_tokens(1) == 1371 and plus.references.prompt_tokens(2) == 2 * 203
    base = MODELS["qwen-image"]
    assert edit.step(4096).total() == base.transformer.forward(4096, base.text_tokens + 1371).total() * 2
    assert edit.step(4096, references=0).total() == base.step(4096).total()
    more = layout_cost(ONE_STAGE, "qwen-image-edit-2509", reference_images=3)
    assert more.stages[0].reference_tokens == 3 * 4096 and more.reference_images == 3


def test_image_encoders_are_counted_once_per_call():
    for name in ("wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p"):
        c = layout_cost(SEVEN, name)
        h, w = MODELS[name].default_resolution
        video = WAN21_VAE.encode(h, w, 81).total("paper") + CLIP_VIT_H.forward().total("paper")
        assert c.image_encoding_tflops * 1e12 == pytest.approx(video)
    c = layout_cost(SEVEN, "wan2.2-i2v-a14b")
    assert c.image_encoding_tflops * 1e12 == pytest.approx(WAN21_VAE.encode(480, 832, 81).total("paper"))
    c = layout_cost(SEVEN, "wan2.2-ti2v-5b-i2v", frames=121)
    assert c.image_encoding_tflops * 1e12 == pytest.approx(WAN22_VAE.encode(704, 1280, 1).total("paper"))
    t2v = layout_cost(SEVEN, "wan2.2-ti2v-5b", frames=121)
    assert c.transformer_tflops == pytest.approx(t2v.transformer_tflops)       # the same transformer's work


def test_reference_options_say_what_is_wrong():
    with pytest.raises(ValueError, match="flux-dev takes no reference images; the models that do: .*flux-kontext-dev"):
        layout_cost(SEVEN, "flux-dev", references="stage")
    with pytest.raises(ValueError, match="references must be one of full, stage, got 'half'"):
        layout_cost(SEVEN, "flux-kontext-dev", references="half")
    with pytest.raises(ValueError, match="reference images must be an integer >= 0, got -1"):
        layout_cost(SEVEN, "qwen-image-edit-2509", reference_images=-1)
    # FLUX.2 prices references only when asked (its pipelines make images from text by default)
    assert layout_cost(SEVEN, "flux2-dev").reference_images == 0
    assert layout_cost(SEVEN, "flux2-dev", reference_images=2, references="stage").stages[0].reference_tokens == 2048


def test_cli_prints_conditioned_costs(capsys):
    import json

    from ralu_schedule.cli import main

    assert main(["cost", "flux-dev-7x", "--model", "qwen-image-edit", "--references", "stage", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["references"] == "stage" and [s["reference_tokens"] for s in out["stages"]] == [1024, 1024, 4096]
    assert out["image_encoding_tflops"] > 0
    assert main(["cost", "flux-dev-7x", "--model", "flux-dev", "--references", "stage"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flux-dev takes no reference images" in err


# -- against torch's counter ------------------------------------------------------------------
torch = pytest.importorskip("torch")
from tiny import counted  # noqa: E402


def agrees(ours, fn, rel=0.005):
    full, linear, out = counted(fn, result=True)
    assert ours.total("full") == pytest.approx(full, rel=rel)
    assert ours.total("paper") == pytest.approx(linear, rel=rel)
    return out


def meta(*shape):
    return torch.empty(*shape, device="meta")


@pytest.mark.parametrize("pixels", [(256, 256), (384, 640)])
def test_image_vae_encoders_against_flop_counter(pixels):
    from diffusers import AutoencoderKL, AutoencoderKLFlux2

    h, w = pixels
    with torch.device("meta"):
        flux = AutoencoderKL(latent_channels=16, block_out_channels=[128, 256, 512, 512],
                             down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                             layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False)
        flux2 = AutoencoderKLFlux2(latent_channels=32, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                                   use_quant_conv=True, use_post_quant_conv=True)
    assert MODELS["flux-kontext-dev"].vae == MODELS["flux-dev"].vae
    agrees(MODELS["flux-kontext-dev"].vae.encode(h, w), lambda: flux.encode(meta(1, 3, h, w)))
    agrees(VAE_32.encode(h, w), lambda: flux2.encode(meta(1, 3, h, w)))


@pytest.mark.parametrize("which", ["wan2.1", "wan2.2"])
def test_video_vae_encoders_against_flop_counter(which):
    """Wan's VAEs (and Qwen-Image's, Wan 2.1's on one frame): the first frame, then chunks of 4."""
    from diffusers import AutoencoderKLWan

    config, spec = {"wan2.1": ({}, WAN21_VAE),
                    "wan2.2": (dict(base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12,
                                    is_residual=True, patch_size=2, scale_factor_spatial=16), WAN22_VAE)}[which]
    assert QWEN_IMAGE_VAE == WAN21_VAE
    with torch.device("meta"):
        vae = AutoencoderKLWan(**config)
    h, w = 64, 96
    for frames in (1, 5, 9):
        out = agrees(spec.encode(h, w, frames), lambda: vae.encode(meta(1, 3, frames, h, w)).latent_dist.mean)
        s = spec.downsampling
        assert tuple(out.shape) == (1, spec.z_dim, (frames - 1) // 4 + 1, h // s, w // s)


def test_clip_image_encoder_against_flop_counter():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with torch.device("meta"):    # Wan2.1-I2V-14B-*-Diffusers image_encoder/config.json
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                num_attention_heads=16, patch_size=14, image_size=224))
    out = agrees(CLIP_VIT_H.forward(), lambda: clip(pixel_values=meta(1, 3, 224, 224), output_hidden_states=True))
    assert out.hidden_states[-2].shape[1] == CLIP_VIT_H.image_tokens == 257


def test_qwen_vision_tower_against_flop_counter():
    """Qwen2.5-VL's vision encoder on the images the edit pipelines show it, windows cut by the
    image's edge included."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

    with torch.device("meta"):     # Qwen2.5-VL-7B's vision_config
        visual = Qwen2_5_VisionTransformerPretrainedModel(Qwen2_5_VLVisionConfig(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
            fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2))
    for size in [(384, 384), (448, 700)]:       # windows cut by the bottom and right edges, and by the right only
        h, w = QWEN2_5_VL_VISION.resized(*size)
        grid = torch.tensor([[1, h // 14, w // 14]])
        n = (h // 14) * (w // 14)
        # the index bookkeeping the model computes from the grid, done on the CPU (the meta device has no
        # values): positions and the window order moved to the model's device, the window lengths kept here
        window_index, windows = get_vision_window_index(grid, spatial_merge_size=2, window_size=112, patch_size=14)
        known = dict(position_ids=get_vision_position_ids(grid, 2).to("meta"), window_index=window_index.to("meta"),
                     cu_window_seqlens=windows)
        out = agrees(QWEN2_5_VL_VISION.forward(*size), lambda: visual(meta(n, 3 * 2 * 14 * 14), grid_thw=grid, **known))
        assert out.pooler_output.shape[0] == QWEN2_5_VL_VISION.image_tokens(*size)


def test_qwen_processor_sizes_are_qwen2_5_vls():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    for size in [(1024, 1024), (384, 384), (832, 1248), (40, 60), (5000, 3000)]:
        assert QWEN2_5_VL_VISION.resized(*size) == smart_resize(*size, factor=28, min_pixels=3136,
                                                                 max_pixels=12845056)


def test_wan_i2v_transformer_against_flop_counter():
    """Wan 2.1 I2V: 36 input channels and the 257 CLIP tokens in every block's cross-attention
    (Wan2.1-I2V-14B-*-Diffusers transformer/config.json)."""
    from diffusers import WanTransformer3DModel

    spec = MODELS["wan2.1-i2v-14b-480p"]
    with torch.device("meta"):
        tr = WanTransformer3DModel(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
                                   in_channels=36, out_channels=16, image_dim=1280, added_kv_proj_dim=5120)
    for F, h, w in [(1, 8, 8), (3, 6, 10)]:
        M = F * h * w
        out = agrees(spec.transformer.forward(M, 512),
                     lambda: tr(hidden_states=meta(1, 36, F, 2 * h, 2 * w), timestep=meta(1),
                                encoder_hidden_states=meta(1, 512, 4096),
                                encoder_hidden_states_image=meta(1, 257, 1280), return_dict=False)[0])
        assert tuple(out.shape) == (1, 16, F, 2 * h, 2 * w)
    assert MODELS["wan2.2-i2v-a14b"].transformer.image_tokens == 0
    assert math.isclose(MODELS["wan2.2-i2v-a14b"].transformer.forward(4096, 512).total(),
                        MODELS["wan2.1-t2v-14b"].transformer.forward(4096, 512).total()
                        + 2 * 4096 * (36 - 16) * 4 * 5120)          # only the patch embedding grows


def test_every_conditioned_model_has_presets_at_about_4x_and_7x_and_a_default():
    """Registered as the other families' (the analytic search's evidence label), each priced by
    the cost model at its speed-up against the model's stock run (references at full
    resolution, the default); ``RALU(pipe)`` finds the default by the pipeline's configs."""
    from ralu_schedule import DEFAULT_PRESETS, PRESETS
    from ralu_torch.backends.families import BY_NAME, default_preset

    for name in CONDITIONED:
        mine = {n: p for n, p in PRESETS.items() if p.model == name}
        assert DEFAULT_PRESETS[name] in mine and DEFAULT_PRESETS[name].endswith("-7x"), name
        for suffix, (lo, hi) in (("-7x", (6.3, 8.05)), ("-4x", (3.6, 4.6))):
            (key, p), = [(n, p) for n, p in mine.items() if n.endswith(suffix)]
            assert p.evidence == "analytic benchmark" and "preset_search.py --which" in p.evidence_note
            convention = "full" if p.frames > 1 else "paper"        # video presets: named with attention included
            c = layout_cost(p.layout, name, p.resolution, baseline_steps=MODEL_INFO[name].default_steps,
                            frames=p.frames if p.frames > 1 else None, convention=convention)
            assert lo <= c.speedup <= hi and f"{c.speedup:.2f}x" in p.description, (key, c.speedup)
    configs = {   # what ralu generate and RALU read before and after loading: the pipeline's class and its configs
        "flux-kontext-dev": ("flux", {"": {"_class_name": "FluxKontextPipeline"}}),
        "qwen-image-edit": ("qwen-image", {"": {"_class_name": "QwenImageEditPipeline"}}),
        "qwen-image-edit-2509": ("qwen-image", {"": {"_class_name": "QwenImageEditPlusPipeline"}}),
        "wan2.1-i2v-14b-480p": ("wan", {"": {"_class_name": "WanImageToVideoPipeline"},
                                        "transformer": {"in_channels": 36, "image_dim": 1280}}),
        "wan2.2-i2v-a14b": ("wan", {"": {"_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9},
                                    "transformer": {"in_channels": 36}}),
        "wan2.2-ti2v-5b-i2v": ("wan", {"": {"_class_name": "WanImageToVideoPipeline", "expand_timesteps": True},
                                       "transformer": {"in_channels": 48}}),
    }
    for model, (family, read) in configs.items():
        assert default_preset(BY_NAME[family], lambda sub: read.get(sub, {})) == DEFAULT_PRESETS[model], model


def test_wan_i2v_calls_are_priced_with_their_clip_image_tokens():
    """A Wan 2.1 I2V call's cross-attention also reads the CLIP image tokens: the per-stage
    TFLOPs RALU reports count them (as many as the call's image embeddings hold); Wan 2.2
    (no image embeddings) is priced as text-to-video."""
    from types import SimpleNamespace

    import torch

    from ralu_schedule.cost import WanSpec
    from ralu_torch.backends import backend_for
    from ralu_torch.testing import conditioned_pipeline

    be = backend_for(conditioned_pipeline("wan2.1-i2v"))
    embeds = torch.zeros(1, 5, be.transformer.config.image_dim)
    cond = SimpleNamespace(calls=2, text_tokens=7, image_embeds=embeds)
    plain = be.cost_spec()
    assert isinstance(plain, WanSpec) and plain.image_tokens == 0
    with_image = 2 * replace(plain, image_tokens=5, image_dim=embeds.shape[-1]).forward(48, 7).total("paper") / 1e12
    assert be.call_tflops(48, cond) == pytest.approx(with_image)
    assert be.call_tflops(48, cond) > be.call_tflops(48, SimpleNamespace(calls=2, text_tokens=7, image_embeds=None))
