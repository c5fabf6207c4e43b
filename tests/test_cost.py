"""The analytic cost model: the paper's TFLOPs table, and every formula against torch's
FLOP counter on full-size models built on the meta device (no memory, no weights)."""

import json

import pytest

from ralu_schedule import Layout, get_preset
from ralu_schedule.cost import MODELS, layout_cost
from ralu_schedule.cli import main


def baseline(steps, **kw):
    return layout_cost(Layout(steps=(steps,), ends=(1.0,)), "flux-dev", (1024, 1024), **kw)


def test_paper_table_flux_dev_1024():
    assert baseline(50).tflops == pytest.approx(2991.0, rel=0.01)
    assert baseline(7).tflops == pytest.approx(431.5, rel=0.01)
    c = layout_cost(get_preset("flux-dev-7x").layout, "flux-dev", (1024, 1024))
    assert c.tflops == pytest.approx(426.0, rel=0.01)
    assert c.speedup == pytest.approx(7.02, rel=0.01)
    assert c.baseline_tflops == pytest.approx(baseline(50).tflops)


def test_full_convention_50_steps():
    # the 3719.5 TFLOPs that other papers quote is the transformer's 50 forwards
    full = baseline(50, convention="full")
    assert full.transformer_tflops == pytest.approx(3719.5, rel=0.005)
    assert full.tflops > full.transformer_tflops


def test_per_step_figures():
    f = MODELS["flux-dev"].transformer.forward(4096, 512)
    assert f.total("full") / 1e12 == pytest.approx(74.4, rel=0.005)
    assert f.total("paper") / 1e12 == pytest.approx(59.5, rel=0.005)


def test_edge_decode_only_at_partial_transitions():
    c = layout_cost(get_preset("flux-dev-7x").layout)
    assert c.edge_decode_tflops[0] == pytest.approx(2.48, rel=0.01) and c.edge_decode_tflops[1] == 0.0
    assert [s.tokens for s in c.stages] == [1024, 1330, 4096]


def test_sd3_counts_guidance_twice():
    lay = Layout(steps=(28,), ends=(1.0,))
    c = layout_cost(lay, "sd3-medium", (1024, 1024))
    one = MODELS["sd3-medium"].transformer.forward(4096, 333).total("paper") / 1e12
    assert c.stages[0].tflops == pytest.approx(2 * 28 * one)


def test_bad_resolution_says_allowed_multiples():
    with pytest.raises(ValueError, match="multiples of 32 pixels for flux-dev"):
        layout_cost(get_preset("flux-dev-7x").layout, "flux-dev", (1000, 1024))
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        layout_cost(get_preset("flux-dev-7x").layout, "flux-dev", "1024by1024")
    with pytest.raises(ValueError, match="convention must be one of paper, full"):
        layout_cost(get_preset("flux-dev-7x").layout, convention="exact")
    with pytest.raises(ValueError, match="unknown model 'flux-pro'"):
        layout_cost(get_preset("flux-dev-7x").layout, "flux-pro")


def test_cost_cli_json(capsys):
    assert main(["cost", "flux-dev-7x", "--model", "flux-dev", "--resolution", "1024x1024", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"tflops", "baseline_tflops", "speedup", "convention", "stages", "text_encoding_tflops",
            "decode_tflops", "edge_decode_tflops"} <= set(d)
    assert d["convention"] == "paper" and set(d["stages"][0]) >= {"tokens", "steps", "tflops"}
    assert d["tflops"] == pytest.approx(426.0, rel=0.01)


def test_cost_cli_layout_and_errors(capsys):
    assert main(["cost", "--steps", "2", "3", "5", "--ends", "0.2", "0.3", "1.0", "--fractions", "0.1", "1.0",
                 "--convention", "full"]) == 0
    assert "predicted speed-up" in capsys.readouterr().out
    assert main(["cost", "flux-dev-7x", "--resolution", "1000x1000"]) == 2
    assert "multiples of 32" in capsys.readouterr().err


# -- against torch's counter ------------------------------------------------------------------
torch = pytest.importorskip("torch")
from tiny import counted  # noqa: E402


def _flux(guidance):
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(guidance_embeds=guidance)


def _sd3(name):
    from diffusers import SD3Transformer2DModel

    cfg = {"sd3-medium": dict(num_layers=24, num_attention_heads=24, pos_embed_max_size=192),
           "sd3.5-medium": dict(num_layers=24, num_attention_heads=24, pos_embed_max_size=384,
                                dual_attention_layers=tuple(range(13)), qk_norm="rms_norm"),
           "sd3.5-large": dict(num_layers=38, num_attention_heads=38, pos_embed_max_size=192,
                               qk_norm="rms_norm")}[name]
    heads = cfg["num_attention_heads"]
    with torch.device("meta"):
        return SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, out_channels=16,
                                     attention_head_dim=64, joint_attention_dim=4096,
                                     caption_projection_dim=heads * 64, pooled_projection_dim=2048, **cfg)


def meta(*shape):
    return torch.empty(*shape, device="meta")


@pytest.mark.parametrize("model", ["flux-dev", "flux-schnell"])
@pytest.mark.parametrize("tokens", [256, 1024, 4096])
def test_flux_transformer_against_flop_counter(model, tokens):
    spec = MODELS[model]
    tr = _flux(spec.transformer.guidance_embeds)
    T = spec.text_tokens
    kw = dict(hidden_states=meta(1, tokens, 64), encoder_hidden_states=meta(1, T, 4096),
              pooled_projections=meta(1, 768), timestep=meta(1), img_ids=torch.zeros(tokens, 3, device="meta"),
              txt_ids=torch.zeros(T, 3, device="meta"))
    if spec.transformer.guidance_embeds:
        kw["guidance"] = meta(1)
    full, linear = counted(lambda: tr(**kw))
    ours = spec.transformer.forward(tokens, T)
    assert ours.total("full") == pytest.approx(full, rel=0.005)
    assert ours.total("paper") == pytest.approx(linear, rel=0.005)


@pytest.mark.parametrize("model", ["sd3-medium", "sd3.5-medium", "sd3.5-large"])
@pytest.mark.parametrize("side", [32, 64, 96])
def test_sd3_transformer_against_flop_counter(model, side):
    spec = MODELS[model]
    tr = _sd3(model)
    T = spec.text_tokens
    run = lambda: tr(hidden_states=meta(1, 16, 2 * side, 2 * side), encoder_hidden_states=meta(1, T, 4096),  # noqa: E731
                     pooled_projections=meta(1, 2048), timestep=meta(1))
    full, linear = counted(run)
    ours = spec.transformer.forward(side * side, T)
    assert ours.total("full") == pytest.approx(full, rel=0.005)
    assert ours.total("paper") == pytest.approx(linear, rel=0.005)


@pytest.mark.parametrize("pixels", [512, 1024, 1536])
def test_vae_decoder_against_flop_counter(pixels):
    from diffusers import AutoencoderKL

    spec = MODELS["flux-dev"].vae
    with torch.device("meta"):
        vae = AutoencoderKL(latent_channels=16, block_out_channels=list(spec.channels),
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False)
    full, linear = counted(lambda: vae.decode(meta(1, 16, pixels // 8, pixels // 8)))
    ours = spec.decode(pixels, pixels)
    assert ours.total("full") == pytest.approx(full, rel=0.005)
    assert ours.total("paper") == pytest.approx(linear, rel=0.005)


def test_text_encoders_against_flop_counter():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from ralu_schedule.cost import CLIP_G_PROJ, CLIP_L, T5_XXL

    with torch.device("meta"):
        t5 = T5EncoderModel(T5Config(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                                     feed_forward_proj="gated-gelu"))
        clip_l = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                              num_attention_heads=12))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                            num_hidden_layers=32, num_attention_heads=20,
                                                            projection_dim=1280))
    ids = lambda n: torch.zeros(1, n, dtype=torch.long, device="meta")  # noqa: E731
    for model, spec, n in [(t5, T5_XXL, 512), (t5, T5_XXL, 256), (clip_l, CLIP_L, 77), (clip_g, CLIP_G_PROJ, 77)]:
        full, linear = counted(lambda: model(ids(n)))
        assert spec.forward(n).total("full") == pytest.approx(full, rel=0.005)
        assert spec.forward(n).total("paper") == pytest.approx(linear, rel=0.005)
