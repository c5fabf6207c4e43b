"""diffusers' caches inside RALU: scoped per stage, counted, refused where they cannot work."""

import pytest
import torch
from diffusers.callbacks import SD3CFGCutoffCallback
from diffusers.hooks import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig,
                             SeaCacheConfig, TaylorSeerCacheConfig, TextKVCacheConfig)

from ralu_schedule import get_preset
from ralu_schedule.caching import TaylorSeerPolicy
from ralu_schedule.cost import layout_cost
from ralu_torch import RALU
from ralu_torch.caches import policy_for
from ralu_torch.testing import sd3_pipeline, sd3_prompt_embeds
from tiny import embeds, tiny_flux

FLUX_PRESETS = ["flux-dev-7x", "flux-dev-4x", "flux-dev-10x", "flux-schnell-16x"]


def caches(pipe):
    now = lambda: pipe.current_timestep  # noqa: E731  (what diffusers' docs pass)
    return {
        "first-block": FirstBlockCacheConfig(threshold=5.0),       # skips everything it may (tiny random model)
        "taylorseer": TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1),
        "pab": PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                               spatial_attention_timestep_skip_range=(100, 950),
                                               current_timestep_callback=now),
        "fastercache": FasterCacheConfig(spatial_attention_block_skip_range=2, current_timestep_callback=now,
                                         is_guidance_distilled=True, tensor_format="BCHW"),
        "seacache": SeaCacheConfig(),
        "text-kv": TextKVCacheConfig(),
    }


@pytest.fixture(scope="module")
def dev():
    return tiny_flux(guidance_embeds=True)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def run(r, batch=2, size=(128, 128), **kw):
    return r(**embeds(batch), height=size[0], width=size[1], generator=[gen(i) for i in range(batch)],
             output_type="latent", **kw)


@pytest.fixture
def clean(dev):
    yield dev
    if dev.transformer._cache_config is not None:
        dev.transformer.disable_cache()


@pytest.mark.parametrize("name", FLUX_PRESETS)
@pytest.mark.parametrize("cache", ["first-block", "taylorseer", "pab", "fastercache", "seacache", "text-kv"])
def test_every_cache_runs_every_flux_preset_and_counts_its_calls(clean, name, cache):
    config = caches(clean)[cache]
    out = run(RALU(clean, name, cache=config))
    assert torch.isfinite(out.images).all()
    layout = get_preset(name).layout
    assert [s.calls for s in out.stage_calls] == list(layout.steps)
    assert [s.tokens for s in out.stage_calls] == out.stage_tokens
    policy = policy_for(config)
    if policy is not None:                                   # a fixed pattern: what the cost model predicts
        predicted = layout_cost(layout, "flux-dev", (128, 128), cache=policy)
        assert [s.full_calls for s in out.stage_calls] == [s.full_calls for s in predicted.stages]
    if cache == "first-block":                               # the first call of every stage is full, then skips
        assert all(s.full_calls == 1 for s in out.stage_calls)
        assert all(f < 0.9 for s in out.stage_calls for f in s.fractions[1:])


def test_enable_cache_by_hand_or_by_argument_is_the_same(clean):
    config = TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1)
    by_arg = run(RALU(clean, "flux-dev-7x", cache=config)).images
    clean.transformer.disable_cache()
    clean.transformer.enable_cache(config)
    by_hand = run(RALU(clean, "flux-dev-7x")).images
    assert torch.equal(by_arg, by_hand)


def test_a_cache_that_never_skips_is_bit_identical_to_ralu_alone(clean):
    plain = run(RALU(clean, "flux-dev-7x"))
    never = run(RALU(clean, "flux-dev-7x", cache=FirstBlockCacheConfig(threshold=0.0)))
    assert torch.equal(plain.images, never.images)
    assert all(s.full_calls == s.calls for s in never.stage_calls)
    clean.transformer.disable_cache()
    assert torch.equal(run(RALU(clean, "flux-dev-7x")).images, plain.images)


def test_stage_calls_report_effective_tflops(clean):
    plain = run(RALU(clean, "flux-dev-7x"))
    cached = run(RALU(clean, "flux-dev-7x", cache=TaylorSeerCacheConfig(cache_interval=2,
                                                                        disable_cache_before_step=1)))
    for p, c in zip(plain.stage_calls, cached.stage_calls):
        assert p.executed == p.calls and 0 < c.tflops < p.tflops or c.calls == c.full_calls


@pytest.mark.parametrize("config, message", [
    (MagCacheConfig(mag_ratios=[1.0] * 28), "MagCacheConfig cannot run inside RALU: its magnitude ratios"),
])
def test_caches_that_cannot_work_across_stages_are_refused_by_name(clean, config, message):
    with pytest.raises(ValueError, match=message):
        RALU(clean, "flux-dev-7x", cache=config)
    clean.transformer.enable_cache(config)                  # enabled by hand: refused the same way
    with pytest.raises(ValueError, match=message):
        RALU(clean, "flux-dev-7x")


def test_fastercache_range_that_covers_a_stage_start_is_refused(clean):
    config = FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 951),
                               current_timestep_callback=lambda: clean.current_timestep, is_guidance_distilled=True,
                               tensor_format="BCHW")
    with pytest.raises(ValueError, match=r"stage 3 starts at t = 935.9: use an upper bound below 935.9"):
        run(RALU(clean, "flux-dev-7x", cache=config))


def test_second_cache_is_refused(clean):
    clean.transformer.enable_cache(FirstBlockCacheConfig())
    with pytest.raises(ValueError, match="already has FirstBlockCacheConfig enabled"):
        RALU(clean, "flux-dev-7x", cache=TaylorSeerCacheConfig())


def test_sd3_has_no_diffusers_cache_support_and_says_so():
    # SD3Transformer2DModel has no CacheMixin in this diffusers: no cache applies to SD3, even in its own pipeline
    pipe = sd3_pipeline()
    assert not hasattr(pipe.transformer, "enable_cache")
    with pytest.raises(ValueError, match="SD3Transformer2DModel has no diffusers cache support"):
        RALU(pipe, "sd3-medium-7x", cache=FirstBlockCacheConfig())


# -- what callbacks read -------------------------------------------------------------------------
def test_sd3_cfg_cutoff_callback_reads_num_timesteps_and_cuts_guidance():
    pipe = sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    r = RALU(pipe, "sd3-medium-7x")
    kw = dict(height=128, width=128, output_type="latent")
    full = r(**sd3_prompt_embeds(pipe), generator=gen(), **kw).images
    batches = []
    handle = pipe.transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda m, a, k: batches.append(k["hidden_states"].shape[0]), with_kwargs=True)
    try:
        cut = r(**sd3_prompt_embeds(pipe), generator=gen(), callback_on_step_end=SD3CFGCutoffCallback(
            cutoff_step_ratio=0.4), **kw).images
    finally:
        handle.remove()
    assert r.num_timesteps == 10 and r.guidance_scale == 0.0
    assert batches == [2] * 5 + [1] * 5               # int(10 * 0.4) = step 4 is the last guided call
    assert torch.isfinite(cut).all() and not torch.equal(cut, full)


def test_interrupt_from_a_callback_stops_the_run(dev):
    calls = []

    def stop(pipeline, step, timestep, kwargs):
        calls.append((step, pipeline.current_timestep is not None))
        if step == 2:
            pipeline._interrupt = True
        return {}

    out = run(RALU(dev, "flux-dev-7x"), callback_on_step_end=stop)
    assert out.interrupted and [s for s, _ in calls] == [0, 1, 2] and all(seen for _, seen in calls)
    assert out.images.shape == (2, 64, 64) and torch.isfinite(out.images).all()

    def stop_pipe(pipeline, step, timestep, kwargs):
        if step == 6:
            dev._interrupt = True                       # diffusers' way, on the pipeline
        return {}

    out = run(RALU(dev, "flux-dev-7x"), callback_on_step_end=stop_pipe)
    assert out.interrupted and [s.calls for s in out.stage_calls] == [2, 3, 2]
    assert not run(RALU(dev, "flux-dev-7x")).interrupted  # reset at the next call


def test_taylorseer_policy_matches_diffusers_rule():
    p = TaylorSeerPolicy(interval=3, warmup=3)
    assert p.full_steps(7) == (0, 1, 2, 4)
    assert TaylorSeerPolicy(interval=2, warmup=1).full_steps(5) == (0, 2, 4)
    with pytest.raises(ValueError, match="predicted_cost must lie in"):
        TaylorSeerPolicy(predicted_cost=2.0)


@pytest.mark.parametrize("model, config, message", [
    ("chroma", FirstBlockCacheConfig(), "FirstBlockCacheConfig cannot run on ChromaTransformer2DModel: diffusers has no "
                                        "description of its ChromaTransformerBlock"),
    ("chroma", SeaCacheConfig(), "SeaCacheConfig cannot run on ChromaTransformer2DModel"),
    ("qwen-image", FirstBlockCacheConfig(), "needs a first and a last transformer block, and this model has 1"),
    ("flux2-klein-base-4b", FirstBlockCacheConfig(), "FirstBlockCacheConfig cannot run on Flux2Transformer2DModel: "
                                                     "diffusers' First Block Cache fails inside its hooks"),
])
def test_a_cache_the_model_cannot_take_is_refused_by_name_at_construction(model, config, message):
    """diffusers' own failures here are internal (a block class "not registered", an IndexError
    from its hook installer, a TypeError at the first call) and leave hooks half installed; RALU
    refuses the cache by name, with the model and why, before installing anything. (The tiny
    Qwen-Image has one block: First Block Cache needs two.)"""
    from ralu_torch.testing import tiny_inputs, tiny_pipeline

    pipe = tiny_pipeline(model)
    with pytest.raises(ValueError, match=message):
        RALU(pipe, "flux-dev-7x", cache=config, allow_other_model=True)
    assert pipe.transformer._cache_config is None
    assert not any(getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.hooks
                   for m in pipe.transformer.modules())                         # nothing left behind
    assert RALU(pipe, "flux-dev-7x", allow_other_model=True)(**tiny_inputs(pipe), height=64, width=64,
                                                              output_type="latent").images.isfinite().all()
