"""Differential testing of RALU against every stock pipeline it runs (the harness: tests/differential.py).

The property: RALU with a one-stage schedule equal to the stock call's sigmas returns what the
stock pipeline returns (payload type, dtype, shape, values within 1e-5 relative), or both
refuse (any exception from the stock pipeline, a ``ValueError`` from RALU), or RALU's refusal
is a row of :data:`REFUSALS` (a named choice, documented in docs/verification.md), or RALU takes
an input in a form of :data:`EXTENSIONS` and returns what the stock pipeline returns on the
same values in its own form. The cases below are instances the harness found, each once a
divergence.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from differential import MODELS, STRATEGIES, AtStep, Case, Listed, Mask, Pipes, Rand, check, run

#: Examples per pipeline: a bounded number in CI, more on demand (RALU_DIFFERENTIAL_EXAMPLES=500).
EXAMPLES = int(os.environ.get("RALU_DIFFERENTIAL_EXAMPLES", "15"))

#: Where RALU refuses what the stock pipeline runs: (pipeline or "*", argument) -> (reason, pattern
#: of RALU's message). Every row is documented in docs/verification.md (test below).
REFUSALS = {
    ("*", "height"): (
        "a height or width off the pipeline's grid, or 0: FLUX.1, FLUX.2, Chroma and Qwen-Image round it down "
        "with a warning, and 0 means the default size to every pipeline but Wan; RALU changes no size silently",
        r"height and width must be positive multiples of \d+ pixels"),
    ("*", "width"): ("as height", r"height and width must be positive multiples of \d+ pixels"),
    ("*", "negative_prompt_embeds"): (
        "a negative prompt its guidance would ignore (FLUX.1 and Qwen-Image: true_cfg_scale <= 1; Chroma and "
        "Wan: guidance_scale <= 1; Z-Image: guidance_scale <= 0; distilled FLUX.2 [klein] and Flux2Pipeline "
        "always): the stock pipelines drop it, with a warning or silently",
        r"a negative prompt on .* needs|negative_prompt_embeds would be ignored"),
    ("*", "max_sequence_length"): (
        "max_sequence_length below 1: the stock pipelines do not look at it when given embeddings",
        r"max_sequence_length must be an integer >= 1"),
    ("*", "guidance_scale"): (
        "a guidance scale that is not finite (inf, nan): the stock pipelines return non-finite images",
        r"guidance_scale must be finite"),
    ("*", "true_cfg_scale"): ("as guidance_scale", r"true_cfg_scale must be finite"),
    ("WanPipeline", "guidance_scale_2"): ("as guidance_scale", r"guidance_scale_2 must be finite"),
    ("*", "prompt_embeds"): (
        "embeddings of no tokens: FluxPipeline, StableDiffusion3Pipeline, ChromaPipeline and WanPipeline run "
        "them (an image conditioned on nothing), the others fail inside torch",
        r"prompt_embeds must hold at least one image and one token"),
    ("ZImagePipeline", "prompt_embeds"): (
        "integer embeddings: ZImagePipeline's caption norm and WanPipeline's cast to the transformer's dtype take "
        "them as floats, and so does StableDiffusion3Pipeline's guidance, which concatenates them with the "
        "floating-point negatives (torch.cat promotes); the other pipelines fail on them, and RALU refuses them "
        "everywhere", r"prompt_embeds must be a floating-point tensor"),
    ("WanPipeline", "prompt_embeds"): ("as ZImagePipeline", r"prompt_embeds must be a floating-point tensor"),
    ("StableDiffusion3Pipeline", "prompt_embeds"): ("as ZImagePipeline",
                                                    r"prompt_embeds must be a floating-point tensor"),
    ("StableDiffusion3Pipeline", "mu"): (
        "mu, the dynamic shift: a RALU run's sigmas are its schedule's (solved from the pipeline's own shift rule)",
        r"does not take 'mu'"),
    ("StableDiffusion3Pipeline", "latents"): (
        "latents of another size than height and width give: StableDiffusion3Pipeline, Flux2Pipeline and "
        "Flux2KleinPipeline run at the latents' own size and ignore height and width; RALU refuses the "
        "contradiction", r"latents must be the first stage's noise"),
    ("Flux2Pipeline", "latents"): ("as StableDiffusion3Pipeline", r"latents must be the first stage's noise"),
    ("Flux2KleinPipeline", "latents"): ("as StableDiffusion3Pipeline", r"latents must be the first stage's noise"),
    ("WanPipeline", "latents"): (
        "latents of another shape than height, width and num_frames give: WanPipeline runs the latents' own clip "
        "and ignores those arguments; RALU refuses the contradiction",
        r"latents must be (a clip of \d+ latent frames|the first stage's noise)"),
    ("WanPipeline", "num_frames"): (
        "num_frames off the VAE's 4 k + 1 rule: WanPipeline rounds it down with a warning; RALU says which "
        "counts are allowed", r"num_frames must be 4 k \+ 1"),
    ("ZImagePipeline", "prompt"): (
        "a prompt with its embeddings: ZImagePipeline ignores the prompt (the other pipelines refuse both)",
        r"give prompt or prompt_embeds, not both"),
    ("ZImagePipeline", "negative_prompt_embeds"): (
        "more negative captions than prompts: ZImagePipeline drops the extra ones",
        r"prompt embeddings must share one batch size"),
    ("*", "generator"): (
        "a list of generators of another length than the images: refused even where caller latents leave it "
        "unused (most stock pipelines then ignore it; Flux2KleinPipeline refuses it too)",
        r"got \d+ generators for a batch of \d+ images"),
}

#: Inputs RALU takes in a form the stock pipeline does not: (pipeline or "*", argument) -> what
#: RALU does with it. The harness gives the stock pipeline the same values in its own form and
#: checks that RALU returns what it returns. Documented in docs/verification.md (test below).
EXTENSIONS = {
    ("*", "latents"): (
        "the first noise in RALU's other form as well as the pipeline's own: the 4-D latent for the packed "
        "pipelines (FLUX.1, Chroma, Qwen-Image), packed tokens for SD3, Z-Image and FLUX.2, the frames stacked on "
        "the rows for Wan"),
    ("*", "prompt_embeds"): (
        "embeddings of another floating-point dtype than the transformer's, cast to it (the stock pipelines "
        "run their latents in the embeddings' dtype and fail in the first matmul)"),
    ("*", "num_images_per_prompt"): (
        "with embeddings, each prompt's embeddings (and masks) repeated for its images: FluxPipeline, "
        "StableDiffusion3Pipeline, ChromaPipeline and WanPipeline repeat only what they encode themselves and "
        "fail on the batch mismatch, and QwenImagePipeline repeats a mask of several prompts in another order "
        "than their embeddings (it tiles the masks but interleaves the embeddings)"),
}

#: The pipelines of the ``num_images_per_prompt`` extension, and when it applies to each.
REPEATS = {
    "FluxPipeline": lambda call: True, "StableDiffusion3Pipeline": lambda call: True,
    "ChromaPipeline": lambda call: True, "WanPipeline": lambda call: True,
    "QwenImagePipeline": lambda call: any(k.endswith("_mask") and len(call[k]) > 1 for k in call),
}


def extension_inputs(case, call, ctx):
    """The stock pipeline's arguments for a RALU call: the same values in the stock's form, and
    the :data:`EXTENSIONS` rows that took another form."""
    stock, used = dict(call), []
    embeds = [k for k in call if "prompt_embeds" in k or k.endswith("attention_mask")]

    def cast(value):
        tensors = value if isinstance(value, list) else [value]
        if not all(t.is_floating_point() and t.dtype != ctx.dtype for t in tensors):
            return value
        out = [t.to(ctx.dtype) for t in tensors]
        return out if isinstance(value, list) else out[0]

    for k in embeds:
        if "mask" not in k and cast(call[k]) is not call[k]:
            stock[k] = cast(call[k])
            used.append("prompt_embeds")
    n = call.get("num_images_per_prompt", 1)
    repeat = REPEATS.get(case.pipeline)
    if isinstance(n, int) and n > 1 and repeat is not None and repeat(call) and "prompt_embeds" in call:
        for k in embeds:
            stock[k] = stock[k].repeat_interleave(n, dim=0)
        stock["num_images_per_prompt"] = 1
        used.append("num_images_per_prompt")
    return stock, tuple(dict.fromkeys(used))


@pytest.fixture(scope="module")
def pipes():
    return Pipes()


def outcome(pipes, case):
    """Which branch of the property held for ``case`` (it fails the test if none did)."""
    return check(case, run(pipes, case, extension_inputs), REFUSALS)


def zimage(call, steps=3, **kw):
    """A guided Z-Image case: two prompts of different caption lengths and their negatives."""
    call = {"prompt_embeds": Listed((Rand((3, 32), 1), Rand((5, 32), 2))),
            "negative_prompt_embeds": Listed((Rand((4, 32), 3), Rand((1, 32), 4))), "guidance_scale": 3.0,
            "height": 32, "width": 48, "output_type": "latent", **call}
    return Case("z-image", steps, call, images=2, **kw)


@pytest.mark.parametrize("value", [True, False, 1.0, 0.25])
def test_zimage_cfg_normalization_is_the_bool_the_pipeline_documents(pipes, value):
    """ZImagePipeline documents ``cfg_normalization`` as a bool (``True``: the guided velocity's
    norm capped at the positive's); RALU refused it as not a real number."""
    assert outcome(pipes, zimage({"cfg_normalization": value})) == "same"


def test_zimage_cfg_truncation_none_turns_truncation_off(pipes):
    assert outcome(pipes, zimage({"cfg_truncation": None})) == "same"


@pytest.mark.parametrize("steps, step, nudge, width", [(2, 1, 0, "f64"), (3, 2, -1, "f64"), (1, 0, -1, "f64"),
                                                       (5, 3, -1, "f32")])
def test_zimage_cfg_truncation_on_the_step_grid_is_the_pipelines(pipes, steps, step, nudge, width):
    """ZImagePipeline drops guidance where ``(1000 - t) / 1000`` (float32, its timesteps') exceeds
    ``cfg_truncation`` (compared in float64); RALU compared ``1 - sigma`` in float32, which
    switched guidance at another step for a truncation on (or a float step off) the grid."""
    case = zimage({"cfg_truncation": AtStep("t_norm", step, nudge, width)}, steps=steps)
    assert outcome(pipes, case) == "same"


@pytest.mark.parametrize("steps, step, nudge, width", [(2, 1, 0, "f32"), (3, 1, 1, "f32"), (4, 2, -1, "f64")])
def test_wan_expert_boundary_on_the_step_grid_is_the_pipelines(pipes, steps, step, nudge, width):
    """WanPipeline picks the high-noise expert where its float32 timestep ``t >= boundary_ratio *
    1000`` (in float32); RALU compared ``sigma * 1000`` in float64, another expert for a boundary
    on (or a float step off) the timestep grid."""
    call = {"prompt_embeds": Rand((1, 3, 32), 1), "negative_prompt_embeds": Rand((1, 2, 32), 2),
            "guidance_scale": 4.0, "guidance_scale_2": 2.0, "height": 32, "width": 32, "num_frames": 5,
            "output_type": "latent"}
    case = Case("wan2.2-t2v-a14b", steps, call, images=1,
                config={"boundary_ratio": AtStep("boundary", step, nudge, width)})
    assert outcome(pipes, case) == "same"


def flux(call, model="flux-dev", images=1, **kw):
    call = {"prompt_embeds": Rand((images, 4, 32), 1), "pooled_prompt_embeds": Rand((images, 32), 2), "height": 32,
            "width": 48, "output_type": "latent", **call}
    return Case(model, 2, call, images=images, **kw)


STOCK_RULES = {   # inputs the stock pipelines refuse by their own rules, which RALU ran
    "chroma embeddings without their mask": Case(
        "chroma", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "height": 32, "width": 32, "output_type": "latent"}, 1),
    "a negative without its mask": Case(
        "chroma", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "prompt_attention_mask": Mask(1, 4),
                      "negative_prompt_embeds": Rand((1, 4, 32), 2), "guidance_scale": 4.0, "height": 32,
                      "width": 32, "output_type": "latent"}, 1),
    "a prompt with its embeddings": flux({"prompt": "a photo of a cat"}),
    "a prompt with its embeddings (Qwen-Image)": Case(
        "qwen-image", 2, {"prompt": "a cat", "prompt_embeds": Rand((1, 4, 32), 1), "height": 32, "width": 32}, 1),
    "true CFG on embeddings of another length": flux({"negative_prompt_embeds": Rand((1, 6, 32), 3),
                                                      "negative_pooled_prompt_embeds": Rand((1, 32), 4),
                                                      "true_cfg_scale": 2.0}),
    "SD3 negatives of another length": Case(
        "sd3-medium", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "pooled_prompt_embeds": Rand((1, 32), 2),
                          "negative_prompt_embeds": Rand((1, 6, 32), 3), "negative_pooled_prompt_embeds":
                          Rand((1, 32), 4), "guidance_scale": 4.0, "height": 32, "width": 32}, 1),
    "max_sequence_length over FLUX's 512": flux({"max_sequence_length": 513}),
    "max_sequence_length over Qwen-Image's 1024": Case(
        "qwen-image", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "max_sequence_length": 1025, "height": 32,
                          "width": 32}, 1),
}


@pytest.mark.parametrize("what", list(STOCK_RULES))
def test_what_the_stock_pipeline_refuses_ralu_refuses(pipes, what):
    """Each was run by RALU (or failed inside torch): embeddings without the mask ChromaPipeline
    requires (run unmasked), a prompt together with its embeddings (the prompt ignored), true CFG
    or SD3's guidance on a negative of another shape, a ``max_sequence_length`` over the limit."""
    assert outcome(pipes, STOCK_RULES[what]) == "both refuse"


FAILED_INSIDE = {   # inputs that failed inside torch or diffusers (each a RuntimeError, IndexError, ...)
    "integer embeddings": flux({"prompt_embeds": Rand((1, 4, 32), 1, "int64")}, model="flux-schnell"),
    "integer Qwen-Image embeddings": Case(
        "qwen-image", 2, {"prompt_embeds": Rand((1, 4, 32), 1, "int64"), "height": 32, "width": 32}, 1),
    "FLUX.2 embeddings of no tokens": Case(
        "flux2-dev", 2, {"prompt_embeds": Rand((1, 0, 32), 1), "height": 32, "width": 32}, 1),
    "a Z-Image caption of no tokens": Case(
        "z-image", 2, {"prompt_embeds": Listed((Rand((0, 32), 1),)), "guidance_scale": 0.0, "height": 32,
                       "width": 32}, 1),
    "an integer Chroma mask": Case(
        "chroma", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "prompt_attention_mask": Mask(1, 4, 1, "int64"),
                      "guidance_scale": 1.0, "height": 32, "width": 32}, 1),
}


@pytest.mark.parametrize("what", list(FAILED_INSIDE))
def test_integer_or_empty_embeddings_are_one_clear_value_error(pipes, what):
    """The stock pipeline fails on these too; RALU's refusal is a ValueError naming the input."""
    assert outcome(pipes, FAILED_INSIDE[what]) == "both refuse"


NO_TEXT_ENCODER = {   # the tiny pipelines have none: each failed inside diffusers (AttributeError, TypeError)
    "a FLUX.1 prompt": Case("flux-dev", 2, {"prompt": "a photo of a cat", "height": 32, "width": 32}, 1),
    "an SD3 prompt": Case("sd3-medium", 2, {"prompt": "a cat", "guidance_scale": 1.0, "height": 32, "width": 32}, 1),
    "FLUX.2 [klein] base's empty negative": Case(
        "flux2-klein-base-4b", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "guidance_scale": 4.0, "height": 32,
                                   "width": 32}, 1),
    "Chroma's empty negative": Case(
        "chroma", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "prompt_attention_mask": Mask(1, 4),
                      "guidance_scale": 4.0, "height": 32, "width": 32}, 1),
    "SD3's empty negative": Case(
        "sd3-medium", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "pooled_prompt_embeds": Rand((1, 32), 2),
                          "guidance_scale": 4.0, "height": 32, "width": 32}, 1),
}


@pytest.mark.parametrize("what", list(NO_TEXT_ENCODER))
def test_text_to_encode_without_a_text_encoder_is_one_clear_value_error(pipes, what):
    assert outcome(pipes, NO_TEXT_ENCODER[what]) == "both refuse"


def test_a_clip_of_another_frame_count_is_refused_not_reshaped(pipes):
    """A 9-frame call (3 latent frames of 4 x 6) given a 1-frame clip of 12 x 6: RALU stacked it
    into the call's clip (its rows are the stacked frames' rows) where WanPipeline runs a 1-frame
    clip; now it is refused, a documented row of the refusal table."""
    call = {"prompt_embeds": Rand((1, 3, 32), 1), "guidance_scale": 1.0, "height": 32, "width": 48,
            "num_frames": 9, "output_type": "latent"}
    case = Case("wan2.1-t2v-14b", 2, call, images=1, latents="frames")
    assert outcome(pipes, case) == "refused: latents"


@pytest.mark.parametrize("model, call", [
    ("z-image", {"prompt_embeds": Listed((Rand((3, 32), 1),)), "guidance_scale": 0.0}),
    ("wan2.1-t2v-14b", {"prompt_embeds": Rand((1, 3, 32), 1), "guidance_scale": 1.0, "num_frames": 5}),
])
def test_latents_come_out_in_the_pipelines_dtype(pipes, model, call):
    """ZImagePipeline keeps its latents in float32 with bfloat16 weights, and RALU returned them in
    bfloat16 (and decoded those); WanPipeline's start in float32 but its scheduler's steps return
    the model's bfloat16, as RALU's do."""
    case = Case(model, 2, {**call, "height": 32, "width": 32, "output_type": "latent"}, images=1, dtype="bfloat16")
    assert outcome(pipes, case) == "same"


def test_a_generator_list_of_another_length_is_refused_with_caller_latents_too(pipes):
    """Flux2KleinPipeline refuses it whether or not latents are given; RALU, which draws nothing
    in a one-stage run from caller latents, ran. Now refused everywhere (FluxPipeline, which
    ignores the list then, is a row of the refusal table)."""
    klein = Case("flux2-klein-4b", 2, {"prompt_embeds": Rand((1, 4, 32), 1), "height": 32, "width": 32,
                                       "output_type": "latent"}, images=1, generator="short", latents="stock")
    assert outcome(pipes, klein) == "both refuse"
    assert outcome(pipes, flux({}, generator="short", latents="stock")) == "refused: generator"


def sd3(call, steps=4, **kw):
    call = {"prompt_embeds": Rand((1, 4, 32), 1), "pooled_prompt_embeds": Rand((1, 32), 2),
            "negative_prompt_embeds": Rand((1, 4, 32), 3), "negative_pooled_prompt_embeds": Rand((1, 32), 4),
            "guidance_scale": 4.0, "height": 32, "width": 48, "output_type": "latent", **call}
    return Case("sd3-medium", steps, call, images=1, **kw)


@pytest.mark.parametrize("steps, start, stop", [(4, 0.01, 0.2), (4, 0.0, 1.0), (4, 0.25, 0.75), (5, 0.2, 0.8),
                                                (3, 1 / 3, 1.0)])
def test_sd3_skip_layer_guidance_is_the_pipelines(pipes, steps, start, stop):
    """StableDiffusion3Pipeline's skip-layer guidance (a call with blocks skipped, at the steps
    ``i`` with ``steps * start < i < steps * stop``, windows whose ends fall on step indices among
    them); RALU refused ``skip_guidance_layers``."""
    case = sd3({"skip_guidance_layers": [1], "skip_layer_guidance_start": start, "skip_layer_guidance_stop": stop,
                "skip_layer_guidance_scale": 2.8}, steps=steps)
    assert outcome(pipes, case) == "same"


def test_sd3_skip_layer_guidance_changes_the_result(pipes):
    """The window above is not empty: the skipped-block call moves the velocity."""
    with_skip = run(pipes, sd3({"skip_guidance_layers": [1], "skip_layer_guidance_start": 0.0,
                                "skip_layer_guidance_stop": 1.0}), extension_inputs).ralu.images
    plain = run(pipes, sd3({}), extension_inputs).ralu.images
    assert (with_skip - plain).abs().max() > 1e-3


@pytest.mark.parametrize("model", list(MODELS))
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_one_stage_ralu_is_the_stock_pipeline_on_drawn_calls(pipes, model, data):
    """The property, on calls drawn from the stock ``__call__`` (tests/differential.py: each
    pipeline's strategy says what it draws). Which branch held is a hypothesis event:
    ``--hypothesis-show-statistics`` says how many examples ran, refused both ways, or took a row."""
    case = data.draw(STRATEGIES[model], label="case")
    event(check(case, run(pipes, case, extension_inputs), REFUSALS))


def test_every_deliberate_difference_is_documented():
    """Each row of the refusal and extension tables appears in docs/verification.md as a table
    row ``| pipeline | argument | ... |``."""
    page = (Path(__file__).parent.parent / "docs" / "verification.md").read_text()
    rows = {tuple(cell.strip(" `") for cell in line.strip("|").split("|")[:2])
            for line in page.splitlines() if line.startswith("|")}
    missing = [key for key in [*REFUSALS, *EXTENSIONS] if key not in rows]
    assert not missing, f"not in docs/verification.md's tables: {missing}"


@pytest.mark.parametrize("guidance, expected", [(4.0, "refused: prompt_embeds"), (1.0, "both refuse")])
def test_sd3_integer_embeddings_under_guidance(pipes, guidance, expected):
    """StableDiffusion3Pipeline runs integer embeddings when its guidance concatenates them with
    floating-point negatives (torch.cat promotes them), and fails on them without guidance; RALU
    refuses them both ways (a row of the refusal table). Found by the harness at 100 examples."""
    case = sd3({"prompt_embeds": Rand((1, 4, 32), 1, "int64"), "guidance_scale": guidance}, steps=1)
    assert outcome(pipes, case) == expected


def test_a_zero_size_is_refused_not_replaced_by_the_default(pipes):
    """StableDiffusion3Pipeline (like most) runs ``height=0`` at its default size; RALU refuses it
    (a row of the refusal table). SD3's tiny default is 256 pixels, cheap enough to run here."""
    assert outcome(pipes, sd3({"height": 0}, steps=1)) == "refused: height"
