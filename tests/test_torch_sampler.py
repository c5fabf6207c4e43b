"""The FLUX sampler end to end on a tiny random FLUX (no downloads)."""

import numpy as np
import pytest
import torch

from ralu_schedule import Layout, preset, solve
from ralu_schedule.cost import layout_cost
from ralu_torch import RALU
from tiny import embeds, tiny_flux


@pytest.fixture(scope="module")
def dev():
    return tiny_flux(guidance_embeds=True)


@pytest.fixture(scope="module")
def schnell():
    return tiny_flux(guidance_embeds=False)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("which, size, steps", [("dev", (128, 96), 6), ("schnell", (96, 160), 4)])
@pytest.mark.parametrize("output_type", ["np", "latent"])
def test_one_stage_layout_reproduces_flux_pipeline(request, which, size, steps, output_type):
    pipe = request.getfixturevalue(which)
    h, w = size
    ref = pipe(**embeds(), height=h, width=w, num_inference_steps=steps, generator=gen(0),
               output_type=output_type, guidance_scale=3.5).images
    ours = RALU(pipe, Layout(steps=(steps,), ends=(1.0,)))(**embeds(), height=h, width=w, generator=gen(0),
                                                            output_type=output_type, guidance_scale=3.5).images
    diff = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(ref, dtype=np.float64)).max()
    assert diff < 1e-5


def test_one_stage_shift_comes_from_the_pipeline_config_at_the_resolution(dev):
    r = RALU(dev, Layout(steps=(4,), ends=(1.0,)))
    rule_h = lambda tokens: float(np.exp(0.5 + (1.15 - 0.5) / (4096 - 256) * (tokens - 256)))  # noqa: E731
    assert r.schedule_for(128, 96).shifts[0] == pytest.approx(rule_h(8 * 6))
    assert r.schedule_for(1024, 1024).shifts[0] == pytest.approx(rule_h(4096))


@pytest.mark.parametrize("name", ["flux-dev-7x", "flux-dev-4x"])
@pytest.mark.parametrize("size", [(128, 128), (128, 192)])
@pytest.mark.parametrize("batch", [1, 3])
def test_presets_end_to_end_with_cost_model_token_counts(dev, name, size, batch):
    r = RALU(dev, name)
    out = r(**embeds(batch), height=size[0], width=size[1], generator=[gen(i) for i in range(batch)],
            output_type="np")
    assert out.images.shape == (batch, *size, 3) and np.isfinite(out.images).all()
    cost = layout_cost(preset(name).layout, "flux-dev", size)   # the cost model's token counts
    assert out.stage_tokens == [s.tokens for s in cost.stages]


def test_mixed_stage_selects_by_edges_per_image(dev):
    out = RALU(dev, "flux-dev-4x")(**embeds(2), height=128, width=128, generator=[gen(3), gen(4)],
                                   output_type="latent", record_transitions=True)
    assert RALU(dev, "flux-dev-4x")(**embeds(2), height=128, width=128, generator=[gen(3), gen(4)],
                                    output_type="latent").transitions == []      # nothing kept unless asked
    rec = out.transitions[0]
    assert rec.estimate is not None and rec.estimate.shape == (2, 3, 64, 64)
    k = int(rec.selected[0].sum())
    assert k == round(0.3 * 16) and int(rec.selected[1].sum()) == k
    final = out.transitions[1].after
    assert torch.equal(final.positions(), final.positions().round())
    assert torch.all(final.size == 1)


@pytest.mark.parametrize("mode", ["latent", "token"])
def test_same_seed_same_bits(dev, mode):
    r = RALU(dev, "flux-dev-7x", upsample=mode)
    a = r(**embeds(2), height=128, width=96, generator=gen(7), output_type="pt").images
    b = r(**embeds(2), height=128, width=96, generator=gen(7), output_type="pt").images
    c = r(**embeds(2), height=128, width=96, generator=gen(8), output_type="pt").images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("mode", ["latent", "token"])
def test_batch_with_generator_list_equals_single_runs(dev, mode):
    r = RALU(dev, "flux-dev-7x", upsample=mode)
    e = embeds(2)
    both = r(**e, height=128, width=160, generator=[gen(10), gen(11)], output_type="latent").images
    for b, seed in enumerate([10, 11]):
        one = r(prompt_embeds=e["prompt_embeds"][b:b + 1], pooled_prompt_embeds=e["pooled_prompt_embeds"][b:b + 1],
                height=128, width=160, generator=gen(seed), output_type="latent").images
        assert (one[0] - both[b]).abs().max() < 1e-5   # batched vs single matmuls: float rounding only


def test_upsampling_modes_differ(dev):
    kw = dict(**embeds(), height=128, width=128, output_type="latent")
    a = RALU(dev, "flux-dev-7x", upsample="latent")(generator=gen(0), **kw).images
    b = RALU(dev, "flux-dev-7x", upsample="token")(generator=gen(0), **kw).images
    assert not torch.allclose(a, b)


def test_schedule_inputs(dev, tmp_path):
    s = solve(Layout(steps=(2, 3), ends=(0.4, 1.0)))
    f = tmp_path / "s.json"
    s.save(f)
    kw = dict(**embeds(), height=64, width=64, output_type="latent")
    outs = [RALU(dev, x)(generator=gen(0), **kw).images for x in (s, s.to_dict(), str(f), f)]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    opt = RALU(dev, "flux-dev-7x", parameters="optimised")
    sched = opt.schedule_for(128, 128)
    assert sched.layout.base_shift == pytest.approx(np.exp(0.5 + 0.65 / 3840 * (64 - 256)))  # dynamic h0 at 64 tokens


def test_callback_and_progress(dev):
    seen = []

    def cb(pipe, i, t, kwargs):
        seen.append((i, kwargs["stage"]))
        return {"latents": kwargs["latents"]}

    RALU(dev, "flux-dev-7x")(**embeds(), height=64, width=64, generator=gen(0), output_type="latent",
                             callback_on_step_end=cb, callback_on_step_end_tensor_inputs=("latents", "stage"))
    assert seen == [(i, s) for i, s in enumerate([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])]


def test_return_dict_false_and_pil(dev):
    (images,) = RALU(dev, "flux-dev-7x")(**embeds(), height=64, width=96, generator=gen(0), return_dict=False)
    assert images[0].size == (96, 64)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(height=100, width=128), r"height and width must be positive multiples of 32 pixels for this schedule "
                                  r"\(16 pixels per token x downsampling 2\), got 100x128"),
    (dict(height=128, width=128, output_type="jpeg"), "output_type must be one of pil, np, pt, latent"),
    (dict(height=128, width=128, generator=[torch.Generator()] * 2), "got 2 generators for a batch of 1"),
    (dict(height=128, width=128, callback_on_step_end_tensor_inputs=("latents", "noise")),
     "callback_on_step_end_tensor_inputs may name latents, pooled_prompt_embeds, prompt_embeds, stage, got noise"),
])
def test_call_errors(dev, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        RALU(dev, "flux-dev-7x")(**embeds(), **kwargs)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(height=0, width=0), "height and width must be positive multiples of 32 pixels .* got 0x0"),
    (dict(height=128, width=0), "got 128x0"),
    (dict(max_sequence_length=0), "max_sequence_length must be an integer >= 1, got 0"),
])
def test_zero_sizes_are_refused_not_replaced_by_defaults(dev, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        RALU(dev, "flux-dev-7x")(**embeds(), generator=gen(0), output_type="latent", **kwargs)


def test_construction_errors(dev):
    with pytest.raises(ValueError, match="unknown preset 'flux-dev-9x'; known presets: chroma-4x, chroma-7x, flux-dev-10x, flux-dev-4x"):
        RALU(dev, "flux-dev-9x")
    with pytest.raises(ValueError, match="upsample must be one of latent, token"):
        RALU(dev, upsample="bicubic")
    with pytest.raises(ValueError, match="kept_noise must be one of exact, unit"):
        RALU(dev, kept_noise="none")
    with pytest.raises(ValueError, match="RALU cannot run object: it runs the text-to-image and text-to-video pipelines"):
        RALU(object())
    # factor 4 needs sides in multiples of 64 pixels on FLUX
    r = RALU(dev, solve(Layout(steps=(2, 2), ends=(0.5, 1.0), factors=(4,))))
    with pytest.raises(ValueError, match="multiples of 64"):
        r(**embeds(), height=96, width=64)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_lora_loaded_into_the_pipeline_is_used(scale):
    from peft import LoraConfig

    pipe = tiny_flux()
    kw = dict(**embeds(), height=64, width=64, output_type="np")
    plain = RALU(pipe, Layout(steps=(4,), ends=(1.0,)))(generator=gen(0), **kw).images
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                            init_lora_weights=False), adapter_name="style")
    jak = {"scale": scale}
    ref = pipe(num_inference_steps=4, generator=gen(0), joint_attention_kwargs=jak, **kw).images
    ours = RALU(pipe, Layout(steps=(4,), ends=(1.0,)))(generator=gen(0), joint_attention_kwargs=jak, **kw).images
    assert np.abs(ours - ref).max() < 1e-5          # the same LoRA-adapted model as FluxPipeline
    assert np.abs(ours - plain).max() > 1e-3        # and the adapter really changes the output
    RALU(pipe, "flux-dev-7x")(generator=gen(0), joint_attention_kwargs=jak, **kw)   # mixed stage too


def test_factor_three_layout_runs_end_to_end(dev):
    lay = Layout(steps=(2, 2, 2), ends=(0.3, 0.6, 1.0), factors=(3, 3), fractions=(0.25, 1.0))
    out = RALU(dev, solve(lay))(**embeds(), height=96, width=144, generator=gen(0), output_type="latent",
                                record_transitions=True)
    assert out.stage_tokens == list(lay.stage_tokens(6, 9))
    final = out.transitions[-1].after
    assert torch.equal(final.positions(), final.positions().round()) and torch.all(final.size == 1)
    mixed = out.transitions[0].after.positions()
    thirds = mixed * 3
    assert torch.equal(thirds, thirds.round())                   # children at parent + a/3
    assert bool(((thirds % 3) != 0).any())
