"""Every family behind the one backend contract, on tiny random models built from configs with
the families' real layer types and published scheduler rules (ralu_torch.testing):

- a one-stage layout solved at call time is the stock pipeline (1e-5, float32, CPU), at two
  sizes, batch 2, with and without the family's guidance;
- a pure-pyramid layout is the stock pipeline run stage by stage, joined by
  ``next_stage_latents``;
- the rotary tables of a mixed token set are the stock model's (coarse tokens: the stock table
  of the coarse grid; children: halfway between their neighbours);
- the stock pipeline's number of transformer calls per step at batch 4, no host
  synchronisation inside a stage, every solver, caches with guidance, ``latents=``;
- bad input: unsupported and image-conditioned pipelines, sizes off the grid, presets of
  another family, arguments the family does not take.
"""

import pytest
import torch

from ralu_schedule import Layout, preset, solve
from ralu_torch import RALU, next_stage_latents, stage_scheduler
from ralu_torch.backends import backend_for
from ralu_torch.testing import tiny_inputs, tiny_pipeline
from ralu_torch.tokens import TokenSet

MODELS = ["chroma", "flux2-dev", "flux2-klein-base-4b", "flux2-klein-4b", "qwen-image", "z-image", "z-image-turbo"]
#: the models whose pipelines guide with a negative prompt (the others have no such option)
GUIDED = ["chroma", "flux2-klein-base-4b", "qwen-image", "z-image", "z-image-turbo"]

ONE_STAGE = Layout(steps=(4,), ends=(1.0,))
MIXED = Layout(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))
PYRAMID = Layout(steps=(2, 3), ends=(0.4, 1.0))


@pytest.fixture(scope="module")
def pipes():
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = tiny_pipeline(model)
        return cache[model]

    return get


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("guided", [False, True])
def test_one_stage_layout_is_the_stock_pipeline(pipes, model, guided):
    if guided and model not in GUIDED:
        pytest.skip(f"{model} has no negative-prompt guidance")
    pipe = pipes(model)
    inputs = tiny_inputs(pipe, 2, guided=guided)
    for height, width in [(128, 128), (64, 96)]:
        stock = pipe(**inputs, height=height, width=width, num_inference_steps=4, generator=gens(2),
                     output_type="latent").images
        ours = RALU(pipe, ONE_STAGE)(**inputs, height=height, width=width, generator=gens(2), output_type="latent")
        assert ours.images.shape == stock.shape
        assert (ours.images - stock).abs().max() < 1e-5, (model, guided, height, width)


@pytest.mark.parametrize("model", MODELS)
def test_pyramid_layout_is_the_stock_pipeline_stage_by_stage(pipes, model):
    pipe = pipes(model)
    inputs = tiny_inputs(pipe, 2, guided=model in GUIDED)
    sched = RALU(pipe, PYRAMID).schedule_for(128, 128)
    ours = RALU(pipe, sched)(**inputs, height=128, width=128, generator=gens(2), output_type="latent").images
    scheduler = pipe.scheduler
    g, x = gens(2), None
    try:
        for k, size in enumerate((64, 128)):
            pipe.scheduler = stage_scheduler(scheduler, sched, k)
            x = pipe(**inputs, height=size, width=size, num_inference_steps=sched.layout.steps[k], generator=g,
                     latents=x, output_type="latent").images
            if k == 0:
                x = next_stage_latents(pipe, x, sched.transitions[0], height=size, width=size, generator=g)
    finally:
        pipe.scheduler = scheduler
    assert (x - ours).abs().max() < 1e-5


def _mixed_tokens(batch=2):
    """A 1/2-resolution token set on an 8x8 grid with a different 2x2 block upsampled per image,
    away from the last row and column (whose neighbours lie outside the frame)."""
    tokens = TokenSet.regular(batch, (8, 8), 2)
    mask = torch.zeros(batch, tokens.length, dtype=torch.bool)
    for b in range(batch):
        mask[b, [b, 5 + b]] = True
    new, _, _ = tokens.upsample(mask, 2)
    return new


def _as_complex(table):
    """Rotary tables as complex numbers per (token, frequency): FLUX-style ``(cos, sin)`` or complex."""
    if isinstance(table, torch.Tensor) and table.is_complex():
        return table
    cos, sin = table
    return torch.complex(cos.double(), sin.double())


def _stock_and_ours(pipe, model, tokens):
    """The stock table of the coarse frame ``(rows * cols, D)`` and our per-image tables ``(B, L, D)``,
    image tokens only, as complex numbers."""
    be = backend_for(pipe)
    inputs = tiny_inputs(pipe, tokens.batch, guided=model in GUIDED)
    cond = be.encode(prompt=None, num_images_per_prompt=1, max_sequence_length=be.default_max_sequence_length,
                     guidance_scale=inputs.pop("guidance_scale", be.default_guidance_scale or 1.0),
                     joint_attention_kwargs=None, device=torch.device("cpu"), **inputs)
    rows, cols = tokens.frame
    grid = TokenSet.regular(1, tokens.grid, tokens.coarsest)
    if model == "z-image":
        ours = be.prepare(tokens, cond).freqs[:tokens.batch, :tokens.length]
        stock_ids = be.prepare(grid, cond.image(0)).freqs[0, :rows * cols]     # checked against the stock lookup below
        lookup = be.transformer.rope_embedder
        cap = torch.tensor([[len(cond.prompt_embeds[0]) + (-len(cond.prompt_embeds[0])) % 32 + 1]])
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        ids = torch.cat([cap.expand(rows * cols, 1), r.reshape(-1, 1), c.reshape(-1, 1)], dim=1).int()
        stock = lookup(ids)                                                    # the model's own integer table
        assert torch.equal(stock_ids, stock)
        return stock, ours
    positions = be.prepare(tokens, cond)
    rot = positions.rotary
    if model == "qwen-image":
        stock = be.transformer.pos_embed([(1, rows, cols)], max_txt_seq_len=8)[0]
        return stock, rot.image.table
    T = cond.positive.prompt_embeds.shape[1]
    tables = (rot[0].table, rot[1].table)
    ours = _as_complex(tables)[:, T:]
    if model.startswith("flux2"):
        from ralu_torch.backends.flux2 import image_ids
    else:
        from ralu_torch.backends.flux import image_ids
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    stock = _as_complex(be.transformer.pos_embed(image_ids(torch.stack([r, c], -1).reshape(-1, 2).float())))
    return stock, ours


@pytest.mark.parametrize("model", ["chroma", "flux2-dev", "qwen-image", "z-image"])
def test_mixed_token_sets_get_the_stock_rotary_tables(pipes, model):
    pipe = pipes(model)
    tokens = _mixed_tokens()
    stock, ours = _stock_and_ours(pipe, model, tokens)
    stock, ours = stock.to(torch.complex128), ours.to(torch.complex128)
    D, cols = tokens.coarsest, tokens.frame[1]
    for b in range(tokens.batch):
        for i in range(tokens.length):
            (r, c), size = (tokens.cells[b, i] // 1).tolist(), int(tokens.size[b, i])
            if size == D:          # a coarse token: the stock table's entry at its place on the coarse grid
                torch.testing.assert_close(ours[b, i], stock[(r // D) * cols + c // D], rtol=0, atol=1e-6)
            else:                  # a child at a half step: its rotation is halfway between its neighbours'
                r0, c0 = r // D, c // D
                r1, c1 = r0 + (r % D != 0), c0 + (c % D != 0)
                torch.testing.assert_close(ours[b, i] ** 2, stock[r0 * cols + c0] * stock[r1 * cols + c1],
                                           rtol=0, atol=1e-5)


def count_calls(pipe):
    """Batch sizes of the transformer calls: hooked on the transformer, or for Z-Image (whose
    mixed stage runs its modules on tokens) on its timestep embedder, which runs once a call."""
    calls = []
    if type(pipe.transformer).__name__ == "ZImageTransformer2DModel":
        handle = pipe.transformer.t_embedder.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
        return calls, handle

    def hook(module, args, kwargs):
        calls.append(len(kwargs.get("hidden_states", args[0] if args else None)))
    return calls, pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("model", MODELS)
def test_transformer_calls_per_step_are_the_stock_pipelines(pipes, model):
    pipe = pipes(model)
    inputs = tiny_inputs(pipe, 4, guided=model in GUIDED)
    calls, handle = count_calls(pipe)
    pipe(**inputs, height=128, width=128, num_inference_steps=2, generator=gens(4), output_type="latent")
    stock = list(calls)
    calls.clear()
    out = RALU(pipe, MIXED)(**inputs, height=128, width=128, generator=gens(4), output_type="latent",
                            record_transitions=True)
    handle.remove()
    per_step = len(stock) // 2
    assert len(calls) == per_step * MIXED.total_steps and set(calls) == set(stock)
    sel = out.transitions[0].selected
    assert any(not torch.equal(sel[0], sel[b]) for b in range(1, 4))     # the mixed stage really is mixed


@pytest.mark.parametrize("model", ["chroma", "flux2-klein-base-4b", "qwen-image", "z-image"])
def test_no_host_sync_inside_a_stage(pipes, model, watched_steps):
    pipe = pipes(model)
    RALU(pipe, MIXED)(**tiny_inputs(pipe, 2, guided=True), height=128, width=128, generator=gens(2),
                      output_type="latent")
    assert watched_steps == [[], [], []]


@pytest.mark.parametrize("model", ["chroma", "flux2-dev", "qwen-image", "z-image-turbo"])
@pytest.mark.parametrize("solver", ["FlowMatchHeunDiscreteScheduler", "DPMSolverMultistepScheduler",
                                    "UniPCMultistepScheduler"])
def test_every_solver_runs_every_family(pipes, model, solver):
    import diffusers

    pipe = pipes(model)
    out = RALU(pipe, MIXED, solver=getattr(diffusers, solver))(**tiny_inputs(pipe, 2), height=128, width=128,
                                                                generator=gens(2), output_type="latent")
    assert torch.isfinite(out.images).all()
    heun = solver.startswith("FlowMatchHeun")
    assert [s.calls for s in out.stage_calls] == [2 * n - 1 if heun else n for n in MIXED.steps]


@pytest.mark.parametrize("model", ["flux-dev", "flux2-klein-base-4b", "qwen-image"])
def test_a_cache_with_guidance_is_the_stock_pipeline_with_that_cache(pipes, model, monkeypatch):
    """Guidance's second call runs in its own cache context ("uncond"), as the stock pipelines
    run it, so a cache never mixes the two: one stage with TaylorSeer is the stock run with it
    (within 1e-4: its finite differences amplify the float32 rounding of the sigmas), and one
    whose second call shared the first's context is not. (Chroma's and Z-Image's pipelines
    and blocks have no cache support in diffusers.)"""
    from diffusers.hooks import TaylorSeerCacheConfig

    from ralu_torch.backends.base import Guided

    pipe = pipes(model)
    inputs = tiny_inputs(pipe, 2, guided=True)
    pipe.transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1))
    layout = Layout(steps=(6,), ends=(1.0,))
    try:
        stock = pipe(**inputs, height=128, width=128, num_inference_steps=6, generator=gens(2),
                     output_type="latent").images
        out = RALU(pipe, layout)(**inputs, height=128, width=128, generator=gens(2), output_type="latent")
        monkeypatch.setattr(Guided, "branches", lambda self: [("cond", self.positive), ("cond", self.negative)])
        mixed = RALU(pipe, layout)(**inputs, height=128, width=128, generator=gens(2), output_type="latent")
    finally:
        pipe.transformer.disable_cache()
    assert (out.images - stock).abs().max() < 1e-4
    assert out.stage_calls[0].skipped_calls > 0                           # the cache did skip work
    assert (mixed.images - stock).abs().max() > 1e-3


def test_flux2_latents_in_the_pipelines_own_form(pipes):
    from diffusers.utils.torch_utils import randn_tensor

    pipe = pipes("flux2-dev")
    inputs = tiny_inputs(pipe, 1)
    ralu = RALU(pipe, MIXED)
    ref = ralu(**inputs, height=128, width=128, generator=gens(1), output_type="latent").images
    g = gens(1)
    noise = randn_tensor((1, 16, 4, 4), generator=g)          # FLUX.2 draws the patchified latent
    out = ralu(**inputs, height=128, width=128, latents=noise, generator=g, output_type="latent").images
    assert torch.equal(out, ref)


def test_unsupported_and_image_conditioned_pipelines_are_refused_by_name(pipes):
    import diffusers

    from ralu_torch.backends.families import SUPPORTED

    pipe = pipes("qwen-image")
    edit = diffusers.QwenImageInpaintPipeline(**pipe.components)
    with pytest.raises(ValueError, match=f"RALU cannot run QwenImageInpaintPipeline: it runs the text-to-image "
                                         f"and text-to-video pipelines {', '.join(SUPPORTED)}; load the text-to-image QwenImagePipeline"):
        RALU(edit)
    # FLUX.2 takes reference images (tests/test_references.py): what its pipeline cannot take is refused by its rule
    with pytest.raises(ValueError, match="Flux2Pipeline cannot take reference image 1: Image must be a PIL.Image.Image"):
        RALU(pipes("flux2-dev"), MIXED)(**tiny_inputs(pipes("flux2-dev")), image=[object()], height=128, width=128)


@pytest.mark.parametrize("model", MODELS)
def test_sizes_off_the_grid_name_the_rule(pipes, model):
    pipe = pipes(model)
    with pytest.raises(ValueError, match=r"height and width must be positive multiples of 32 pixels .* got 100x128"):
        RALU(pipe, MIXED)(**tiny_inputs(pipe), height=100, width=128)


def test_presets_of_another_family_are_refused_unless_forced(pipes):
    pipe = pipes("qwen-image")
    with pytest.raises(ValueError, match="preset 'flux-dev-7x' was made for flux-dev, but this is a Qwen-Image "
                                         "pipeline"):
        RALU(pipe, "flux-dev-7x")
    assert RALU(pipe, "flux-dev-7x", allow_other_model=True).layout == preset("flux-dev-7x").layout


@pytest.mark.parametrize("model, kwargs, message", [
    ("flux2-dev", dict(negative_prompt_embeds=torch.zeros(1, 8, 32)), "negative_prompt_embeds would be ignored"),
    ("flux2-dev", dict(negative_prompt="blurry"), "RALU with Flux2Pipeline does not take 'negative_prompt'"),
    ("qwen-image", dict(negative_prompt_embeds=torch.zeros(1, 8, 32), true_cfg_scale=1.0),
     "a negative prompt on Qwen-Image needs true_cfg_scale > 1"),
    ("chroma", dict(negative_prompt_embeds=torch.zeros(1, 8, 32), negative_prompt_attention_mask=torch.ones(
        1, 8, dtype=torch.bool), guidance_scale=1.0), "a negative prompt on Chroma needs guidance_scale > 1"),
    ("z-image-turbo", dict(negative_prompt_embeds=[torch.zeros(4, 32)], guidance_scale=0.0),
     "a negative prompt on Z-Image needs guidance_scale > 0"),
    ("z-image", dict(prompt_embeds=torch.zeros(1, 8, 32)), r"prompt_embeds must be a list of 2-D"),
    ("chroma", dict(pooled_prompt_embeds=torch.zeros(1, 32)), "does not take 'pooled_prompt_embeds'"),
])
def test_arguments_a_family_does_not_take_are_refused(pipes, model, kwargs, message):
    pipe = pipes(model)
    inputs = {**tiny_inputs(pipe), **kwargs}
    with pytest.raises(ValueError, match=message):
        RALU(pipe, MIXED)(**inputs, height=128, width=128)


def test_default_schedule_is_the_familys_own(pipes):
    assert RALU(pipes("qwen-image")).layout == preset("qwen-image-7x", "optimised").layout
    assert RALU(pipes("flux2-klein-4b")).layout == preset("flux2-klein-4b-fast", "optimised").layout


def test_solved_schedule_uses_the_pipelines_rule(pipes):
    """FLUX.2's shift depends on the step count; Qwen-Image's grid ends at shift_terminal."""
    flux2 = RALU(pipes("flux2-dev"), MIXED).schedule_for(128, 128)
    rule = backend_for(pipes("flux2-dev")).shift_rule()
    assert flux2.layout.base_shift == pytest.approx(rule(64, MIXED.total_steps))
    qwen = RALU(pipes("qwen-image"), MIXED).schedule_for(128, 128)
    assert qwen.layout.terminal == 0.02 and qwen.stages[-1].sigmas[-2] == pytest.approx(0.02)
    assert solve(ONE_STAGE.with_base(qwen.layout.base_shift, 0.02)).jsd == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("model", ["qwen-image", "z-image"])
def test_callbacks_see_the_familys_tensors_and_can_interrupt(pipes, model):
    pipe = pipes(model)
    seen = []

    def callback(owner, step, timestep, tensors):
        seen.append((step, sorted(tensors)))
        if step == 2:
            owner._interrupt = True
        return {}

    out = RALU(pipe, MIXED)(**tiny_inputs(pipe, 2, guided=True), height=128, width=128, generator=gens(2),
                            output_type="latent", callback_on_step_end=callback,
                            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"])
    assert out.interrupted and [s for s, _ in seen] == [0, 1, 2]
    assert seen[0][1] == ["latents", "negative_prompt_embeds", "prompt_embeds"]
    assert torch.isfinite(out.images).all()


@pytest.mark.parametrize("model", ["z-image", "qwen-image", "chroma", "flux2-dev"])
def test_a_lora_scale_is_applied_as_the_stock_pipeline_applies_it(model):
    """``joint_attention_kwargs={"scale": s}`` scales a loaded adapter as the stock pipeline's
    ``joint_attention_kwargs`` (FLUX.2, Qwen-Image: ``attention_kwargs``) does, including on
    Z-Image, whose transformer RALU runs module by module."""
    import inspect

    from peft import LoraConfig

    pipe = tiny_pipeline(model)                    # its own: the adapter changes it
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"],
                                            init_lora_weights=False))
    kwarg = next(k for k in ("joint_attention_kwargs", "attention_kwargs")
                 if k in inspect.signature(pipe.__call__).parameters)
    inputs = {**tiny_inputs(pipe, 1), "height": 64, "width": 64, "output_type": "latent"}
    stock = pipe(**inputs, **{kwarg: {"scale": 0.5}}, num_inference_steps=4, generator=gens(1)).images
    ours = RALU(pipe, ONE_STAGE)(**inputs, joint_attention_kwargs={"scale": 0.5}, generator=gens(1)).images
    full = RALU(pipe, ONE_STAGE)(**inputs, generator=gens(1)).images
    assert (ours - stock).abs().max() < 1e-5
    assert (ours - full).abs().max() > 1e-3         # the scale really changes the result


#: the transformer config field that gives each family's text width (pooled: pooled_projection_dim)
TEXT_WIDTH = {"flux-dev": "joint_attention_dim", "sd3-medium": "joint_attention_dim", "chroma": "joint_attention_dim",
              "flux2-dev": "joint_attention_dim", "qwen-image": "joint_attention_dim", "z-image": "cap_feat_dim",
              "wan2.1-t2v-14b": "text_dim"}


@pytest.mark.parametrize("model", list(TEXT_WIDTH))
def test_embeddings_of_another_width_are_refused_naming_the_transformers(model):
    pipe = tiny_pipeline(model)
    width = getattr(pipe.transformer.config, TEXT_WIDTH[model])
    inputs = tiny_inputs(pipe, 1, guided=model != "flux2-dev")
    for name in [k for k in inputs if k.endswith("prompt_embeds")]:
        value = inputs[name]
        wrong = [torch.zeros(v.shape[0], v.shape[1] + 1) for v in value] if isinstance(value, list) else \
            torch.zeros(*value.shape[:-1], value.shape[-1] + 1)
        expected = pipe.transformer.config.pooled_projection_dim if "pooled" in name else width
        message = (rf"{name} must be \(tokens, {expected}\) tensors" if isinstance(value, list)
                   else rf"{name} must have width {expected} \(its last dimension")
        with pytest.raises(ValueError, match=message):
            RALU(pipe, ONE_STAGE)(**{**inputs, name: wrong}, height=64, width=64)


@pytest.mark.parametrize("model", [*MODELS, "flux-dev", "sd3-medium", "wan2.1-t2v-14b", "wan2.2-t2v-a14b"])
def test_the_compiled_blocks_are_every_repeated_block_of_the_model(model):
    """What ``compile=`` compiles: every block in the transformer's module lists (each expert's
    for Wan 2.2), once each, in the model's order; nothing else."""
    pipe = tiny_pipeline(model)
    transformers = [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
    expected = [b for t in transformers for lst in t.children() if isinstance(lst, torch.nn.ModuleList)
                for b in lst if "Block" in type(b).__name__]
    blocks = backend_for(pipe).blocks()
    assert len(expected) > 0 and [id(b) for b in blocks] == [id(b) for b in expected]


@pytest.mark.parametrize("model", ["qwen-image", "z-image", "flux2-dev"])
def test_compiled_blocks_give_the_eager_result(pipes, model):
    pipe = tiny_pipeline(model)               # its own: compiling changes the blocks in place
    inputs = tiny_inputs(pipe, 2)
    eager = RALU(pipe, MIXED)(**inputs, height=128, width=128, generator=gens(2), output_type="latent").images
    torch._dynamo.reset()
    try:
        compiled = RALU(pipe, MIXED, compile={"backend": "eager"})(**inputs, height=128, width=128,
                                                                   generator=gens(2), output_type="latent").images
    finally:
        torch._dynamo.reset()
    assert (compiled - eager).abs().max() < 1e-5
