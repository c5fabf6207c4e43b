"""The SD3 backend on tiny random SD3 / SD3.5-medium-style transformers (no downloads)."""

import numpy as np
import pytest
import torch

from ralu_schedule import Layout, preset
from ralu_schedule.cost import layout_cost
from ralu_torch import RALU
from ralu_torch.backends.sd3 import SD3Backend, forward_tokens, sincos_table_embedding
from ralu_torch.testing import sd3_pipeline, sd3_prompt_embeds
from ralu_torch.tokens import TokenSet, pack, unpack


@pytest.fixture(scope="module", params=["sd3.5-medium-like", "sd3-like"])
def pipe(request):
    p = sd3_pipeline(dual_attention=request.param == "sd3.5-medium-like")
    p.set_progress_bar_config(disable=True)
    return p


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("grid", [(8, 8), (6, 10), (12, 4)])
def test_token_forward_equals_stock_forward(pipe, grid):
    tr = pipe.transformer
    lat = torch.randn(2, 16, 2 * grid[0], 2 * grid[1], generator=gen(0))
    e = sd3_prompt_embeds(pipe, 2, negative=False)
    t = torch.tensor([900.0, 250.0])
    ref = tr(hidden_states=lat, encoder_hidden_states=e["prompt_embeds"], pooled_projections=e["pooled_prompt_embeds"],
             timestep=t, return_dict=False)[0]
    pos = SD3Backend(pipe).position_embedding(TokenSet.regular(2, grid, 1))
    ours = forward_tokens(tr, pack(lat), pos, e["prompt_embeds"], e["pooled_prompt_embeds"], t)
    assert (unpack(ours, grid) - ref).abs().max() < 1e-5


def test_token_forward_skips_layers_like_the_stock_forward(pipe):
    tr = pipe.transformer
    lat = torch.randn(1, 16, 12, 16, generator=gen(4))
    e = sd3_prompt_embeds(pipe, 1, negative=False)
    t = torch.tensor([600.0])
    ref = tr(hidden_states=lat, encoder_hidden_states=e["prompt_embeds"], pooled_projections=e["pooled_prompt_embeds"],
             timestep=t, skip_layers=[0], return_dict=False)[0]
    full = tr(hidden_states=lat, encoder_hidden_states=e["prompt_embeds"], pooled_projections=e["pooled_prompt_embeds"],
              timestep=t, return_dict=False)[0]
    pos = SD3Backend(pipe).position_embedding(TokenSet.regular(1, (6, 8), 1))
    ours = forward_tokens(tr, pack(lat), pos, e["prompt_embeds"], e["pooled_prompt_embeds"], t, skip_layers=[0])
    assert (unpack(ours, (6, 8)) - ref).abs().max() < 1e-5
    assert (ref - full).abs().max() > 1e-3


def test_embedding_at_integer_coordinates_is_the_stock_table(pipe):
    pe = pipe.transformer.pos_embed
    P, D = pe.pos_embed_max_size, pipe.transformer.inner_dim
    r, c = torch.meshgrid(torch.arange(P, dtype=torch.float64), torch.arange(P, dtype=torch.float64), indexing="ij")
    ours = sincos_table_embedding(r, c, D, P, pe.base_size).reshape(1, P * P, D)
    assert torch.equal(ours, pe.pos_embed)


@pytest.mark.parametrize("grid", [(8, 8), (6, 10)])
def test_low_resolution_grid_follows_the_coordinate_rule(pipe, grid):
    be = SD3Backend(pipe)
    pe = pipe.transformer.pos_embed
    full = TokenSet.regular(1, grid, 1)
    low = TokenSet.regular(1, grid, 2)
    # full grid: the stock centred crop; low grid: the stock crop of the half-size image
    assert torch.equal(be.position_embedding(full)[0], pe.cropped_pos_embed(2 * grid[0], 2 * grid[1])[0])
    assert torch.equal(be.position_embedding(low)[0], pe.cropped_pos_embed(grid[0], grid[1])[0])


def test_children_sit_half_a_table_step_from_their_parent(pipe):
    be = SD3Backend(pipe)
    P, D, base = be.table_size, pipe.transformer.inner_dim, be.base_size
    low = TokenSet.regular(1, (8, 8), 2)
    sel = torch.zeros(1, 16, dtype=torch.bool)
    sel[0, 5] = True                                       # the low-res token at (1, 1)
    mixed, _, slot = low.upsample(sel, 2)
    emb = be.position_embedding(mixed)[0][slot[0] >= 0]
    top = (P - 4) // 2
    s = base / P
    omega = 1.0 / 10000 ** (np.arange(D // 4) / (D / 4))

    def sincos(p):
        out = p * s * omega
        return np.concatenate([np.sin(out), np.cos(out)])

    for k, (dy, dx) in enumerate([(0, 0), (0, 0.5), (0.5, 0), (0.5, 0.5)]):
        expected = np.concatenate([sincos(top + 1 + dx), sincos(top + 1 + dy)])
        np.testing.assert_allclose(emb[k].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("guidance_scale", [1.0, 4.5])
@pytest.mark.parametrize("size", [(128, 128), (96, 160)])
def test_one_stage_layout_reproduces_sd3_pipeline(pipe, guidance_scale, size):
    n = 5
    e = sd3_prompt_embeds(pipe)
    # the same sigmas as the layout (SD3's default schedule stops at shift(sigma_min), not at 0)
    ref = pipe(**e, height=size[0], width=size[1], num_inference_steps=n, sigmas=np.linspace(1.0, 1 / n, n).tolist(),
               guidance_scale=guidance_scale, generator=gen(0), output_type="np").images
    ours = RALU(pipe, Layout(steps=(n,), ends=(1.0,)))(**e, height=size[0], width=size[1], generator=gen(0),
                                                        guidance_scale=guidance_scale, output_type="np").images
    assert np.abs(ours - ref).max() < 1e-5


def test_a_lora_scale_is_applied_as_the_sd3_pipeline_applies_it():
    """SD3's transformer runs module by module inside RALU, outside its forward's LoRA scaling:
    ``joint_attention_kwargs={"scale": s}`` is applied around the call instead (and kept from
    the blocks, as the stock forward does)."""
    from peft import LoraConfig

    pipe = sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"],
                                            init_lora_weights=False))
    n, e = 4, sd3_prompt_embeds(pipe)
    kw = dict(**e, height=64, width=64, output_type="np")
    ref = pipe(**kw, num_inference_steps=n, sigmas=np.linspace(1.0, 1 / n, n).tolist(), generator=gen(0),
               joint_attention_kwargs={"scale": 0.5}).images
    ralu = RALU(pipe, Layout(steps=(n,), ends=(1.0,)))
    ours = ralu(**kw, generator=gen(0), joint_attention_kwargs={"scale": 0.5}).images
    assert np.abs(ours - ref).max() < 1e-5
    assert np.abs(ours - ralu(**kw, generator=gen(0)).images).max() > 1e-3


@pytest.mark.parametrize("name", ["sd3-medium-7x", "sd3-medium-4x"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("guidance_scale", [1.0, 7.0])
def test_presets_end_to_end(pipe, name, batch, guidance_scale):
    out = RALU(pipe, name)(**sd3_prompt_embeds(pipe, batch), height=128, width=160,
                           generator=[gen(i) for i in range(batch)], guidance_scale=guidance_scale, output_type="np")
    assert out.images.shape == (batch, 128, 160, 3) and np.isfinite(out.images).all()
    assert out.stage_tokens == [s.tokens for s in layout_cost(preset(name).layout, "sd3-medium", (128, 160)).stages]


def test_determinism_and_generator_lists(pipe):
    r = RALU(pipe, "sd3-medium-7x")
    e = sd3_prompt_embeds(pipe, 2)
    a = r(**e, height=128, width=128, generator=[gen(1), gen(2)], output_type="latent").images
    b = r(**e, height=128, width=128, generator=[gen(1), gen(2)], output_type="latent").images
    assert torch.equal(a, b) and a.shape == (2, 16, 16, 16)
    one = r(**{k: v[1:] for k, v in e.items()}, height=128, width=128, generator=gen(2), output_type="latent").images
    assert (one[0] - a[1]).abs().max() < 1e-5


def test_errors(pipe):
    with pytest.raises(ValueError, match="exceeds the model's 48x48 position table"):
        RALU(pipe, Layout(steps=(2,), ends=(1.0,)))(**sd3_prompt_embeds(pipe), height=1024, width=1024)
    with pytest.raises(ValueError, match="StableDiffusion3Pipeline does not take 'prompt_4'"):
        RALU(pipe, "sd3-medium-7x")(**sd3_prompt_embeds(pipe), prompt_4="x", height=64, width=64)
    with pytest.raises(ValueError, match="has no published parameters"):
        RALU(pipe, "sd3-medium-7x", parameters="authors")
