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
        inputs.update(image=picture(104, 160))
        sizes = [(256, 256), (192, 256)]
    elif name == "qwen-edit-plus":    # its rule: one prompt per call, so two images of it; two references
        inputs = reference_inputs(pipe, 1, guided=True)
        inputs.update(image=[picture(104, 160), picture(64, 64, 1)], num_images_per_prompt=batch)
        sizes = [(256, 256), (192, 256)]
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
