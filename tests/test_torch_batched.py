"""The mixed stage at production shape: one transformer call per step for any batch, the
same images as single runs, no host synchronisation inside a stage's steps."""

import pytest
import torch

import ralu_torch.sampler as sampler_module
from ralu_torch import RALU
from ralu_torch.backends.rotary import PerImageRotaryProcessor
from ralu_torch.testing import HostSyncDetector, sd3_pipeline, sd3_prompt_embeds
from tiny import embeds, tiny_flux


def gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def count_calls(pipe):
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(k["hidden_states"].shape),
                                                        with_kwargs=True)
    return calls, handle


@pytest.mark.parametrize("name", ["flux-dev-7x", "flux-dev-4x"])
@pytest.mark.parametrize("batch", [1, 4])
def test_one_transformer_call_per_step_for_any_batch(name, batch):
    pipe = tiny_flux()
    calls, handle = count_calls(pipe)
    out = RALU(pipe, name)(**embeds(batch), height=256, width=256, generator=gens(batch), output_type="latent",
                           record_transitions=True)
    handle.remove()
    steps = sum(out.schedule.layout.steps)
    assert len(calls) == steps
    assert all(shape[0] == batch for shape in calls)
    sel = out.transitions[0].selected
    if batch > 1:   # the images chose different tokens, so the mixed stage really is mixed
        assert any(not torch.equal(sel[0], sel[b]) for b in range(1, batch))


def test_batched_mixed_stage_equals_single_runs():
    pipe = tiny_flux()
    ralu = RALU(pipe, "flux-dev-7x")
    batch = ralu(**embeds(4), height=256, width=256, generator=gens(4), output_type="latent").images
    e = embeds(4)
    for b in range(4):
        one = ralu(prompt_embeds=e["prompt_embeds"][b:b + 1], pooled_prompt_embeds=e["pooled_prompt_embeds"][b:b + 1],
                   height=256, width=256, generator=gens(1, b), output_type="latent").images
        assert (batch[b] - one[0]).abs().max() < 1e-5


def test_unknown_attention_processor_falls_back_to_one_call_per_image():
    pipe = tiny_flux()
    reference = RALU(pipe, "flux-dev-7x")(**embeds(2), height=256, width=256, generator=gens(2),
                                          output_type="latent").images

    class Custom:                                 # a processor RALU cannot wrap (as IP-Adapter's)
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    attn = pipe.transformer.transformer_blocks[0].attn
    attn.processor = Custom(attn.processor.stock)
    calls, handle = count_calls(pipe)
    out = RALU(pipe, "flux-dev-7x")(**embeds(2), height=256, width=256, generator=gens(2), output_type="latent")
    handle.remove()
    assert len(calls) == 10 + 3                   # the 3 mixed steps run once per image
    assert (out.images - reference).abs().max() < 1e-5


def test_adapters_pass_stock_calls_through_unchanged():
    pipe = tiny_flux()
    stock = pipe(**embeds(), height=128, width=128, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                 output_type="latent").images
    RALU(pipe, "flux-dev-7x")(**embeds(2), height=128, width=128, generator=gens(2))
    assert isinstance(pipe.transformer.transformer_blocks[0].attn.processor, PerImageRotaryProcessor)
    again = pipe(**embeds(), height=128, width=128, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                 output_type="latent").images
    assert torch.equal(stock, again)


def test_no_host_sync_in_flux_steps(watched_steps):
    RALU(tiny_flux(), "flux-dev-7x")(**embeds(2), height=256, width=256, generator=gens(2), output_type="latent")
    assert len(watched_steps) == 3 and watched_steps == [[], [], []]


def test_no_host_sync_in_sd3_steps(watched_steps):
    pipe = sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    RALU(pipe, "sd3-medium-7x")(**sd3_prompt_embeds(pipe, batch=2), height=128, width=128, generator=gens(2),
                                output_type="latent")
    assert watched_steps == [[], [], []]


def test_no_host_sync_in_gaussian_steps(watched_steps):
    from ralu_schedule import preset
    from ralu_torch.backends.gaussian import GaussianBackend, GaussianField

    be = GaussianBackend(GaussianField(height=32, width=32))
    sampler_module.sample(be, preset("flux-dev-4x"), None, batch=2, grid=be.grid, generator=gens(2))
    assert watched_steps == [[], [], []]


def test_detector_sees_syncs():
    x = torch.randn(3)
    with HostSyncDetector() as sync:
        bool((x > 0).any())
        x[x > 0]
        torch.unique(x)
    assert len(sync.ops) == 3


def test_compiled_blocks_do_not_recompile_across_stages_and_batches():
    """Dynamo (with its eager backend: the guards and graphs without inductor's compile time)
    compiles each block's graphs during the first runs, one at a batch size above 1 and one
    at batch 1 (dynamo specialises size-1 dimensions); after that, runs at any batch size,
    through every stage, mixed included, and at another image size add none."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    pipe = tiny_flux()
    ralu = RALU(pipe, "flux-dev-7x", compile={"backend": "eager"})
    eager = RALU(tiny_flux(), "flux-dev-7x")(**embeds(2), height=256, width=256, generator=gens(2),
                                             output_type="latent").images
    first = ralu(**embeds(2), height=256, width=256, generator=gens(2), output_type="latent").images
    after_first = counters["stats"]["unique_graphs"]
    ralu(**embeds(1), height=256, width=256, generator=gens(1), output_type="latent")
    graphs = counters["stats"]["unique_graphs"]
    assert after_first > 0 and graphs - after_first <= 2       # batch 1: at most one graph per block type
    for batch in (3, 1, 2, 4):
        ralu(**embeds(batch), height=256, width=256, generator=gens(batch), output_type="latent")
    ralu(**embeds(2), height=128, width=256, generator=gens(2), output_type="latent")   # another size
    assert counters["stats"]["unique_graphs"] == graphs
    assert (first - eager).abs().max() < 1e-5
    torch._dynamo.reset()
