"""The cost model of FLUX.2, Qwen-Image, Z-Image and Chroma: each transformer, text encoder
and VAE decoder formula against torch's FLOP counter on the full-size model built on the
meta device (no memory, no weights), and every model priced by ``layout_cost``."""

import math

import pytest

from ralu_schedule import Layout
from ralu_schedule.cost import (MISTRAL_SMALL_3_1, MODELS, QWEN2_5_VL_7B, QWEN3_4B, QWEN3_4B_ZIMAGE, QWEN3_8B,
                                QWEN_IMAGE_VAE, VAE_32, Flux2Spec, TransformerSpec, layout_cost)

NEW = ["flux2-dev", "flux2-klein-4b", "flux2-klein-9b", "flux2-klein-base-4b", "flux2-klein-base-9b",
       "qwen-image", "z-image-turbo", "z-image", "chroma"]
ONE_STAGE = Layout(steps=(50,), ends=(1.0,))


def test_every_model_prices_a_50_step_layout():
    # video models (Wan) price a clip of their default frame count; tests/test_cost_wan.py covers them
    for name, spec in MODELS.items():
        c = layout_cost(ONE_STAGE, name, (1024, 1024))
        assert math.isfinite(c.tflops) and c.tflops > 0, name
        assert c.tflops == pytest.approx(c.baseline_tflops), name
        assert c.text_encoding_tflops > 0 and c.decode_tflops > 0, name
        assert c.frames == spec.default_frames, name
        # a token is the transformer's 2x2 patch of latent pixels: 16 pixels with the 8x VAEs (most image
        # models), 32 with Wan 2.2's 16x VAE; one latent pixel of a 16x VAE (patch 1: HunyuanVideo 1.5,
        # Qwen-Image 2.1)
        assert spec.transformer.pixels_per_token == getattr(spec.transformer, "patch", 2) * spec.vae.downsampling, name
        assert spec.transformer.pixels_per_token == 16 or spec.is_video, name


def test_text_tokens_override_changes_every_model():
    for name, spec in MODELS.items():
        default, longer = (layout_cost(ONE_STAGE, name, (1024, 1024), text_tokens=n)
                           for n in (None, max(700, 2 * spec.t5_tokens, spec.t5_tokens + 200)))   # LTX-2's default is 1024
        assert longer.stages[0].tflops > default.stages[0].tflops, name
        assert longer.text_encoding_tflops > default.text_encoding_tflops, name


def test_new_models_and_families():
    assert set(NEW) <= set(MODELS)
    assert {MODELS[n].transformer.family for n in NEW} == {"flux2", "qwen-image", "z-image", "chroma"}
    assert all(MODELS[n].diffusers_id and MODELS[n].notes for n in NEW)
    assert [MODELS[n].cfg_batches for n in NEW] == [1, 1, 1, 2, 2, 2, 1, 2, 2]


def test_encoder_sequences_follow_the_prompt():
    # padded to max_sequence_length and seen whole; the system prefix dropped; padded then dropped
    assert QWEN3_8B.sequence(512) == 512 and QWEN3_8B.sequence(300) == 300
    assert QWEN2_5_VL_7B.sequence(133) == 167
    assert QWEN3_4B_ZIMAGE.sequence(136) == 512 and QWEN3_4B_ZIMAGE.sequence(600) == 600


def test_z_image_pads_image_and_caption_to_32():
    z = MODELS["z-image"].transformer
    assert z.forward(1089, 136) == z.forward(1120, 160)
    assert z.forward(1120, 160).total() < z.forward(1121, 160).total()


def test_specs_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown transformer family 'flux2'; TransformerSpec is one of flux, sd3"):
        TransformerSpec(family="flux2", double=8, heads=48, head_dim=128)
    with pytest.raises(ValueError, match="heads must be an integer >= 1, got 0"):
        Flux2Spec(double=8, single=48, heads=0, head_dim=128)


# -- against torch's counter ------------------------------------------------------------------
torch = pytest.importorskip("torch")
from tiny import counted  # noqa: E402

from ralu_torch.testing import FULL_TRANSFORMERS  # noqa: E402


def agrees(ours, fn, rel=0.005):
    full, linear = counted(fn)
    assert ours.total("full") == pytest.approx(full, rel=rel)
    assert ours.total("paper") == pytest.approx(linear, rel=rel)


def meta(*shape):
    return torch.empty(*shape, device="meta")


def ids(n, axes):
    return torch.zeros(n, axes, device="meta")


#: the diffusers class of each family's transformer checked here
CLASSES = {"flux2": "Flux2Transformer2DModel", "qwen-image": "QwenImageTransformer2DModel",
           "z-image": "ZImageTransformer2DModel", "chroma": "ChromaTransformer2DModel"}
# Wan: test_cost_wan.py; HunyuanVideo 1.5, Qwen-Image 2.1 and LTX-2: their own test files (their calls differ)
CONFIGS = {k: v for k, v in FULL_TRANSFORMERS.items() if MODELS[k].transformer.family in CLASSES}


def build(model):
    """The full-size transformer on the meta device, and a call ``run(h, w, text_tokens)``
    on an ``h x w`` grid of image tokens, as its pipeline makes it."""
    import diffusers

    family = MODELS[model].transformer.family
    with torch.device("meta"):
        tr = getattr(diffusers, CLASSES[family])(**CONFIGS[model])
    c = tr.config

    def run(h, w, T):
        if family == "z-image":  # lists of per-image latents (C, frames, H, W) and of caption features
            return tr([meta(c.in_channels, 1, 2 * h, 2 * w)], meta(1), [meta(T, c.cap_feat_dim)])
        kw = dict(hidden_states=meta(1, h * w, c.in_channels), encoder_hidden_states=meta(1, T, c.joint_attention_dim),
                  timestep=meta(1))
        if family == "qwen-image":
            return tr(**kw, img_shapes=[(1, h, w)])
        if getattr(c, "guidance_embeds", False):
            kw["guidance"] = meta(1)
        axes = len(c.axes_dims_rope)   # position ids: FLUX.2 4 axes, Chroma 3
        return tr(**kw, img_ids=ids(h * w, axes), txt_ids=ids(T, axes))

    return run


# one model per architecture; grids of 16x16, 33x33 (1089 tokens: Z-Image pads them to 1120) and 64x64
@pytest.mark.filterwarnings("ignore:`FluxPosEmbed` is deprecated:FutureWarning")
@pytest.mark.parametrize("model", list(CONFIGS))
def test_transformer_against_flop_counter(model):
    spec = MODELS[model]
    run = build(model)
    for side in (16, 33, 64):
        agrees(spec.transformer.forward(side * side, spec.text_tokens), lambda: run(side, side, spec.text_tokens))


# the published text-encoder configs: the language models of Mistral-Small-3.1-24B, Qwen3-4B,
# Qwen3-8B and Qwen2.5-VL-7B
MISTRAL = dict(hidden_size=5120, intermediate_size=32768, num_hidden_layers=40, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, vocab_size=131072)
QWEN3 = {"4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=151936),
         "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=151936)}
QWEN2_5_VL = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064)


def test_text_encoders_against_flop_counter():
    from transformers import (MistralConfig, Mistral3Config, Mistral3ForConditionalGeneration, Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration, Qwen3Config, Qwen3ForCausalLM, Qwen3Model)

    with torch.device("meta"):  # the class each pipeline loads, on the sequence it runs by default
        cases = [("flux2-dev", MISTRAL_SMALL_3_1,
                  Mistral3ForConditionalGeneration(Mistral3Config(text_config=MistralConfig(**MISTRAL)))),
                 ("flux2-klein-4b", QWEN3_4B, Qwen3ForCausalLM(Qwen3Config(**QWEN3["4b"]))),
                 ("flux2-klein-9b", QWEN3_8B, Qwen3ForCausalLM(Qwen3Config(**QWEN3["8b"]))),
                 ("z-image", QWEN3_4B_ZIMAGE, Qwen3Model(Qwen3Config(**QWEN3["4b"]))),
                 ("qwen-image", QWEN2_5_VL_7B,
                  Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=QWEN2_5_VL)))]
    for name, spec, model in cases:
        assert MODELS[name].encoders == (spec,)
        n = spec.sequence(MODELS[name].t5_tokens)
        agrees(spec.forward(n), lambda: model(input_ids=torch.zeros(1, n, dtype=torch.long, device="meta")))


@pytest.mark.parametrize("pixels", [512, 1024])
def test_vae_decoders_against_flop_counter(pixels):
    from diffusers import AutoencoderKLFlux2, AutoencoderKLQwenImage

    with torch.device("meta"):
        flux2_vae = AutoencoderKLFlux2(latent_channels=32, block_out_channels=[128, 256, 512, 512],
                                       layers_per_block=2, use_quant_conv=True, use_post_quant_conv=True)
        qwen_vae = AutoencoderKLQwenImage(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                          attn_scales=[], temperal_downsample=[False, True, True])
    assert {MODELS[n].vae for n in NEW} == {VAE_32, QWEN_IMAGE_VAE, MODELS["flux-dev"].vae}
    s = pixels // 8
    agrees(VAE_32.decode(pixels, pixels), lambda: flux2_vae.decode(meta(1, 32, s, s)))
    agrees(QWEN_IMAGE_VAE.decode(pixels, pixels), lambda: qwen_vae.decode(meta(1, 16, 1, s, s)))
