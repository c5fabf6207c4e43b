"""RALU for Qwen-Image 2.1 on a tiny random QwenImage21Pipeline (ralu_torch.testing.qwenimage21_pipeline):

- a one-stage layout solved at call time is the stock pipeline (1e-5, float32, CPU) at two sizes,
  batch 2, without guidance (the default) and with true CFG, with the text's keys and values
  cached (the default) and without; its sigmas are the pipeline's own (dynamic mu, the grid
  stretched to end at 0.02);
- a 3-stage layout at batch 2 with a mixed stage: finite, the right shape, the stock number of
  transformer calls per step, no host synchronisation in a stage;
- mixed-token rotary tables are the model's own at each token's resolution;
- tokens of one latent pixel: upsampling and the mixed stage's estimate keep channels apart;
- RGBA images, as the pipeline's; refusals by name (condition images, Turbo's sample_sigmas, settings it does not take).
"""

import numpy as np
import pytest
import torch

from ralu_schedule import Layout
from ralu_torch import RALU
from ralu_torch.backends import backend_for
from ralu_torch.testing import qwenimage21_pipeline, tiny_inputs
from ralu_torch.tokens import TokenSet, paint_full, pooled_latent, upsample_mode

ONE_STAGE = Layout(steps=(4,), ends=(1.0,))
MIXED = Layout(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))


@pytest.fixture(scope="module")
def pipe():
    return qwenimage21_pipeline()


def gens(n=2):
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.mark.parametrize("guided, runs", [(False, [(128, 128, True), (64, 96, False)]),
                                          (True, [(64, 96, True), (128, 128, False)])])
def test_one_stage_layout_is_the_stock_pipeline(pipe, guided, runs):
    inputs = tiny_inputs(pipe, 2, guided=guided)
    ralu = RALU(pipe, ONE_STAGE)
    for height, width, cache in runs:
        stock = pipe(**inputs, height=height, width=width, num_inference_steps=4, generator=gens(),
                     use_kv_cache=cache, output_type="latent").images
        ours = ralu(**inputs, height=height, width=width, generator=gens(), use_kv_cache=cache, output_type="latent")
        assert ours.images.shape == stock.shape == (2, height // 16 * width // 16, 8)
        assert (ours.images - stock).abs().max() < 1e-5, (guided, height, width, cache)


def test_a_one_stage_layout_solved_at_call_time_is_the_stock_schedule(pipe):
    from diffusers.pipelines.qwenimage21.pipeline_qwenimage21 import calculate_shift, retrieve_timesteps

    cfg = pipe.scheduler.config
    for height, width, steps in [(1024, 1024, 40), (512, 768, 9)]:
        tokens = height // 16 * width // 16
        mu = calculate_shift(tokens, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
        sched = type(pipe.scheduler).from_config(cfg)
        retrieve_timesteps(sched, steps, "cpu", sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        ours = RALU(pipe, Layout(steps=(steps,), ends=(1.0,))).schedule_for(height, width).plan.stages[0].sigmas
        np.testing.assert_allclose(ours, sched.sigmas.double().numpy(), atol=1e-6)
        assert sched.sigmas[-2] == pytest.approx(0.02, abs=1e-6)              # shift_terminal


def _image_calls(pipe):
    """Transformer calls that denoise image tokens (the text prefix, stored once, has none)."""
    calls = []
    pipe.transformer.img_in.register_forward_hook(
        lambda m, args, out: calls.append(args[0].shape[:2]) if args[0].shape[1] else None)
    return calls


def test_a_mixed_layout_makes_the_stock_calls_per_step_and_rgba_images(watched_steps):
    """True CFG: two calls a step, each of the batch, as the pipeline; RALU's images are RGBA, as
    the pipeline's (its VAE decodes four channels). Non-finite latents would raise."""
    pipe = qwenimage21_pipeline()                     # its own: hooks
    inputs = tiny_inputs(pipe, 2, guided=True)
    calls = _image_calls(pipe)
    stock = pipe(**inputs, height=64, width=64, num_inference_steps=2, generator=gens()).images
    per_step = len(calls) / 2
    assert per_step == 2 and {b for b, _ in calls} == {2}
    calls.clear()
    out = RALU(pipe, MIXED)(**inputs, height=128, width=96, generator=gens())
    assert [im.mode for im in out.images] == [im.mode for im in stock] == ["RGBA"] * 2
    assert out.images[0].size == (96, 128)
    assert len(calls) == per_step * MIXED.total_steps and {b for b, _ in calls} == {2}
    tokens = [n for _, n in calls]
    assert tokens == [n for n, k in zip(out.stage_tokens, MIXED.steps) for _ in range(int(per_step) * k)]
    assert 12 < out.stage_tokens[1] < 48                                 # the mixed stage
    assert watched_steps == [[], [], []]                                  # no host read inside a stage


def test_mixed_tokens_get_the_models_rotary_tables(pipe):
    be = backend_for(pipe)
    cond = be.encode(prompt=None, num_images_per_prompt=1, max_sequence_length=None, guidance_scale=None,
                     joint_attention_kwargs=None, device=torch.device("cpu"), **tiny_inputs(pipe, 2))
    tokens = TokenSet.regular(2, (8, 8), 2)
    mask = torch.zeros(2, tokens.length, dtype=torch.bool)
    mask[0, [0, 5]] = mask[1, [6, 9]] = True                              # different blocks per image
    mixed, _, _ = tokens.upsample(mask, 2)
    T = cond.positive.prompt_embeds.shape[1]
    text, image = be.prepare(mixed, cond).tables[T]
    ours = image.table                                                    # (B, L, D/2) complex
    rope = pipe.transformer.pos_embed
    layout = lambda n: torch.cat([torch.zeros(T, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])  # noqa: E731
    coarse = rope([(1, 4, 4)], layout(16), device="cpu")                  # the model's table of the coarse frame
    assert torch.equal(text, coarse[:T])
    stock = coarse[T:].view(4, 4, -1)
    half = ours.shape[-1]
    frame = rope.axes_dim[0] // 2
    for b in range(2):
        for i in range(mixed.length):
            r, c = mixed.cells[b, i].tolist()
            if int(mixed.size[b, i]) == 2:                                # a coarse token: the stock entry, exactly
                assert torch.equal(ours[b, i], stock[r // 2, c // 2])
            else:                                                         # a child: halfway between its neighbours
                r0, c0 = r // 2, c // 2
                r1, c1 = min(r0 + r % 2, 3), min(c0 + c % 2, 3)
                if (r % 2 and r0 == 3) or (c % 2 and c0 == 3):
                    continue                                              # its neighbour lies outside the frame
                torch.testing.assert_close(ours[b, i] ** 2, stock[r0, c0] * stock[r1, c1], rtol=0, atol=1e-5)
                assert torch.equal(ours[b, i, :frame], stock[r0, c0, :frame])   # the frame axis: the text's end
    assert half == sum(rope.axes_dim) // 2


def test_one_pixel_tokens_keep_their_channels():
    """A token of one latent pixel (``patch`` 1): upsampling copies it whole, painting it covers its
    cells with its own values, and the mixed stage's coarse estimate is each channel's mean over the
    cells (the 2x2 form of ralu_torch.tokens would mix a token's channels as sub-pixels)."""
    assert upsample_mode("latent", 1) == "token" and upsample_mode("latent", 2) == "latent"
    g = torch.Generator().manual_seed(0)
    tokens = TokenSet.regular(1, (4, 4), 2)
    mixed, _, _ = tokens.upsample(torch.tensor([[True, False, False, True]]), 2)
    F = 8
    x = torch.randn(1, mixed.length, F, generator=g)
    full = paint_full(x, mixed, patch=1).view(1, 4, 4, F)
    for i in range(mixed.length):
        r, c = mixed.cells[0, i].tolist()
        s = int(mixed.size[0, i])
        assert torch.equal(full[0, r:r + s, c:c + s], x[0, i].expand(s, s, F))
    pooled = pooled_latent(x, mixed, 2, patch=1)                          # RALU's 2x2 form, for decode
    from ralu_torch.tokens import pack

    expected = full.view(1, 2, 2, 2, 2, F).mean(dim=(2, 4)).reshape(1, 4, F)
    torch.testing.assert_close(pack(pooled), expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image=np.zeros((32, 32, 3), dtype=np.uint8)), "RALU does not take image= with QwenImage21Pipeline: condition"),
    (dict(output_resolution=512), "RALU does not take output_resolution= .* give height and width"),
    (dict(guidance_scale=4.0), "QwenImage21Pipeline takes no guidance_scale"),
    (dict(max_sequence_length=64), "QwenImage21Pipeline takes no max_sequence_length"),
    (dict(true_cfg_scale=4.0), "true_cfg_scale 4 on Qwen-Image 2.1 needs a negative prompt"),
    (dict(negative_prompt_embeds=torch.zeros(1, 8, 32), true_cfg_scale=1.0), "needs true_cfg_scale > 1"),
    (dict(use_kv_cache="yes"), "use_kv_cache must be True or False"),
])
def test_what_qwen_image_21_does_not_take_is_refused_by_name(pipe, kwargs, message):
    inputs = {**tiny_inputs(pipe, 1), **kwargs}
    with pytest.raises(ValueError, match=message):
        RALU(pipe, ONE_STAGE)(**inputs, height=64, width=64, output_type="latent")


def test_turbo_grids_and_other_processors_are_refused_by_name(pipe):
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21FlexAttnProcessor

    turbo = qwenimage21_pipeline()
    turbo.register_to_config(sample_sigmas=[1.0, 0.9, 0.5])
    with pytest.raises(ValueError, match="samples on its configured sample_sigmas"):
        RALU(turbo, ONE_STAGE)
    flex = qwenimage21_pipeline()
    flex.transformer.set_attn_processor(QwenImage21FlexAttnProcessor())
    with pytest.raises(ValueError, match="default QwenImage21AttnProcessor, .* QwenImage21FlexAttnProcessor"):
        RALU(flex, ONE_STAGE)


# -- the cost model against torch's FLOP counter, on the published model built on the meta device ----
def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_cost_of_a_call_and_of_the_prefix_against_the_flop_counter():
    """Qwen/Qwen-Image-2.1's transformer (its config: the class's defaults; 7,115,124,736
    parameters, as the checkpoint's index counts them): a cached call (the image tokens against the
    stored text, plus the text projection the pipeline repeats each call), a whole-sequence call,
    and the first call's extra (``prefix``). Built with 2 of its 32 identical blocks (building all
    32 is most of the test's time): the parameters are counted with the other 30 added block by
    block, the spec priced at 2 layers."""
    import dataclasses

    import diffusers
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache
    from tiny import counted

    from ralu_schedule.cost import MODELS, QwenImage21Spec
    from ralu_torch.backends.qwenimage21 import Prefix, QwenImage21Branch, forward_tokens

    with torch.device("meta"):
        tr = diffusers.QwenImage21Transformer2DModel(num_layers=2)
    block = sum(p.numel() for p in tr.transformer_blocks[0].parameters())
    assert sum(p.numel() for p in tr.parameters()) + 30 * block == 7_115_124_736
    assert MODELS["qwen-image-2.1"].transformer.layers == 32
    spec = dataclasses.replace(MODELS["qwen-image-2.1"].transformer, layers=2)
    whole = QwenImage21Spec(layers=2, heads=32, head_dim=128, kv_cache=False)
    T = MODELS["qwen-image-2.1"].text_tokens
    branch = QwenImage21Branch(_meta(1, T, 4096), None, Prefix(QwenImage21KVCache(2)))
    text = _meta(T, 64, dtype=torch.complex64)
    forward_tokens(tr, _meta(1, 0, 64), _meta(1), branch, (text, text[:0]), "extract")    # the stored prefix
    for h, w in [(16, 16), (33, 31)]:
        M = h * w
        image = _meta(M, 64, dtype=torch.complex64)
        run = lambda mode: forward_tokens(tr, _meta(1, M, 64), _meta(1), branch, (text, image), mode)  # noqa: E731
        full, linear = counted(lambda: (run("cached"), tr.txt_in(branch.prompt_embeds)))
        assert (full, linear) == pytest.approx((spec.forward(M, T).total("full"), spec.forward(M, T).total("paper")))
        full, linear = counted(lambda: (run(None), tr.proj_out(_meta(1, T, 4096))))   # the pipeline's output on all
        assert (full, linear) == pytest.approx((whole.forward(M, T).total("full"), whole.forward(M, T).total("paper")))
        assert spec.prefix(T).total() == pytest.approx(whole.forward(M, T).total() - spec.forward(M, T).total())


def test_cost_of_the_text_encoder_and_vae_against_the_flop_counter():
    """Qwen3-VL-8B (its language model's config; with the vision tower, 8,767,123,696 parameters, the
    checkpoint's count) on the prompt in the template, and the RGBA image decoder."""
    import diffusers
    from tiny import counted
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from ralu_schedule.cost import MODELS, QWEN3_VL_8B, QWEN_IMAGE_21_VAE, TransformerPrefix

    text = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936)
    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  deepstack_visual_indexes=[8, 16, 24])
    with torch.device("meta"):
        encoder = Qwen3VLForConditionalGeneration(Qwen3VLConfig(text_config=text, vision_config=vision,
                                                                tie_word_embeddings=False))
        vae = diffusers.AutoencoderKLQwenImage21()
    assert sum(p.numel() for p in encoder.parameters()) == 8_767_123_696
    spec = MODELS["qwen-image-2.1"]
    assert spec.encoders == (QWEN3_VL_8B, TransformerPrefix(spec.transformer)) and spec.vae == QWEN_IMAGE_21_VAE
    n = QWEN3_VL_8B.sequence(spec.t5_tokens)                      # the prompt, its template, the system prefix
    full, linear = counted(lambda: encoder(input_ids=torch.zeros(1, n, dtype=torch.long, device="meta")))
    expected = QWEN3_VL_8B.forward(n)
    assert (full, linear) == pytest.approx((expected.total("full"), expected.total("paper")))
    for pixels in (512, 1024):
        s = pixels // 16
        full, linear = counted(lambda: vae.decode(_meta(1, 64, 1, s, s)))
        expected = QWEN_IMAGE_21_VAE.decode(pixels, pixels)
        assert (full, linear) == pytest.approx((expected.total("full"), expected.total("paper")))
    with pytest.raises(ValueError, match="an image VAE .AutoencoderKLQwenImage21. decodes one frame"):
        QWEN_IMAGE_21_VAE.decode(512, 512, 2)


def test_the_presets_cost_what_they_say():
    from ralu_schedule import get_preset, preset
    from ralu_schedule.cost import layout_cost

    for name, speed in [("qwen-image-2.1-7x", 6.31), ("qwen-image-2.1-4x", 3.69)]:
        p = get_preset(name)
        assert p.evidence == "analytic benchmark" and f"{speed:.2f}x" in p.description
        assert layout_cost(p.layout, "qwen-image-2.1", baseline_steps=40).speedup == pytest.approx(speed, abs=0.005)
    assert preset("qwen-image-2.1-7x").layout.terminal == 0.02       # solved on the pipeline's own grid end (one
    #                                                                   solve: a terminal's solve takes seconds)


# -- ralu generate and ralu eval ------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny QwenImage21Pipeline with a tiny Qwen3-VL, saved (its configs are what ralu reads
    first), and the pipeline itself: loading it back needs torchvision (Qwen3VLProcessor's video
    processor), which this environment lacks, so the tests hand it over in place of loading."""
    path = tmp_path_factory.mktemp("tiny-qwenimage21")
    pipe = qwenimage21_pipeline(text=True)
    pipe.save_pretrained(path)
    return path, pipe


@pytest.fixture
def loads(saved, monkeypatch):
    from diffusers import DiffusionPipeline

    path, pipe = saved
    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(lambda cls, model, **kw: pipe))
    return path


def test_generate_makes_rgba_images_with_the_familys_default_preset(loads, tmp_path, capsys):
    import json

    from PIL import Image

    from ralu_torch.cli import main
    from ralu_torch.generation.plan import model_family as _family

    family, variant = _family(str(loads))
    assert (family.name, variant) == ("qwen-image-2.1", "qwen-image-2.1")
    out = tmp_path / "out"
    assert main(["generate", "--model", str(loads), "--prompt", "a red cat", "--negative-prompt", "blurry",
                 "--true-cfg", "3", "--num-images", "2", "--height", "128", "--width", "64", "--device", "cpu",
                 "--out-dir", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [x["preset"] for x in lines] == ["qwen-image-2.1-7x"] * 2 and lines[0]["negative_prompt"] == "blurry"
    with Image.open(out / lines[0]["file"]) as im:
        assert im.mode == "RGBA" and im.size == (64, 128)
    capsys.readouterr()
    assert main(["generate", "--model", str(loads), "--prompt", "a", "--negative-prompt", "blurry", "--height",
                 "64", "--width", "64", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "a negative prompt on Qwen-Image 2.1 needs true_cfg_scale > 1" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "--model", str(loads), "--prompt", "a", "--out", str(tmp_path / "x.jpg")]) == 2
    err = capsys.readouterr().err
    assert "Qwen-Image 2.1 makes RGBA images, whose alpha JPEG cannot hold" in err and "Traceback" not in err


def test_eval_scores_its_images_against_the_baseline(loads, tmp_path):
    import csv

    from ralu_torch.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(loads), "--prompts", str(prompts), "--configs", "baseline:20",
                 "qwen-image-2.1-4x", "--out-dir", str(out), "--metrics", "psnr", "ssim", "--sheet", "0",
                 "--height", "64", "--width", "64", "--device", "cpu", "--repeats", "1"]) == 0
    with open(out / "eval.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [r["configuration"] for r in summary] == ["baseline:20", "qwen-image-2.1-4x"]
    assert float(summary[1]["ssim_mean"]) < 1 and float(summary[1]["speedup_tflops"]) > 1
