"""Channel-concatenated conditions (issue 28 items 2, 4 and 7) on tiny random pipelines
(``ralu_torch.testing.conditioned_pipeline``): FluxFillPipeline, FluxControlPipeline and
WanImageToVideoPipeline as Wan 2.1 I2V (CLIP image encoder), Wan 2.1 FLF2V (``last_image``),
Wan 2.2 I2V A14B (two experts) and Wan 2.2 TI2V-5B (``expand_timesteps``).

- a one-stage schedule is the stock pipeline (1e-5, float32, CPU) at two sizes and batch 2 with
  the pipeline's guidance (Wan: classifier-free; FLUX Fill: its default 30), Wan 2.2 I2V with
  both experts called across the boundary (and a last frame, as FLF2V);
- a 3-stage layout (coarse, mixed, full) at batch 2 makes the stock number of transformer calls
  per step, ends finite, and hooks on the transformer input show the condition at every stage
  as the rule lays it out: each token the stock's full-resolution condition averaged over the
  cells it covers (computed here by slicing, not by the rule's code), exactly the stock's at full
  resolution; Wan 2.2 TI2V's first frame replaced and at timestep 0, its result's first frame
  the image's latents;
- a coarse FLUX Fill token's mask values average to the fraction of its pixels masked;
- ``select="condition"`` picks by the condition image's edges, before the first step and
  without a decode;
- bad input (an image the pipeline cannot take, a size off the grid, a video where an image is
  due, a mask of the wrong size, ...) is one line, before any model runs; inpainting and
  ControlNet pipelines are refused by name with the reason.
"""

import contextlib
import inspect

import pytest
import torch
from hypothesis import given, strategies as st
from PIL import Image

import ralu_torch.backends.wan as wan_module
from ralu_schedule import Layout
from ralu_torch import RALU, stage_scheduler
from ralu_torch.backends import backend_for
from ralu_torch.backends.conditions import check_image, check_mask
from ralu_torch.selection import ConditionSelection
from ralu_torch.testing import conditioned_pipeline, tiny_image, tiny_inputs, tiny_pipeline
from ralu_torch.tokens import pack

ONE_STAGE = Layout(steps=(3,), ends=(1.0,))
THREE = Layout(steps=(2, 2, 2), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))
WAN = ("wan2.1-i2v", "wan2.1-flf2v", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b")
MODELS = ("flux-fill", "flux-control") + WAN


@pytest.fixture(scope="module")
def pipes():
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = conditioned_pipeline(model)
        return cache[model]

    return get


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def fill_mask(height, width):
    """White (to fill) over a rectangle whose edges cut through latent pixels and coarse tokens."""
    mask = Image.new("L", (width, height))
    mask.paste(255, (width // 5, height // 6, width // 2 + 3, height - 9))
    return mask


def inputs(pipe, model, height, width, batch=2):
    """The pipeline's embeddings (guided where it guides by separate calls) and its condition."""
    out = tiny_inputs(pipe, batch, guided=model.startswith("wan"))
    if model == "wan2.2-i2v-a14b":
        out["guidance_scale_2"] = 2.5
    image = tiny_image(height, width, seed=3)
    if model == "flux-fill":
        out.update(image=image, mask_image=fill_mask(height, width))
    elif model == "flux-control":
        out.update(control_image=image)
    else:
        out.update(image=image, num_frames=5)
        if model in ("wan2.1-flf2v", "wan2.2-i2v-a14b"):       # the first and last frames given
            out["last_image"] = tiny_image(height, width, seed=4)
    return out


def sizes(model):
    """Two sizes of the one-stage parity (Wan 2.2 TI2V's tokens are 32 pixels, the others' 16)."""
    return [(64, 128), (128, 64)] if model == "wan2.2-ti2v-5b" else [(32, 48), (64, 32)]


def stock(pipe, schedule, **kwargs):
    """The stock pipeline's latents with its scheduler pinned to the schedule's first stage."""
    base = pipe.scheduler
    pipe.scheduler = stage_scheduler(base, schedule, 0)
    try:
        out = pipe(**kwargs, num_inference_steps=schedule.layout.steps[0], output_type="latent")
    finally:
        pipe.scheduler = base
    return out.frames if hasattr(out, "frames") else out.images


@contextlib.contextmanager
def expert_calls(pipe):
    """Calls per expert (the condition embedder runs once per transformer call)."""
    calls = {"transformer": 0, "transformer_2": 0}
    handles = []
    for name in calls:
        model = getattr(pipe, name, None)
        if model is not None:
            handles.append(model.condition_embedder.register_forward_pre_hook(
                lambda m, a, name=name: calls.__setitem__(name, calls[name] + 1)))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("model", MODELS)
def test_one_stage_layout_is_the_stock_pipeline(pipes, model):
    pipe = pipes(model)
    ralu = RALU(pipe, ONE_STAGE)
    frames = 5 if model in WAN else None
    for (height, width), generator in zip(sizes(model), (lambda: gens(2), lambda: torch.Generator().manual_seed(5))):
        kw = inputs(pipe, model, height, width)          # a generator per image, then one for the batch
        schedule = ralu.schedule_for(height, width, frames)
        ref = stock(pipe, schedule, **kw, height=height, width=width, generator=generator())
        with expert_calls(pipe) if model in WAN else contextlib.nullcontext() as calls:
            ours = ralu(**kw, height=height, width=width, generator=generator(), output_type="latent").images
        assert ours.shape == ref.shape and ref.shape[0] == 2
        assert (ours - ref).abs().max() < 1e-5, (model, height, width)
        if model == "wan2.2-i2v-a14b":           # the schedule crosses the boundary: both experts
            assert calls["transformer"] > 0 and calls["transformer_2"] > 0
    if model == "flux-fill":                     # its own default guidance, 30, on both sides
        stock_default = inspect.signature(type(pipe).__call__).parameters["guidance_scale"].default
        assert ralu.backend.default_guidance_scale == stock_default == 30.0


# -- the condition on every stage's tokens ------------------------------------------------------------------
def pooled(ref: torch.Tensor, tokens) -> torch.Tensor:
    """``(B, L, 4 C)``: each token of ``tokens`` reads the full-resolution latent ``ref`` ``(B, C, 2R, 2W)``
    averaged over the cells it covers, feature ``(c, dy, dx)`` over the ``S x S`` latent pixels its
    ``(dy, dx)`` quarter covers (by slicing, token by token)."""
    B, C = ref.shape[:2]
    out = torch.empty(B, tokens.length, C, 2, 2)
    for b in range(B):
        for i in range(tokens.length):
            r, c = (2 * int(v) for v in tokens.cells[b, i])
            S = int(tokens.size[b, i])
            for dy in range(2):
                for dx in range(2):
                    block = ref[b, :, r + dy * S:r + (dy + 1) * S, c + dx * S:c + (dx + 1) * S]
                    out[b, i, :, dy, dx] = block.mean(dim=(1, 2))
    return out.reshape(B, tokens.length, 4 * C)


def stacked_latent(x: torch.Tensor) -> torch.Tensor:
    """A transformer's raw input as a full-resolution latent: FLUX's packed ``(B, L, F)`` tokens
    stay tokens; Wan's clip ``(B, C, T, h, w)`` is stacked ``(B, C, T h, w)`` (RALU's frame layout)."""
    return x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1]) if x.dim() == 5 else x


@contextlib.contextmanager
def recorder(backend, pipe, monkeypatch):
    """Every stage's token set (the backend's ``prepare``) and every transformer input after it:
    ``(stage, input tokens, timestep(s), image embeddings)``."""
    stages, calls = [], []
    prepare = backend.prepare

    def spy(tokens, cond):
        stages.append(tokens)
        return prepare(tokens, cond)

    monkeypatch.setattr(backend, "prepare", spy)
    handle = None
    if isinstance(backend, wan_module.WanBackend):
        forward = wan_module.forward_tokens

        def record(model, x, rotary, text, t, expand=False, image=None):
            calls.append((len(stages) - 1, x.clone(), t.clone(), image))
            return forward(model, x, rotary, text, t, expand, image)

        monkeypatch.setattr(wan_module, "forward_tokens", record)
    else:
        handle = pipe.transformer.register_forward_pre_hook(
            lambda m, a, kw: calls.append((len(stages) - 1, kw["hidden_states"].clone(), kw["timestep"].clone(), None)),
            with_kwargs=True)
    try:
        yield stages, calls
    finally:
        if handle is not None:
            handle.remove()


def stock_input(pipe, **kwargs):
    """The stock pipeline's first transformer input (latents and condition, as the model takes them),
    its timestep, and (Wan) image embeddings; one step, nothing decoded."""
    seen = []
    model = pipe.transformer
    handle = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)
    try:
        pipe(**kwargs, num_inference_steps=1, output_type="latent")
    finally:
        handle.remove()
    kw = seen[0]
    return kw["hidden_states"], kw["timestep"], kw.get("encoder_hidden_states_image")


@pytest.mark.parametrize("model", MODELS)
def test_three_stages_take_the_condition_as_the_rule_lays_it_out(pipes, model, monkeypatch):
    pipe = pipes(model)
    video = model in WAN
    height, width = (64, 128) if model == "wan2.2-ti2v-5b" else (64, 64)
    kw = inputs(pipe, model, height, width)
    frames = {"num_frames": 5} if video else {}
    if model == "flux-fill":        # the masked image's latents are drawn after the noise: given noise aligns both
        noise_full = torch.randn(2, (height // 16) * (width // 16), 64, generator=torch.Generator().manual_seed(9))
        noise_coarse = torch.randn(2, 16, height // 16, width // 16, generator=torch.Generator().manual_seed(9))
    ref, ref_t, ref_image = stock_input(pipe, **kw, height=height, width=width, generator=gens(2),
                                        **({"latents": noise_full} if model == "flux-fill" else {}))
    ref = stacked_latent(ref.float())
    calls_per_step = 2 if video else 1                    # classifier-free guidance: two calls, one batch each
    ralu = RALU(pipe, THREE, select="condition" if video else "edges")
    with recorder(ralu.backend, pipe, monkeypatch) as (stages, calls):
        out = ralu(**kw, height=height, width=width, generator=gens(2), output_type="latent",
                   **({"latents": noise_coarse} if model == "flux-fill" else {}))
    assert torch.isfinite(out.images).all() and out.images.shape[0] == 2
    assert len(calls) == calls_per_step * THREE.total_steps
    assert [int(t.size.max()) for t in stages] == [2, 2, 1] and not stages[1].uniform     # coarse, mixed, full
    ppt = ralu.backend.pixels_per_token
    latent = 4 * ralu.backend.latent_channels
    if video:
        grid = (2 * (height // ppt), width // ppt)
        full = pack(ref)                                                    # the stock's input as tokens
    else:
        grid = (height // ppt, width // ppt)
        full = ref
    from ralu_torch.tokens import unpack

    ref_latent = unpack(full, grid)
    first = model == "wan2.2-ti2v-5b"
    for stage, x, t, image in calls:
        tokens = stages[stage]
        expect = pooled(ref_latent, tokens)
        if first:                                   # the first latent frame is the image's, at timestep 0
            frame0 = tokens.cells[..., 0] < grid[0] // 2
            assert torch.allclose(x[frame0], expect[frame0], atol=1e-6)
            assert bool((t[frame0] == 0).all()) and bool((t[~frame0] == t[~frame0][0]).all()) and t[~frame0][0] > 0
        else:
            assert torch.allclose(x[..., latent:].float(), expect[..., latent:], atol=1e-6), (model, stage)
            if stage == 2:                          # full resolution: exactly the stock's condition
                assert torch.equal(x[..., latent:].float(), full[..., latent:])
        if ref_image is not None:                   # Wan 2.1's CLIP image embeddings reach every call
            assert torch.equal(image, ref_image)
    if model == "wan2.2-ti2v-5b":                   # the result's first frame is the image's latents, exactly
        assert torch.equal(out.images[:, :, 0], ref[:, :, :height // 16])
        assert ref_t.shape == (2, grid[0] * grid[1]) and bool((ref_t[:, :grid[0] * grid[1] // 2] == 0).all())


def test_a_coarse_fill_token_reads_the_fraction_of_its_pixels_masked(pipes):
    pipe = pipes("flux-fill")
    be = backend_for(pipe)
    height, width = 64, 96
    kw = inputs(pipe, "flux-fill", height, width)
    from ralu_torch.tokens import TokenSet

    ralu = RALU(pipe, THREE)
    cond = be.encode(prompt=None, num_images_per_prompt=1, max_sequence_length=512, guidance_scale=30.0,
                     joint_attention_kwargs=None, device=be.device, height=height, width=width, generator=gens(2),
                     **{k: v for k, v in kw.items()})
    coarse = TokenSet.regular(2, (height // 16, width // 16), 2)
    values = be.prepare(coarse, cond).condition[..., 64:]               # the 256 mask values of each token
    mask = pipe.mask_processor.preprocess(kw["mask_image"], height=height, width=width)[0, 0]
    side = 2 * be.pixels_per_token                                       # a coarse token: 32 x 32 pixels
    fraction = mask.unfold(0, side, side).unfold(1, side, side).mean(dim=(-1, -2)).flatten()
    assert torch.allclose(values.mean(dim=-1)[0], fraction, atol=1e-6)
    assert bool(((values >= 0) & (values <= 1)).all()) and bool(((values > 0) & (values < 1)).any())
    assert ralu.layout.num_stages == 3


def test_ti2v_first_frame_follows_the_straight_path_to_the_image(pipes):
    """The first frame's velocity is (x - condition) / sigma: its clean estimate is the image's latents."""
    pipe = pipes("wan2.2-ti2v-5b")
    be = backend_for(pipe)
    kw = inputs(pipe, "wan2.2-ti2v-5b", 64, 64)
    be.set_frames(2)
    cond = be.encode(prompt=None, num_images_per_prompt=1, max_sequence_length=512, guidance_scale=4.0,
                     joint_attention_kwargs=None, device=be.device, height=64, width=64, num_frames=5,
                     generator=None, **{k: v for k, v in kw.items() if k not in ("num_frames", "guidance_scale")})
    from ralu_torch.tokens import TokenSet

    tokens = TokenSet.regular(2, (4, 2), 1)
    pos = be.prepare(tokens, cond)
    x = torch.randn(2, tokens.length, be.features, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor(0.6)
    v = be.velocity(x, pos, sigma, cond)
    estimate = x - sigma * v
    frame0 = tokens.cells[..., 0] < 2
    assert torch.allclose(estimate[frame0], pos.condition[frame0], atol=1e-6)
    assert not torch.allclose(estimate[~frame0], pos.condition[~frame0], atol=1e-2)


# -- selection from the condition ----------------------------------------------------------------------------
def test_condition_selection_picks_the_condition_images_edges_before_the_first_step(pipes, monkeypatch):
    pipe = pipes("flux-control")
    height, width = 64, 64
    picture = torch.full((1, 3, height, width), -0.5)
    g = torch.Generator().manual_seed(0)
    picture[:, :, :32, 32:] = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1         # texture: the top-right token
    kw = {**tiny_inputs(pipe, 2), "control_image": picture}             # a tensor: taken as it is, in [-1, 1]
    ralu = RALU(pipe, THREE, select="condition")
    decodes = []
    monkeypatch.setattr(ralu.backend, "decode", lambda z: decodes.append(z) or torch.zeros(0))
    out = ralu(**kw, height=height, width=width, generator=gens(2), output_type="latent", record_transitions=True)
    first = out.transitions[0]
    assert first.estimate is None and not decodes                         # no estimate decoded for it
    chosen = first.before.cells[first.selected] // 2
    assert chosen.tolist() == [[0, 1], [0, 1]]                            # 1 of 4 coarse tokens: the textured one
    # the bound policy is the unbound one's edges of the preprocessed control image, found before the first step
    again = ConditionSelection(ralu.backend.pixels_per_token).bind(type("C", (), {"selection_pixels": picture})())
    assert torch.equal(again(None, first.before, 0.25), first.selected)


def test_condition_selection_of_a_clip_picks_the_same_places_in_every_latent_frame(pipes):
    from ralu_torch.tokens import TokenSet

    T, rows, cols, ppt = 3, 4, 4, 16
    picture = torch.full((1, 3, rows * ppt, cols * ppt), -0.5)
    picture[:, :, 32:, :32] = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    policy = ConditionSelection(ppt).bind(type("C", (), {"selection_pixels": picture})())
    tokens = TokenSet.regular(2, (T * rows, cols), 2)
    mask = policy(None, tokens, 1 / 4)
    picked = tokens.cells[mask].view(2, T, 2)
    assert picked[..., 0].tolist() == [[2 + 4 * f for f in range(T)]] * 2 and bool((picked[..., 1] == 0).all())


def test_condition_selection_needs_a_condition(pipes):
    flux = tiny_pipeline("flux-dev")
    with pytest.raises(ValueError, match="select='condition' takes its edges from the image a pipeline is conditioned "
                                         "on; FluxPipeline has none"):
        RALU(flux, THREE, select="condition")
    pipe = pipes("flux-control")
    packed = torch.zeros(2, 16, 64)
    with pytest.raises(ValueError, match="select='condition' needs the condition's pixels"):
        RALU(pipe, THREE, select="condition")(**tiny_inputs(pipe, 2), control_image=packed, height=64, width=64)
    with pytest.raises(ValueError, match="RALU binds it to each call"):
        ConditionSelection(16)(None, None, 0.5)


# -- bad input: one line, before any model runs ------------------------------------------------------------
@contextlib.contextmanager
def no_model_runs(pipe):
    """Fails the test if a transformer, the VAE or an image encoder runs."""
    ran = []
    models = [getattr(pipe, n, None) for n in ("transformer", "transformer_2", "vae", "image_encoder")]
    handles = [m.register_forward_pre_hook(lambda mod, a: ran.append(type(mod).__name__))
               for m in models if m is not None]
    handles += [pipe.vae.encoder.register_forward_pre_hook(lambda mod, a: ran.append("vae.encoder"))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        assert not ran, f"a model ran before the refusal: {ran}"


def rgba(h=64, w=64):
    return tiny_image(h, w, mode="RGBA")


BAD = [
    ("wan2.1-i2v", dict(image=rgba()), r"image must be an RGB image, got a PIL image in mode 'RGBA'; convert it"),
    ("wan2.1-i2v", dict(image=torch.rand(1, 3, 5, 64, 64)), r"image must be an image, got a video \(Tensor"),
    ("wan2.1-i2v", dict(image=[tiny_image(64, 64)] * 5), r"image must be one image .* got a list of 5; .*a list of "
                                                          "frames is a video where an image is due"),
    ("wan2.1-i2v", dict(image=torch.rand(2, 3, 64, 64)), "image must be one image, got a batch of 2"),
    ("wan2.1-i2v", dict(image=torch.rand(1, 4, 64, 64)), r"image must have 3 channels \(RGB\), got 4"),
    ("wan2.1-i2v", dict(image=None), "WanImageToVideoPipeline needs image="),
    ("wan2.1-i2v", dict(height=80), r"height and width must be positive multiples of 32 pixels"),
    ("wan2.1-i2v", dict(image_embeds=torch.zeros(1, 5, 32)), "refuses image= with image_embeds= and cannot run without"),
    ("wan2.1-i2v", dict(last_image=tiny_image(64, 64)), "last_image needs the first-last-frame model"),
    ("wan2.1-flf2v", dict(last_image=None), "give last_image= as well"),
    ("wan2.2-ti2v-5b", dict(last_image=tiny_image(64, 64)), "last_image is not used by Wan 2.2 TI2V"),
    ("wan2.2-i2v-a14b", dict(last_image=rgba()), "last_image must be an RGB image"),
    ("flux-fill", dict(mask_image=fill_mask(32, 64)), r"mask_image must be the image's size, 64x64 \(height x width\), "
                                                      "got 32x64"),
    ("flux-fill", dict(mask_image=torch.zeros(1, 3, 64, 64)), "mask_image must have one channel, got 3"),
    ("flux-fill", dict(image=rgba()), "image must be an RGB image"),
    ("flux-fill", dict(image=tiny_image(64, 64, mode="L")), "image must be an RGB image, got a PIL image in mode 'L'"),
    ("flux-fill", dict(strength=0.5), "strength must be 1 .* got 0.5"),
    ("flux-fill", dict(masked_image_latents=torch.zeros(2, 16, 320)), "masked_image_latents= cannot be used"),
    ("flux-fill", dict(image=[tiny_image(64, 64)] * 3, mask_image=[fill_mask(64, 64)] * 3),
     "image: got 3 images for a batch of 2"),
    ("flux-fill", dict(mask_image=None), "mask_image is needed with the image"),
    ("flux-fill", dict(negative_prompt="x"), "RALU with FluxFillPipeline does not take 'negative_prompt'"),
    ("flux-fill", dict(generator=gens(3)), "got 3 generators for a batch of 2 images"),
    ("flux-control", dict(control_image=None), "FluxControlPipeline needs control_image="),
    ("flux-control", dict(control_image=torch.zeros(2, 9, 64)), r"control_image as packed latents must be \(batch, 16, "
                                                                 r"64\) at 64x64"),
    ("flux-control", dict(control_image=[tiny_image(64, 64)] * 3), "got 3 control images for 2 prompts"),
]


@pytest.mark.parametrize("model, bad, message", BAD, ids=[f"{m}-{'-'.join(b)}" for m, b, _ in BAD])
def test_bad_input_is_one_line_before_any_model_runs(pipes, model, bad, message):
    pipe = pipes(model)
    kw = {**inputs(pipe, model, 64, 64), "height": 64, "width": 64, "generator": gens(2), **bad}
    kw = {k: v for k, v in kw.items() if v is not None or k in ("image", "control_image", "mask_image")}
    with no_model_runs(pipe), pytest.raises(ValueError, match=message) as err:
        RALU(pipe, THREE)(**kw)
    assert "\n" not in str(err.value)


def test_a_transformer_of_another_width_is_refused_at_construction(pipes):
    import diffusers

    t2v = tiny_pipeline("wan2.1-t2v-14b")
    i2v = diffusers.WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=t2v.vae, scheduler=t2v.scheduler,
                                            transformer=t2v.transformer)
    with pytest.raises(ValueError, match=r"WanImageToVideoPipeline gives its transformer 36 input channels \(16 latent "
                                         r"\+ 4 mask \+ 16 condition channels\); this transformer takes 16"):
        RALU(i2v)
    flux = tiny_pipeline("flux-dev")
    for cls, width in (("FluxFillPipeline", 384), ("FluxControlPipeline", 128)):
        with pytest.raises(ValueError, match=f"{cls} gives its transformer {width} values per token .* this "
                                             "transformer takes 64"):
            RALU(getattr(diffusers, cls).from_pipe(flux))


@pytest.mark.parametrize("cls, why", [
    ("FluxInpaintPipeline", "an inpainting pipeline pastes the source image, noised with its first noise"),
    ("FluxControlNetPipeline", "a ControlNet is a second network whose residuals are added"),
    ("FluxControlNetInpaintPipeline", "a ControlNet is a second network"),
    ("StableDiffusion3InpaintPipeline", "an inpainting pipeline pastes"),
    ("QwenImageControlNetPipeline", "a ControlNet is a second network"),
])
def test_inpainting_and_controlnet_pipelines_are_refused_by_name_with_the_reason(cls, why):
    fake = type(cls, (), {})()
    with pytest.raises(ValueError, match=f"RALU cannot run {cls}: .*Why not {cls}: {why}") as err:
        backend_for(fake)
    assert "\n" not in str(err.value)
    if cls.startswith("Flux"):
        assert "of its image-conditioned pipelines RALU runs FluxImg2ImgPipeline, FluxFillPipeline, FluxControlPipeline" in str(err.value)


# -- every image input either checks out as the stock processor reads it, or is one clean line -------------------
def _image_inputs():
    import numpy as np

    side = st.sampled_from([1, 8, 16])
    pil = st.builds(lambda h, w, mode: Image.new(mode, (w, h)), side, side, st.sampled_from(["RGB", "RGBA", "L", "P"]))
    tensor = st.builds(lambda shape: torch.rand(shape),
                       st.lists(st.sampled_from([1, 2, 3, 4, 8, 16]), min_size=1, max_size=5).map(tuple))
    array = st.builds(lambda shape: np.random.default_rng(0).random(shape).astype(np.float32),
                      st.lists(st.sampled_from([1, 3, 4, 8, 16]), min_size=2, max_size=5).map(tuple))
    one = st.one_of(pil, tensor, array, st.none(), st.just("a.png"), st.just(3))
    return st.one_of(one, st.lists(one, min_size=0, max_size=3))


@given(_image_inputs())
def test_an_image_input_is_checked_as_the_stock_processor_reads_it(value):
    """What check_image accepts, diffusers' image processor turns into that many RGB images; the rest
    is refused with one line (a ValueError, never another exception)."""
    from diffusers.image_processor import VaeImageProcessor

    try:
        count, height, width = check_image("image", value, pipeline="P")
    except ValueError as err:
        assert "\n" not in str(err)
        return
    out = VaeImageProcessor(vae_scale_factor=16, vae_latent_channels=16).preprocess(value, height=16, width=16)
    assert tuple(out.shape) == (count, 3, 16, 16)


@given(_image_inputs())
def test_a_mask_input_is_checked_as_the_stock_mask_processor_reads_it(value):
    from diffusers.image_processor import VaeImageProcessor

    try:
        count = check_mask("mask_image", value, (1, *image_size(value)))
    except ValueError as err:
        assert "\n" not in str(err)
        return
    processor = VaeImageProcessor(vae_scale_factor=16, vae_latent_channels=16, do_normalize=False, do_binarize=True,
                                  do_convert_grayscale=True)
    out = processor.preprocess(value, height=16, width=16)
    assert tuple(out.shape) == (count, 1, 16, 16)


def image_size(value) -> tuple:
    """The size the mask is compared with: its own where it has one (so sizes agree), else 16 x 16."""
    from ralu_torch.backends.conditions import image_shape

    try:
        return image_shape("mask_image", value, mask=True)[2:]
    except ValueError:
        return (16, 16)


@pytest.mark.parametrize("model", MODELS)
def test_conditioned_backends_conform_to_the_contract(pipes, model):
    from ralu_torch import PipelineBackend, SamplerBackend

    be = backend_for(pipes(model))
    assert isinstance(be, PipelineBackend) and isinstance(be, SamplerBackend) and be.conditioned
