"""diffusers' caches (First Block Cache, TaylorSeer, MagCache, FasterCache, Pyramid Attention
Broadcast, ...) inside RALU, scoped to stages.

A cache keeps tensors of the previous steps (residuals, Taylor factors, attention outputs)
and counts steps. RALU changes the token count at each transition and restarts the noise
level, so a cache must not carry anything across one: :class:`StageScope` resets every
stateful hook of the transformer at the start of each stage and describes each step by its
position *within the stage* (``step_index``, ``num_inference_steps``, ``timestep``, ``sigma``);
each transformer call the backend makes in that step runs in
``transformer.cache_context(name, **that)`` (:func:`model_call`), named as the stock pipelines
name them: ``"cond"``, and ``"uncond"`` for a guidance call, so a cache keeps the two apart.
Within a stage, the mixed stage included, the batch keeps one token count, so a cache works
there as in a stock pipeline.

:class:`CallCounter` measures what the hooks actually did: the multiply-accumulates of
every linear layer that ran in each transformer call, against the stage's first call (which
no cache skips: its state is fresh). A call at 100 % is a full call; the effective TFLOPs of a
stage are the cost model's per-step TFLOPs at its token count times the executed fraction.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import torch

#: Caches whose policy depends on a step count fixed in their configuration, which RALU's
#: stages (a few steps each, over part of the noise range, at other token counts) cannot keep.
_REFUSED = {
    "MagCacheConfig": ("its magnitude ratios are calibrated per step of one full-resolution run of "
                       "num_inference_steps steps, and RALU's stages run other token counts over parts of that range"),
}


#: Caches that hook the transformer's blocks (the module lists diffusers names) and read how each
#: block class returns its states from diffusers' ``TransformerBlockRegistry``; First Block Cache
#: also needs a first and a last block.
_BLOCK_CACHES = ("FirstBlockCacheConfig", "SeaCacheConfig", "MagCacheConfig")

#: (cache, transformer) pairs that enable but fail inside diffusers' hooks at the first call (the
#: stock pipelines fail the same way), with what happens.
_INCOMPATIBLE = {
    ("FirstBlockCacheConfig", "Flux2Transformer2DModel"): (
        "diffusers' First Block Cache fails inside its hooks on FLUX.2's blocks (a TypeError subtracting the first "
        "block's output, which FLUX.2's double-stream block returns as a list; Flux2KleinPipeline fails the same way)"),
}


#: The step being run (its cache-context fields), set by :meth:`StageScope.call` for the
#: transformer calls of that step.
_STEP = contextvars.ContextVar("ralu_step", default=None)


@contextlib.contextmanager
def model_call(transformer, name: str):
    """Context of one transformer call named ``name`` (``"cond"``, ``"uncond"``, ...): the
    cache context of the current step when a cache is enabled, else nothing."""
    step = _STEP.get()
    if step is None or cache_config(transformer) is None:
        yield
        return
    with transformer.cache_context(name, **step):
        yield


def cache_config(transformer):
    """The cache configuration enabled on ``transformer`` (diffusers' ``enable_cache``), or None."""
    return getattr(transformer, "_cache_config", None)


def check_cache(config, transformer=None) -> None:
    """Refuse a cache that cannot work across RALU's stages, or (given ``transformer``) that
    diffusers cannot apply to that transformer, naming the cache, the model and why, before any
    hook is installed: diffusers' own failure there is an internal message (a block class "not
    registered", an IndexError) or comes at the first call, and leaves hooks half installed."""
    name = type(config).__name__
    if name in _REFUSED:
        raise ValueError(f"{name} cannot run inside RALU: {_REFUSED[name]}; use FirstBlockCacheConfig, "
                         "TaylorSeerCacheConfig, FasterCacheConfig or PyramidAttentionBroadcastConfig")
    if transformer is None:
        return
    model = type(transformer).__name__
    why = _INCOMPATIBLE.get((name, model))
    if why is None and name in _BLOCK_CACHES:
        why = _block_cache_problem(name, transformer)
    if why is not None:
        raise ValueError(f"{name} cannot run on {model}: {why}; its stock pipeline cannot use it either")


def _block_cache_problem(name: str, transformer) -> str | None:
    """Why diffusers cannot hook a block cache onto ``transformer``'s blocks, or None."""
    try:
        from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
        from diffusers.hooks._helpers import TransformerBlockRegistry
    except ImportError:            # another diffusers layout: nothing to check against
        return None
    blocks = [block for child, lst in transformer.named_children()
              if child in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(lst, torch.nn.ModuleList) for block in lst]
    unknown = []
    for cls in dict.fromkeys(type(block) for block in blocks):
        try:
            TransformerBlockRegistry.get(cls)
        except ValueError:
            unknown.append(cls.__name__)
    if unknown:
        return (f"diffusers has no description of its {', '.join(unknown)} blocks for this cache (its "
                "TransformerBlockRegistry), so it cannot hook them")
    if name == "FirstBlockCacheConfig" and len(blocks) < 2:
        return f"it needs a first and a last transformer block, and this model has {len(blocks)}"
    return None


def check_cache_for_run(config, plan) -> None:
    """Refuse what a cache cannot do with this schedule (before any model call).

    - FasterCache skips attention at a block's first call when that call's timestep lies in
      ``spatial_attention_timestep_skip_range`` and has nothing cached then (a stock pipeline
      starts at t = 1000, outside the range); each RALU stage starts afresh, so every stage
      must start outside the range.
    """
    name = type(config).__name__
    if name != "FasterCacheConfig":
        return
    lo, hi = config.spatial_attention_timestep_skip_range
    for k, st in enumerate(plan.stages):
        t = 1000.0 * float(st.sigmas[0])
        if lo < t < hi:
            raise ValueError(f"FasterCacheConfig skips attention from a stage's first call, where it has nothing cached, "
                             f"when the stage starts inside spatial_attention_timestep_skip_range {(lo, hi)}; stage "
                             f"{k + 1} starts at t = {t:.1f}: use an upper bound below "
                             f"{min(1000.0 * float(s.sigmas[0]) for s in plan.stages):.1f} (the default 681 is)")


def policy_for(config):
    """The cost model's fixed-pattern policy of a diffusers cache configuration, or None
    for caches whose skipping depends on the data (First Block Cache, SeaCache) or on
    timesteps (FasterCache, Pyramid Attention Broadcast)."""
    if type(config).__name__ != "TaylorSeerCacheConfig":
        return None
    from ralu_schedule.caching import TaylorSeerPolicy

    return TaylorSeerPolicy(interval=config.cache_interval, warmup=config.disable_cache_before_step,
                            cooldown=config.disable_cache_after_step, order=config.max_order)


def enable_cache(transformer, config) -> None:
    """``transformer.enable_cache(config)`` after :func:`check_cache`; refuses a second cache."""
    if not hasattr(transformer, "enable_cache"):
        raise ValueError(f"{type(transformer).__name__} has no diffusers cache support in this diffusers version (no "
                         "enable_cache; its stock pipeline cannot use a cache either)")
    check_cache(config, transformer)
    current = cache_config(transformer)
    if current is not None:
        raise ValueError(f"the transformer already has {type(current).__name__} enabled; pass cache= or call "
                         "enable_cache yourself, not both (pipe.transformer.disable_cache() removes it)")
    transformer.enable_cache(config)


class StageScope:
    """Per-stage cache scoping and the step bookkeeping diffusers' hooks and callbacks read.

    ``owner`` (the :class:`~ralu_torch.RALU` object) gets ``_current_timestep``,
    ``_num_timesteps`` and is asked ``interrupt``; ``pipe`` gets ``_current_timestep`` too, so a
    ``current_timestep_callback=lambda: pipe.current_timestep`` (FasterCache, Pyramid Attention
    Broadcast) reads RALU's timestep.
    """

    def __init__(self, transformer=None, owner=None, pipe=None, counter: "CallCounter | None" = None):
        self.transformer = transformer if transformer is not None and cache_config(transformer) is not None else None
        self.owner, self.pipe, self.counter = owner, pipe, counter
        self.steps = 0

    def begin(self, calls: list) -> None:
        """The run's model calls per stage, known before the first: ``owner.num_timesteps``."""
        if self.owner is not None:
            self.owner._num_timesteps = sum(calls)

    def start_stage(self, stage: int, calls: int, tokens: int) -> None:
        self.steps = calls
        if self.transformer is not None:
            self.transformer._reset_stateful_cache()
        if self.counter is not None:
            self.counter.start_stage(stage, tokens)

    @contextlib.contextmanager
    def call(self, index: int, sigma):
        """Context for model call ``index`` of the stage at ``sigma`` (a 0-d tensor)."""
        timestep = sigma * 1000
        for obj in (self.owner, self.pipe):
            if obj is not None:
                obj._current_timestep = timestep
        token = _STEP.set(dict(step_index=index, num_inference_steps=self.steps, timestep=timestep, sigma=sigma))
        try:
            with contextlib.ExitStack() as stack:
                if self.counter is not None:
                    stack.enter_context(self.counter.call())
                yield
        finally:
            _STEP.reset(token)

    @property
    def interrupted(self) -> bool:
        return bool(getattr(self.owner, "interrupt", False) or getattr(self.pipe, "_interrupt", False))


@dataclass
class StageCalls:
    """What the transformer did in one stage: calls, full calls and executed work."""

    stage: int
    tokens: int = 0
    fractions: list = field(default_factory=list)      # executed linear work of each call / the stage's first
    tflops: float = 0.0                                # effective transformer TFLOPs (paper convention)

    @property
    def calls(self) -> int:
        return len(self.fractions)

    @property
    def full_calls(self) -> int:
        return sum(f > 0.999 for f in self.fractions)

    @property
    def skipped_calls(self) -> int:
        return self.calls - self.full_calls

    @property
    def executed(self) -> float:
        """Full-call equivalents of work done (the sum of the fractions)."""
        return float(sum(self.fractions))


class CallCounter:
    """Counts transformer calls and the linear-layer work each one executed (see module
    docstring). Hooks every ``nn.Linear`` of ``transformer`` while active (a context manager);
    :class:`StageScope` brackets each model call. Reads sizes from shapes only, so it adds no
    host synchronisation."""

    def __init__(self, transformer, measure: bool = True):
        self.transformer, self.measure = transformer, measure
        self.stages: list = []
        self._macs = 0
        self._reference = None
        self._handles = []

    def __enter__(self):
        if self.measure:       # without a cache every call is a full one: nothing to measure, no hooks
            self._handles = [m.register_forward_pre_hook(self._linear) for m in self.transformer.modules()
                             if isinstance(m, torch.nn.Linear)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []

    def start_stage(self, stage: int, tokens: int) -> None:
        self.stages.append(StageCalls(stage, tokens))
        self._reference = None

    def _linear(self, module, args):
        x = args[0]
        self._macs += x.numel() // module.in_features * module.in_features * module.out_features

    @contextlib.contextmanager
    def call(self):
        self._macs = 0
        yield
        if not self.measure:
            self.stages[-1].fractions.append(1.0)
            return
        if self._reference is None:                 # the stage's first call: nothing cached yet
            self._reference = self._macs
        self.stages[-1].fractions.append(self._macs / self._reference if self._reference else 1.0)
