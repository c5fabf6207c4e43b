"""Reference images as tokens in the sequence (ralu_torch.backends.references): FLUX.1 Kontext,
Qwen-Image-Edit, Qwen-Image-Edit-2509 (QwenImageEditPlusPipeline) and FLUX.2 [dev] / [klein]
with ``image=``, on tiny random models (tests/tiny.py), float32, CPU:

- one stage is the stock pipeline (1e-5) at two sizes, batch 2, with the family's guidance;
- three stages with a mixed one, both reference modes, batch 2: the stock number of calls per
  step, finite output, and what reaches the transformer at each stage, read by a hook: the
  generated and reference token counts, the references' values and ids (``"full"``: exactly
  the stock pipeline's; ``"stage"``: the stock latent pooled to the stage's resolution, the
  stock ids of each block's top-left token over ``D``), and the mixed stage's per-image rotary
  tables covering the references;
- the pipelines' own sizing rules (Kontext's ``max_area`` and ``_auto_resize``), the price of a
  call with references, and bad input refused in one line before any model runs.
"""

import pytest
import torch
import torch.nn.functional as F

from ralu_schedule import Layout
from ralu_torch import RALU
from ralu_torch.tokens import pack, unpack
from tiny import memoized_encode, picture, reference_inputs, tiny_kontext, tiny_qwen_edit

ONE_STAGE = Layout(steps=(2,), ends=(1.0,))
MIXED = Layout(steps=(2, 2, 2), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))
PIPES = ["kontext", "qwen-edit", "qwen-edit-plus", "flux2-dev", "flux2-klein-base-4b"]


@pytest.fixture(scope="module")
def pipes():
    from ralu_torch.testing import tiny_pipeline

    cache = {}

    def get(name):
        if name not in cache:
            pipe = (tiny_kontext() if name == "kontext" else tiny_qwen_edit(plus=name == "qwen-edit-plus")
                    if name.startswith("qwen") else tiny_pipeline(name))
            memoized_encode(pipe.vae)
            cache[name] = pipe
        return cache[name]

    return get


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def call(name, pipe, size=None, batch=2):
    """The inputs of a batch-2 call with the family's guidance and its reference image(s), and the
    sizes (height, width) each pipeline is tested at."""
    if name == "kontext":        # one reference per prompt; true CFG
        inputs = reference_inputs(pipe, batch, guided=True)
        inputs.update(image=[picture(96, 128, b) for b in range(batch)], _auto_resize=False)
        sizes = [(128, 128), (64, 96)]
    elif name == "qwen-edit":    # one reference for both prompts; true CFG; references about 1024x1024 pixels
        inputs = reference_inputs(pipe, batch, guided=True)
        inputs.update(image=picture(112, 144))
        sizes = [(512, 512), (384, 512)]
    elif name == "qwen-edit-plus":    # its rule: one prompt per call, so two images of it; two references
        inputs = reference_inputs(pipe, 1, guided=True)
        inputs.update(image=[picture(112, 144), picture(64, 64, 1)], num_images_per_prompt=batch)
        sizes = [(512, 512), (384, 512)]
    else:                        # FLUX.2: two references of their own sizes; [klein] base guides
        inputs = reference_inputs(pipe, batch, guided=True)
        inputs.update(image=[picture(64, 96), picture(96, 64, 1)])
        sizes = [(128, 128), (64, 96)]
    h, w = size or sizes[0]
    if name == "kontext":
        inputs["max_area"] = h * w
    return {**inputs, "height": h, "width": w}, sizes


@pytest.mark.parametrize("name", PIPES)
def test_one_stage_is_the_stock_pipeline(pipes, name):
    pipe = pipes(name)
    _, sizes = call(name, pipe)
    for size in sizes:
        inputs, _ = call(name, pipe, size)
        stock = pipe(**inputs, num_inference_steps=2, generator=gens(2), output_type="latent").images
        ours = RALU(pipe, ONE_STAGE)(**inputs, generator=gens(2), output_type="latent").images
        assert ours.shape == stock.shape
        assert (ours - stock).abs().max() < 1e-5, (name, size)


# -- what reaches the transformer --------------------------------------------------------------
def watch(pipe):
    """Record every transformer call's inputs: token count, position ids (or Qwen's shapes), the
    reference tokens' values are read from hidden_states, and the per-image rotary tables."""
    seen = []

    def hook(module, args, kwargs):
        extra = kwargs.get("joint_attention_kwargs") or kwargs.get("attention_kwargs") or {}
        ids = kwargs.get("img_ids")
        seen.append(dict(x=kwargs["hidden_states"].detach().clone(), rotary=extra.get("ralu_rotary"),
                         ids=ids.reshape(-1, ids.shape[-1])[:kwargs["hidden_states"].shape[1]].clone()
                         if ids is not None else None,
                         shapes=kwargs.get("img_shapes"), text=kwargs["encoder_hidden_states"].shape[1]))
    return seen, pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)


def stock_references(name, pipe, inputs):
    """The reference tokens and their ids (or Qwen's shapes) in the stock pipeline's first call,
    and its calls per step."""
    seen, handle = watch(pipe)
    try:
        out = pipe(**inputs, num_inference_steps=2, generator=gens(2), output_type="latent").images
    finally:
        handle.remove()
    first = seen[0]
    n = out.shape[1] if out.dim() == 3 else out.shape[2] * out.shape[3] // 4   # the generated tokens
    refs = first["x"][:, n:].float()
    if name.startswith("qwen"):
        return refs, [tuple(s[1:]) for s in first["shapes"][0][1:]], len(seen) // 2
    return refs, first["ids"][n:].float(), len(seen) // 2


def pooled(refs, grids, D):
    """Stock reference tokens read at 1/D: each reference's latent average-pooled by D, packed."""
    out, start = [], 0
    for rows, cols in grids:
        latent = unpack(refs[:, start:start + rows * cols], (rows, cols))
        out.append(pack(F.avg_pool2d(latent, D)))
        start += rows * cols
    return torch.cat(out, dim=1)


def top_left_ids(ids, grids, D):
    """Stock ids read at 1/D: each D x D block's top-left token's ids, row and column over D."""
    out, start = [], 0
    for rows, cols in grids:
        block = ids[start:start + rows * cols].view(rows, cols, -1)[::D, ::D].reshape(-1, ids.shape[-1]).clone()
        block[:, 1:3] /= D
        out.append(block)
        start += rows * cols
    return torch.cat(out)


@pytest.mark.parametrize("name", PIPES)
@pytest.mark.parametrize("mode", ["full", "stage"])
def test_three_stages_show_the_references_at_every_stage(pipes, name, mode):
    pipe = pipes(name)
    inputs, _ = call(name, pipe)
    refs, ids, stock_calls = stock_references(name, pipe, inputs)
    qwen = name.startswith("qwen")
    grids = ids if qwen else [(int(ids[ids[:, 0] == t, 1].max()) + 1, int(ids[ids[:, 0] == t, 2].max()) + 1)
                              for t in dict.fromkeys(ids[:, 0].tolist())]   # per reference (its first id), raster
    seen, handle = watch(pipe)
    try:
        out = RALU(pipe, MIXED, references=mode)(**inputs, generator=gens(2), output_type="latent",
                                                   record_transitions=True)
    finally:
        handle.remove()
    assert torch.isfinite(out.images).all()
    assert len(seen) == stock_calls * MIXED.total_steps                 # the stock calls per step
    sel = out.transitions[0].selected
    assert not torch.equal(sel[0], sel[1])                              # the mixed stage really is mixed
    per_stage = [seen[sum(MIXED.steps[:k]) * stock_calls:sum(MIXED.steps[:k + 1]) * stock_calls] for k in range(3)]
    for k, (calls, L, D) in enumerate(zip(per_stage, out.stage_tokens, (2, 2, 1))):
        D = 1 if mode == "full" else D
        for c in calls:
            got = c["x"][:, L:].float()
            assert got.shape[1] == sum(r * cc for r, cc in grids) // D ** 2, (k, got.shape)
            torch.testing.assert_close(got, pooled(refs, grids, D) if D > 1 else refs, rtol=0, atol=1e-6)
            if qwen:
                assert [tuple(s) for s in c["shapes"][0][1:]] == [(1, r // D, cc // D) for r, cc in grids]
            else:
                torch.testing.assert_close(c["ids"][L:].float(), top_left_ids(ids, grids, D) if D > 1 else ids,
                                           rtol=0, atol=0)
        mixed = k == 1
        assert all((c["rotary"] is not None) == mixed for c in calls)
        if mixed:
            check_mixed_tables(pipe, qwen, calls[0], L, got.shape[1])


def check_mixed_tables(pipe, qwen, c, L, R):
    """The mixed stage's per-image rotary tables cover the references, and their rows are the
    model's own table for the references' ids (or, for Qwen, for the stage's img_shapes)."""
    if qwen:
        table = c["rotary"][0].table          # (image, text) as the processors receive them
        assert table.shape[:2] == (c["x"].shape[0], L + R)
        frame = c["shapes"][0][0]
        stock = pipe.transformer.pos_embed(c["shapes"], max_txt_seq_len=c["text"])[0][frame[1] * frame[2]:]
        for b in range(table.shape[0]):
            torch.testing.assert_close(table[b, L:], stock, rtol=0, atol=1e-6)
        return
    cos, sin = c["rotary"][0].table, c["rotary"][1].table
    T = c["text"]
    assert cos.shape[:2] == (c["x"].shape[0], T + L + R)
    stock_cos, stock_sin = pipe.transformer.pos_embed(c["ids"][L:].float())
    for b in range(cos.shape[0]):
        torch.testing.assert_close(cos[b, T + L:], stock_cos, rtol=0, atol=1e-6)
        torch.testing.assert_close(sin[b, T + L:], stock_sin, rtol=0, atol=1e-6)


# -- the pipelines' own sizing rules -----------------------------------------------------------
class Stop(Exception):
    pass


def stock_prepared(pipe, monkeypatch, **inputs):
    """What the stock pipeline hands its ``prepare_latents`` (the preprocessed reference, and the
    output height and width it settled on), stopped there: no model runs."""
    import inspect

    got, signature = {}, inspect.signature(pipe.prepare_latents)

    def capture(*args, **kwargs):
        got.update(signature.bind(*args, **kwargs).arguments)
        raise Stop

    monkeypatch.setattr(pipe, "prepare_latents", capture)
    with pytest.raises(Stop):
        pipe(**inputs, num_inference_steps=2)
    monkeypatch.undo()
    return got


@pytest.mark.parametrize("size, kwargs", [((None, None), {}), ((128, 128), {"max_area": 128 * 128}),
                                          ((64, 160), {"max_area": 96 * 96}), ((200, 120), {"max_area": 30000}),
                                          ((96, 128), {})])
def test_kontext_sizes_its_output_and_reference_as_the_pipeline(pipes, monkeypatch, size, kwargs):
    """``max_area`` (default 1024 x 1024) with the requested aspect ratio, and ``_auto_resize``
    (default on: the reference at the nearest preferred Kontext resolution), read from the stock
    pipeline's own decision; the reference tensor RALU encodes is the one the pipeline encodes."""
    from ralu_torch.backends import backend_for

    pipe = pipes("kontext")
    be = backend_for(pipe)
    image = picture(72, 200)
    inputs = {**reference_inputs(pipe, 1), "image": image, "height": size[0], "width": size[1], **kwargs}
    stock = stock_prepared(pipe, monkeypatch, **inputs)
    assert be.call_size(None, size[0], size[1], inputs) == (stock["height"], stock["width"])
    for auto in (True, False):
        stock = stock_prepared(pipe, monkeypatch, **{**inputs, "_auto_resize": auto})
        ours = be._preprocess(image, auto)
        assert ours.shape == stock["image"].shape and torch.equal(ours, stock["image"])
    assert stock["image"].shape[-2:] == (64, 192)                       # no auto resize: 72 x 200 floored to 16



# -- bad input: one line, before any model runs ------------------------------------------------
def _two_prompts(pipe):
    return reference_inputs(pipe, 2, guided=True)


BAD = [
    ("flux2-dev", {"references": "stage"}, lambda p: {**reference_inputs(p, 2), "image": [picture(80, 64)]},
     r"reference image 1 has 5x4 tokens, which a stage of 1/2 resolution cannot tile"),
    ("kontext", {"references": "stage"},
     lambda p: {**_two_prompts(p), "image": picture(80, 96), "_auto_resize": False, "max_area": 128 * 128},
     r"reference image 1 has 5x6 tokens"),
    ("flux2-dev", {}, lambda p: {**reference_inputs(p, 2), "image": [picture(64, 64), picture(32, 96)]},
     r"Flux2Pipeline cannot take reference image 2: .*64"),
    ("flux2-dev", {}, lambda p: {**reference_inputs(p, 2), "image": torch.rand(1, 3, 64, 64)},
     r"Flux2Pipeline cannot take reference image 1: Image must be a PIL.Image.Image"),
    ("kontext", {}, lambda p: {**_two_prompts(p), "image": [picture(64, 64, k) for k in range(3)],
                               "max_area": 128 * 128},
     r"FluxKontextPipeline repeats its batch of images to the 2 outputs .* got 3"),
    ("kontext", {}, lambda p: {**_two_prompts(p), "image": picture(64, 64), "max_area": 0},
     r"max_area must be a positive number of pixels, got 0"),
    ("kontext", {}, lambda p: {**_two_prompts(p), "image": "photo.png", "max_area": 128 * 128},
     r"FluxKontextPipeline takes image= as a PIL image.* got str"),
    ("qwen-edit", {}, lambda p: _two_prompts(p), r"QwenImageEditPipeline needs image= \(the image to edit\)"),
    ("qwen-edit", {}, lambda p: {**_two_prompts(p), "image": torch.rand(1, 3, 64, 64)},
     r"QwenImageEditPipeline takes image= as a PIL image or a list of them .* got Tensor"),
    ("qwen-edit-plus", {}, lambda p: {**_two_prompts(p), "image": picture(64, 64)},
     r"QwenImageEditPlusPipeline takes one prompt per call \(its own rule\), got 2"),
    ("qwen-edit", {}, lambda p: {**_two_prompts(p), "image": [picture(64, 64, k) for k in range(3)]},
     r"QwenImageEditPipeline repeats its batch of images to the 2 outputs"),
]


@pytest.mark.parametrize("name, options, inputs, match", BAD, ids=[f"{b[0]}-{b[3][:24]}" for b in BAD])
def test_bad_input_is_refused_before_any_model_runs(pipes, name, options, inputs, match):
    pipe = pipes(name)
    seen, handle = watch(pipe)
    encodes = []
    encode = pipe.vae.encode
    pipe.vae.encode = lambda *a, **k: encodes.append(1) or encode(*a, **k)
    try:
        with pytest.raises(ValueError, match=match) as err:
            RALU(pipe, MIXED, **options)(**inputs(pipe), generator=gens(2), output_type="latent")
    finally:
        handle.remove()
        pipe.vae.encode = encode
    assert "\n" not in str(err.value) and not seen and not encodes


def test_reference_modes_are_checked_and_only_where_there_are_references(pipes):
    from ralu_torch.testing import tiny_pipeline

    with pytest.raises(ValueError, match=r"references must be one of full, stage .*got 'half'"):
        RALU(pipes("kontext"), MIXED, references="half")
    with pytest.raises(ValueError, match="references= is for pipelines that take reference images .* QwenImagePipeline "
                                         "takes none"):
        RALU(tiny_pipeline("qwen-image"), MIXED, references="stage")


@pytest.mark.parametrize("mode", ["full", "stage"])
def test_stage_calls_price_the_reference_tokens(pipes, mode):
    """``stage_calls`` TFLOPs count the references each stage's calls carry: all of them in
    ``"full"``, a quarter at half resolution in ``"stage"`` (the cost model's price of a call of
    generated plus reference tokens, true CFG's two calls, both images)."""
    from ralu_torch.backends import backend_for

    pipe = pipes("kontext")
    inputs, _ = call("kontext", pipe)
    out = RALU(pipe, MIXED, references=mode)(**inputs, generator=gens(2), output_type="latent")
    spec, refs = backend_for(pipe).cost_spec(), 6 * 8                 # the 96 x 128 reference: 6 x 8 tokens
    for calls, L, D in zip(out.stage_calls, out.stage_tokens, (2, 2, 1)):
        R = refs if mode == "full" else refs // D ** 2
        price = calls.executed * 2 * 2 * spec.forward(L + R, 8).total("paper") / 1e12
        assert calls.tflops == pytest.approx(price, rel=1e-9), (mode, L)


def test_editing_models_take_their_own_default_presets(pipes):
    from ralu_schedule import get_preset

    for name, preset_name in [("kontext", "flux-kontext-dev-7x"), ("qwen-edit", "qwen-image-edit-7x"),
                              ("qwen-edit-plus", "qwen-image-edit-2509-7x"), ("flux2-dev", "flux2-dev-7x")]:
        ralu = RALU(pipes(name))
        assert ralu._fixed.info["preset"] == preset_name and ralu.layout == get_preset(preset_name).layout


def test_no_host_sync_inside_a_stage_with_references(pipes, watched_steps):
    pipe = pipes("kontext")
    inputs, _ = call("kontext", pipe)
    RALU(pipe, MIXED, references="stage")(**inputs, generator=gens(2), output_type="latent")
    assert watched_steps == [[], [], []]


# -- the rule, on any grid -----------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3),
       st.sampled_from([1, 2, 4]), st.sampled_from(["full", "stage"]), st.integers(0, 2 ** 16))
def test_a_stage_reads_every_reference_by_the_rule(blocks, D, mode, seed):
    """For references of any token grid a stage of side ``D`` tiles (``blocks`` of ``D x D``
    tokens per side), ``References.at`` gives the stock tokens and ids under ``"full"`` and,
    under ``"stage"``, each reference's latent average-pooled by ``D`` with the stock ids of
    each block's top-left token, row and column over ``D``; Qwen-style references (no ids) get
    their frame over ``D``."""
    from ralu_torch.backends.references import References
    from ralu_torch.tokens import TokenSet

    g = torch.Generator().manual_seed(seed)
    grids = [(r * D, c * D) for r, c in blocks]
    tokens = [torch.randn(2, r * c, 8, generator=g) for r, c in grids]
    ids = []
    for k, (r, c) in enumerate(grids):                              # stock-style ids (10 + 10 k, row, col, 0)
        rr, cc = torch.meshgrid(torch.arange(r).float(), torch.arange(c).float(), indexing="ij")
        ids.append(torch.stack([torch.full_like(rr, 10 + 10 * k), rr, cc, torch.zeros_like(rr)], -1).view(-1, 4))
    stage = TokenSet.regular(2, (4 * D, 4 * D), D)                  # a stage whose coarsest tokens have side D
    for refs in (References(tokens, grids, ids, mode), References(tokens, grids, [None] * len(grids), mode)):
        got = refs.at(stage)
        size = D if mode == "stage" else 1
        torch.testing.assert_close(got.tokens, pooled(torch.cat(tokens, 1), grids, size) if size > 1
                                   else torch.cat(tokens, 1), rtol=0, atol=1e-6)
        if refs.ids[0] is None:
            assert got.ids == [(r // size, c // size) for r, c in grids]
        else:
            torch.testing.assert_close(torch.cat(got.ids), top_left_ids(torch.cat(ids), grids, size) if size > 1
                                       else torch.cat(ids), rtol=0, atol=0)
        assert got.count == sum(r * c for r, c in grids) // size ** 2


@pytest.mark.parametrize("name, image", [("qwen-edit", picture(90, 200)),
                                         ("qwen-edit-plus", [picture(64, 64), picture(90, 200)]),
                                         ("flux2-dev", [picture(80, 112), picture(64, 64)])])
def test_edit_pipelines_size_their_output_by_the_image_as_the_pipeline(pipes, monkeypatch, name, image):
    """Without height and width, Qwen-Image-Edit makes an image of its (Edit Plus: last) image's
    size at about 1024 x 1024 pixels, FLUX.2 of its first reference's: RALU's size is the stock
    pipeline's own decision."""
    from ralu_torch.backends import backend_for

    pipe = pipes(name)
    inputs = {**reference_inputs(pipe, 1), "image": image}
    stock = stock_prepared(pipe, monkeypatch, **inputs)
    assert backend_for(pipe).call_size(None, None, None, inputs) == (stock["height"], stock["width"])


@pytest.mark.parametrize("name", ["qwen-edit", "qwen-edit-plus"])
def test_the_text_encoder_sees_the_image_the_pipeline_shows_it(pipes, monkeypatch, name):
    """Qwen2.5-VL encodes the prompt with the image: RALU hands the pipeline's ``encode_prompt``
    the image the stock pipeline hands it (Edit: the reference at its VAE size; Edit Plus: each
    at 384 x 384 pixels of area), for the negative prompt too."""
    import numpy as np

    pipe = pipes(name)
    seen = []
    encode = pipe.encode_prompt

    def recorded(*args, **kwargs):
        image = kwargs.get("image")
        seen.append([np.asarray(im) for im in (image if isinstance(image, list) else [image])])
        return encode(*args, **kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", recorded)
    inputs, _ = call(name, pipe)
    pipe(**inputs, num_inference_steps=1, generator=gens(2), output_type="latent")
    stock = list(seen)
    seen.clear()
    RALU(pipe, Layout(steps=(1,), ends=(1.0,)))(**inputs, generator=gens(2), output_type="latent")
    assert len(seen) == len(stock) == 2                                 # the prompt and the negative prompt
    for ours, theirs in zip(seen, stock):
        assert [a.shape for a in ours] == [b.shape for b in theirs] and all(
            np.array_equal(a, b) for a, b in zip(ours, theirs))
    if name == "qwen-edit-plus":                                        # each at 384 x 384 pixels of area
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (CONDITION_IMAGE_SIZE,
                                                                                calculate_dimensions)

        sizes = [calculate_dimensions(CONDITION_IMAGE_SIZE, im.size[0] / im.size[1])[::-1] for im in inputs["image"]]
        assert [a.shape[:2] for a in stock[0]] == sizes and CONDITION_IMAGE_SIZE == 384 * 384
