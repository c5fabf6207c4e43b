"""RALU for HunyuanVideo 1.5 text-to-video on a tiny random HunyuanVideo15Pipeline
(ralu_torch.testing.hunyuanvideo15_pipeline):

- a one-stage layout solved at call time is the stock pipeline (1e-5, float32, CPU) at two sizes
  and two frame counts, batch 2, with the guider's classifier-free guidance (6, the published
  default) and with the CFG-distilled guider (1: one call); its sigmas are the scheduler's
  fixed shift applied to the pipeline's grid;
- a 3-stage layout at batch 2 with a mixed stage: finite, the right shape, the stock number of
  transformer calls per step, no host synchronisation in a stage, decoded clips;
- mixed-token rotary tables are the model's own at each token's resolution, frame by frame;
- the conditioning's per-clip order is the stock forward's;
- refusals by name: image-to-video, other guiders and step windows, settings it does not take.
"""

import numpy as np
import pytest
import torch

from ralu_schedule import Layout
from ralu_torch import RALU
from ralu_torch.backends import backend_for
from ralu_torch.backends.hunyuanvideo15 import text_layout
from ralu_torch.testing import hunyuanvideo15_pipeline, tiny_inputs
from ralu_torch.tokens import TokenSet

ONE_STAGE = Layout(steps=(3,), ends=(1.0,))
MIXED = Layout(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))


@pytest.fixture(scope="module")
def pipes():
    cache = {}

    def get(guidance_scale=6.0):
        if guidance_scale not in cache:
            cache[guidance_scale] = hunyuanvideo15_pipeline(guidance_scale=guidance_scale)
        return cache[guidance_scale]

    return get


def gens(n=2):
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.mark.parametrize("guidance_scale", [6.0, 1.0])
def test_one_stage_layout_is_the_stock_pipeline(pipes, guidance_scale):
    pipe = pipes(guidance_scale)
    inputs = tiny_inputs(pipe, 2, guided=guidance_scale > 1)       # CFG needs the negative prompt's embeddings
    ralu = RALU(pipe, ONE_STAGE)
    for height, width, frames in [(64, 96, 5), (96, 64, 9)]:
        stock = pipe(**inputs, height=height, width=width, num_frames=frames, num_inference_steps=3,
                     generator=gens(), output_type="latent").frames
        ours = ralu(**inputs, height=height, width=width, num_frames=frames, generator=gens(), output_type="latent")
        assert ours.images.shape == stock.shape == (2, 8, (frames - 1) // 4 + 1, height // 16, width // 16)
        assert (ours.images - stock).abs().max() < 1e-5, (guidance_scale, height, width, frames)


def test_a_one_stage_layout_solved_at_call_time_is_the_stock_schedule(pipes):
    pipe = pipes()
    assert backend_for(pipe).shift_rule().shift == 5.0
    for steps in (50, 7):
        sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])    # as HunyuanVideo15Pipeline
        ours = RALU(pipe, Layout(steps=(steps,), ends=(1.0,))).schedule_for(480, 832, 121).plan.stages[0].sigmas
        np.testing.assert_allclose(ours, sched.sigmas.double().numpy(), atol=1e-6)


def _calls(pipe):
    calls = []
    pipe.transformer.time_embed.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    return calls


def test_a_mixed_layout_makes_the_stock_calls_per_step_and_decodes_clips(watched_steps):
    pipe = hunyuanvideo15_pipeline()                  # its own: hooks
    inputs = tiny_inputs(pipe, 2, guided=True)
    calls = _calls(pipe)
    pipe(**inputs, height=64, width=64, num_frames=5, num_inference_steps=2, generator=gens(), output_type="latent")
    assert calls == [2, 2] * 2                                           # CFG: two calls a step, the batch each
    calls.clear()
    out = RALU(pipe, MIXED)(**inputs, height=96, width=64, num_frames=5, generator=gens(), output_type="np")
    assert out.images.shape == (2, 5, 96, 64, 3) and np.isfinite(out.images).all()
    assert calls == [2] * (2 * MIXED.total_steps)
    assert out.stage_tokens[0] < out.stage_tokens[1] < out.stage_tokens[2] == 2 * 6 * 4   # a mixed stage
    assert watched_steps == [[], [], []]


def test_mixed_tokens_get_the_models_rotary_tables_frame_by_frame(pipes):
    pipe = pipes()
    be = backend_for(pipe)
    T, rows, cols, D = 3, 4, 6, 2
    be.set_frames(T)
    tokens = TokenSet.regular(2, (T * rows, cols), D)
    mask = torch.zeros(2, tokens.length, dtype=torch.bool)
    mask[0, [0, 7, 13]] = mask[1, [1, 8, 12]] = True                    # a coarse token per frame, per clip
    mixed, _, _ = tokens.upsample(mask, 2)
    cos, sin = (t.table for t in be.prepare(mixed, None).rotary)
    ours = torch.complex(cos[..., 0::2].double(), sin[..., 0::2].double())
    c0, s0 = pipe.transformer.rope(torch.zeros(1, 8, T, rows // D, cols // D))   # the model's table of the coarse clip
    stock = torch.complex(c0[:, 0::2].double(), s0[:, 0::2].double()).view(T, rows // D, cols // D, -1)
    frame_dims = pipe.transformer.config.rope_axes_dim[0] // 2
    for b in range(2):
        for i in range(mixed.length):
            r, c = mixed.cells[b, i].tolist()
            t, r = divmod(r, rows)
            if int(mixed.size[b, i]) == D:
                torch.testing.assert_close(ours[b, i], stock[t, r // D, c // D], rtol=0, atol=1e-6)
            else:
                r0, c0_ = r // D, c // D
                r1, c1 = r0 + (r % D != 0), c0_ + (c % D != 0)
                if r1 >= rows // D or c1 >= cols // D:
                    continue                                             # its neighbour lies outside the frame
                torch.testing.assert_close(ours[b, i] ** 2, stock[t, r0, c0_] * stock[t, r1, c1], rtol=0, atol=1e-5)
                torch.testing.assert_close(ours[b, i, :frame_dims], stock[t, r0, c0_, :frame_dims], rtol=0, atol=1e-6)


def test_the_conditioning_order_is_the_stock_forwards():
    """Per clip: valid ByT5, then valid prompt tokens, the (masked) image tokens, then the masked
    ByT5 and prompt tokens (zeroed), as HunyuanVideo15Transformer3DModel orders them."""
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    mask_2 = torch.tensor([[0, 1], [0, 0]])
    index, keep, valid = text_layout(mask, mask_2, image_tokens=2)
    # sources: prompt 0-2, ByT5 3-4, image 5-6
    assert index.tolist() == [[4, 0, 1, 5, 6, 3, 2], [0, 5, 6, 3, 4, 1, 2]]
    assert valid.tolist() == [[True] * 3 + [False] * 4, [True] + [False] * 6]
    assert keep.tolist() == [[True] * 5 + [False] * 2, [True] * 3 + [False] * 4]


def test_guiders_and_settings_it_does_not_take_are_refused_by_name(pipes):
    from diffusers import AdaptiveProjectedGuidance, ClassifierFreeGuidance

    pipe = pipes()
    inputs = {**tiny_inputs(pipe, 1, guided=True), "height": 64, "width": 64, "num_frames": 5}
    run = lambda p=pipe, **kw: RALU(p, ONE_STAGE)(**{**inputs, **kw}, output_type="latent")  # noqa: E731
    with pytest.raises(ValueError, match="takes its guidance from its guider"):
        run(guidance_scale=4.0)
    with pytest.raises(ValueError, match="takes no max_sequence_length"):
        run(max_sequence_length=64)
    distilled = pipes(1.0)
    with pytest.raises(ValueError, match=r"a negative prompt on HunyuanVideo 1.5 needs its guider's .*\(guidance_scale "
                                         r"1\)"):
        run(distilled)
    original = pipe.guider
    try:
        pipe.guider = AdaptiveProjectedGuidance(guidance_scale=6.0)
        with pytest.raises(ValueError, match="with its ClassifierFreeGuidance guider; this pipeline's is "
                                             "AdaptiveProjectedGuidance"):
            run()
        pipe.guider = ClassifierFreeGuidance(guidance_scale=6.0, stop=0.5)
        with pytest.raises(ValueError, match="guides only from step fraction 0 to 0.5"):
            run()
    finally:
        pipe.guider = original
    with pytest.raises(ValueError, match=r"num_frames must be 4 k \+ 1 .* nearest allowed: 5 or 9"):
        run(num_frames=6)


def test_image_to_video_is_refused_by_name():
    from diffusers import HunyuanVideo15ImageToVideoPipeline

    pipe = hunyuanvideo15_pipeline()
    i2v = HunyuanVideo15ImageToVideoPipeline.__new__(HunyuanVideo15ImageToVideoPipeline)
    i2v.__dict__.update(pipe.__dict__)
    with pytest.raises(ValueError, match="RALU cannot run HunyuanVideo15ImageToVideoPipeline: .* load the "
                                         "text-to-video HunyuanVideo15Pipeline instead"):
        RALU(i2v)


def test_every_checkpoint_gets_the_presets_of_its_size():
    """Each of the four checkpoints, told apart by its configs alone (the transformer's target_size,
    the guider's scale), takes the default preset made for its size and shift (a 720p checkpoint
    found none before its presets were searched)."""
    from ralu_schedule.models import MODEL_INFO
    from ralu_schedule.presets import DEFAULT_PRESETS, get_preset
    from ralu_torch.backends.families import BY_NAME

    family = BY_NAME["hunyuanvideo1.5"]
    shifts = {"480p": 5.0, "720p": 9.0}
    seen = set()
    for target_size, size in [(640, "480p"), (960, "720p")]:
        for scale, kind in [(6.0, ""), (1.0, "-distilled")]:
            configs = {"transformer": {"target_size": target_size}, "guider": {"guidance_scale": scale}}
            name = family.variant(lambda sub: configs.get(sub, {}))
            p = get_preset(DEFAULT_PRESETS[name])
            assert name == f"hunyuanvideo1.5-{size}{kind}" and p.name == f"hunyuanvideo1.5-{size}-7x"
            assert (p.shift, p.frames, p.resolution[0]) == (shifts[size], 121, {"480p": 480, "720p": 704}[size])
            assert get_preset(f"hunyuanvideo1.5-{size}-4x").shift == shifts[size]
            seen.add(name)
    assert seen == {m for m, info in MODEL_INFO.items() if info.family == "hunyuanvideo1.5"}


# -- the cost model against torch's FLOP counter, on the published model built on the meta device ----
def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_cost_of_a_call_against_the_flop_counter():
    """The 480p/720p transformer (diffusers' conversion script's config, 8,326,608,160 parameters)
    on clips of one and three latent frames, with the published conditioning (1000 prompt, 256 ByT5,
    729 image tokens): RALU's call plus what the stock forward also computes (the zero condition
    channels of the patch embedding, the zero image embeddings' projection) is the spec's call.
    Built with 2 of its 54 identical blocks (building all 54 is most of the test's time): the
    parameters are counted with the other 52 added block by block, the spec priced at 2 layers."""
    import dataclasses

    import diffusers
    from tiny import counted

    from ralu_schedule.cost import MODELS
    from ralu_torch.backends.hunyuanvideo15 import HunyuanVideo15Branch, forward_tokens

    with torch.device("meta"):
        tr = diffusers.HunyuanVideo15Transformer3DModel(
            in_channels=65, out_channels=32, num_attention_heads=16, attention_head_dim=128, num_layers=2,
            num_refiner_layers=2, mlp_ratio=4.0, patch_size=1, patch_size_t=1, qk_norm="rms_norm",
            text_embed_dim=3584, text_embed_2_dim=1472, image_embed_dim=1152, rope_theta=256.0,
            rope_axes_dim=(16, 56, 56), use_meanflow=False, target_size=640, task_type="t2v")
    block = sum(p.numel() for p in tr.transformer_blocks[0].parameters())
    assert sum(p.numel() for p in tr.parameters()) + 52 * block == 8_326_608_160
    spec = MODELS["hunyuanvideo1.5-480p"]
    assert spec.transformer.layers == 54
    call = dataclasses.replace(spec.transformer, layers=2)
    T = spec.text_tokens
    branch = HunyuanVideo15Branch(_meta(1, 1000, 3584), _meta(1, 1000), _meta(1, 256, 1472),
                                  _meta(1, T, dtype=torch.long), _meta(1, T, dtype=torch.bool),
                                  _meta(1, T, dtype=torch.bool), 729)
    d = 2048
    for frames, h, w in [(1, 8, 8), (3, 6, 10)]:
        M = frames * h * w
        tables = (_meta(M, 128), _meta(M, 128))
        full, linear = counted(lambda: (forward_tokens(tr, _meta(1, M, 32), tables, branch, _meta(1)),
                                        tr.image_embedder(_meta(1, 729, 1152))))
        extra = 2.0 * M * 33 * d                                   # the stock patch embedding's 33 zero channels
        expected = call.forward(M, T)
        assert full + extra == pytest.approx(expected.total("full"))
        assert linear + extra == pytest.approx(expected.total("paper"))


def test_cost_of_the_text_encoder_and_vae_against_the_flop_counter():
    import diffusers
    from tiny import counted
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    from ralu_schedule.cost import HUNYUANVIDEO15_VAE, MODELS, QWEN2_5_VL_7B_TEXT

    with torch.device("meta"):   # Qwen2.5-VL-7B's language model, as the pipeline loads it
        encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(hidden_size=3584, intermediate_size=18944,
                                                           num_hidden_layers=28, num_attention_heads=28,
                                                           num_key_value_heads=4, vocab_size=152064))
        vae = diffusers.AutoencoderKLHunyuanVideo15()
    spec = MODELS["hunyuanvideo1.5-480p"]
    assert spec.encoders == (QWEN2_5_VL_7B_TEXT,) and spec.vae == HUNYUANVIDEO15_VAE
    n = QWEN2_5_VL_7B_TEXT.sequence(spec.t5_tokens)
    assert n == 1108                                               # padded to 1000 + the 108-token template
    full, linear = counted(lambda: encoder(input_ids=torch.zeros(1, n, dtype=torch.long, device="meta")))
    expected = QWEN2_5_VL_7B_TEXT.forward(n)
    assert (full, linear) == pytest.approx((expected.total("full"), expected.total("paper")))
    for latent_frames in (1, 2, 5):
        full, linear = counted(lambda: vae.decode(_meta(1, 32, latent_frames, 4, 6)))
        expected = HUNYUANVIDEO15_VAE.decode(64, 96, latent_frames)
        assert (full, linear) == pytest.approx((expected.total("full"), expected.total("paper")))
    assert HUNYUANVIDEO15_VAE.frames(31) == 121


# -- ralu generate ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-hunyuanvideo15")
    hunyuanvideo15_pipeline(text=True).save_pretrained(path)
    return path


def test_generate_writes_a_clip_and_its_recipe(model_dir, tmp_path, capsys):
    """The family and its default preset from the configs (the guider's scale tells the CFG-distilled
    checkpoints apart); a clip (a short two-stage schedule, to keep the tiny model's 1985
    conditioning tokens cheap) as an MP4 with its recipe beside it."""
    import json

    from ralu_schedule import Layout, solve
    from ralu_schedule.presets import DEFAULT_PRESETS
    from ralu_torch.cli import main
    from ralu_torch.generation.plan import model_family as _family

    family, variant = _family(str(model_dir))
    assert (family.name, variant, DEFAULT_PRESETS[variant]) == ("hunyuanvideo1.5", "hunyuanvideo1.5-480p",
                                                                "hunyuanvideo1.5-480p-7x") and family.video
    schedule = tmp_path / "short.json"
    schedule.write_text(json.dumps(solve(Layout(steps=(1, 1), ends=(0.5, 1.0)).with_base(5.0, None)).to_dict()))
    out = tmp_path / "fox.mp4"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a red fox", "--height", "64", "--width", "64",
                 "--num-frames", "5", "--device", "cpu", "--schedule", str(schedule), "--out", str(out)]) == 0
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert (recipe["num_frames"], recipe["fps"], recipe["height"]) == (5, 24, 64)
    assert out.read_bytes()[4:8] == b"ftyp"                            # an MP4
    capsys.readouterr()
    # its guidance is the guider's: --guidance-scale is refused in one line
    assert main(["generate", "--model", str(model_dir), "--prompt", "a", "--height", "64", "--width", "64",
                 "--num-frames", "5", "--device", "cpu", "--guidance-scale", "4", "--out", str(tmp_path / "b.mp4")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ralu: error")]
    assert len(err) == 1 and "takes its guidance from its guider" in err[0]
    # ralu eval scores images: a video model is refused in one line, pointing to what times and makes clips
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\n")
    assert main(["eval", "--model", str(model_dir), "--prompts", str(prompts), "--configs", "baseline:2",
                 "hunyuanvideo1.5-480p-7x", "--out-dir", str(tmp_path / "eval"), "--device", "cpu"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ralu: error")]
    assert len(err) == 1 and "is a video model (hunyuanvideo1.5)" in err[0] and "--family hunyuanvideo1.5" in err[0]
