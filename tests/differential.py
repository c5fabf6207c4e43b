"""The differential harness of tests/test_differential.py: RALU with a one-stage schedule against
the stock diffusers pipeline it wraps, on call arguments drawn from the stock ``__call__``.

A :class:`Case` is one call: the arguments by RALU's names (``num_images_per_prompt``; the
harness renames them for a pipeline that spells them otherwise), the step count, how the
generators and the caller's latents are given, the weights' dtype, and pipeline config entries
to set for the call (Wan 2.2's ``boundary_ratio``). Tensors are drawn as recipes
(:class:`Rand`, :class:`Mask`), and values that must sit on the step grid as :class:`AtStep`
(a grid point, nudged by one float step or not): hypothesis prints a failing case readably,
and each is built at run time, in the pipeline's own arithmetic (the timesteps of the stock
scheduler pinned to the schedule's sigmas).

:func:`run` calls both: the stock pipeline with its scheduler pinned to the one-stage
schedule's sigmas (:func:`ralu_torch.stage_scheduler`, as the parity tests do), and
``RALU(pipe, Layout(steps=(n,), ends=(1.0,)))``, each with fresh generators of the same seeds.
:func:`check` states the property: both return the same thing (payload type, dtype, shape,
values within 1e-5 relative), or both refuse (any exception from the stock pipeline, a
``ValueError`` from RALU), or RALU's refusal is one of the named, documented choices of the
refusal table, or RALU takes an input form the stock pipeline does not and returns what the
stock pipeline returns on the same values in its own form (the extension table).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re

import numpy as np
import torch
from hypothesis import strategies as st

from ralu_schedule import Layout
from ralu_torch import RALU, stage_scheduler
from ralu_torch.testing import TINY_POOLED_DIM, TINY_TEXT_DIM, tiny_pipeline

#: The stock pipelines under test: the tiny model of each (ralu_torch.testing.tiny_pipeline).
MODELS = {
    "flux-dev": "FluxPipeline", "flux-schnell": "FluxPipeline", "sd3-medium": "StableDiffusion3Pipeline",
    "flux2-dev": "Flux2Pipeline", "flux2-klein-4b": "Flux2KleinPipeline",
    "flux2-klein-base-4b": "Flux2KleinPipeline", "qwen-image": "QwenImagePipeline", "z-image": "ZImagePipeline",
    "chroma": "ChromaPipeline", "wan2.1-t2v-14b": "WanPipeline", "wan2.2-t2v-a14b": "WanPipeline",
}

#: RALU's argument names that a stock pipeline spells otherwise.
STOCK_NAMES = {"WanPipeline": {"num_images_per_prompt": "num_videos_per_prompt"}}

#: 1e-5 relative: |RALU - stock| <= TOLERANCE * max(1, max |stock|), elementwise maximum.
TOLERANCE = 1e-5
#: bfloat16 weights: the stock pipelines round their latents to bfloat16 after every step (and draw
#: the first noise in bfloat16); RALU integrates in float32 and casts once at the end. The values
#: then agree only to bfloat16's precision over a few steps; dtype, shape and type exactly.
BF16_TOLERANCE = 0.1


# -- recipes: drawn tensors, printed readably, built at run time ---------------------------------

@dataclasses.dataclass(frozen=True)
class Rand:
    """Standard normals of ``shape`` from ``seed``, in the pipeline's dtype (``"model"``) or another
    (``"float64"``, ``"int64"``: integers 0..3)."""

    shape: tuple
    seed: int
    dtype: str = "model"

    def build(self, ctx):
        g = torch.Generator().manual_seed(self.seed)
        if self.dtype == "int64":
            return torch.randint(0, 4, self.shape, generator=g)
        x = torch.randn(self.shape, generator=g)
        return x.to(ctx.dtype if self.dtype == "model" else getattr(torch, self.dtype))


@dataclasses.dataclass(frozen=True)
class Mask:
    """A ``(batch, tokens)`` attention mask of ``dtype``; the last prompt's last ``pad`` tokens masked."""

    batch: int
    tokens: int
    pad: int = 0
    dtype: str = "bool"

    def build(self, ctx):
        m = torch.ones(self.batch, self.tokens, dtype=getattr(torch, self.dtype))
        if self.pad:
            m[-1, self.tokens - self.pad:] = 0
        return m


@dataclasses.dataclass(frozen=True)
class Listed:
    """A list of recipes (Z-Image's per-image caption tensors)."""

    items: tuple

    def build(self, ctx):
        return [build(v, ctx) for v in self.items]


@dataclasses.dataclass(frozen=True)
class AtStep:
    """A value on the step grid, as the pipeline computes the quantity it compares: ``kind``
    ``"t_norm"`` is Z-Image's ``(1000 - t) / 1000`` (its ``cfg_truncation`` rule), ``"boundary"``
    WanPipeline's ``boundary_ratio`` whose ``ratio * num_train_timesteps`` is the timestep ``t``
    (its expert switch ``t >= boundary``). ``step`` picks the grid point (modulo the steps);
    ``nudge`` moves the value by that many float steps: in float32 (``"f32"``, where the pipeline
    rounds) or in float64 (``"f64"``)."""

    kind: str
    step: int
    nudge: int = 0
    width: str = "f64"

    def build(self, ctx):
        if ctx.timesteps is None:              # no schedule (RALU refused the size): any value will do
            return 0.5
        t = ctx.timesteps[self.step % len(ctx.timesteps)]
        if self.kind == "t_norm":
            value = ((1000 - t.float()) / 1000)
        elif self.kind == "boundary":
            value = t.float()
        else:
            raise ValueError(self.kind)
        if self.width == "f32" and self.nudge:
            value = torch.nextafter(value, torch.tensor(math.copysign(math.inf, self.nudge)))
        value = float(value)
        if self.kind == "boundary":
            value = value / ctx.num_train_timesteps
        if self.width == "f64":
            for _ in range(abs(self.nudge)):
                value = math.nextafter(value, math.copysign(math.inf, self.nudge))
        return value


def build(value, ctx):
    if isinstance(value, (Rand, Mask, Listed, AtStep)):
        return value.build(ctx)
    if isinstance(value, list):
        return [build(v, ctx) for v in value]
    return value


# -- a case and its run ------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    model: str
    steps: int
    call: dict                       # RALU's argument names; values plain or recipes
    images: int                      # images in the run (prompts x images per prompt)
    generator: str = "one"           # "one", "list" (one per image), "short" (one too few or too many), "none"
    latents: str | None = None       # None, "stock", "alt" (RALU's other form), "bigger", "frames", "float64"
    dtype: str = "float32"
    config: dict = dataclasses.field(default_factory=dict)    # pipeline config entries for the call
    seed: int = 0

    @property
    def pipeline(self) -> str:
        return MODELS[self.model]


@dataclasses.dataclass
class Context:
    dtype: torch.dtype
    timesteps: torch.Tensor | None
    num_train_timesteps: int


@dataclasses.dataclass
class Outcome:
    stock: object = None
    ralu: object = None
    stock_error: BaseException | None = None
    ralu_error: BaseException | None = None
    extensions: tuple = ()           # the extension-table entries the RALU call used


class Pipes:
    """The tiny pipelines of one module, built once each (a bfloat16 copy on first use)."""

    def __init__(self):
        self._cache = {}

    def __call__(self, model: str, dtype: str = "float32"):
        key = (model, dtype)
        if key not in self._cache:
            if dtype == "float32":
                self._cache[key] = tiny_pipeline(model)
            else:
                self._cache[key] = copy.deepcopy(self(model)).to(getattr(torch, dtype))
        return self._cache[key]


@contextlib.contextmanager
def configured(pipe, config: dict):
    """The pipeline with ``config`` registered for the duration (Wan's ``boundary_ratio``)."""
    old = {k: pipe.config.get(k) for k in config}
    pipe.register_to_config(**config)
    try:
        yield
    finally:
        pipe.register_to_config(**old)


def _latent_shape(pipe, model: str, images: int, height: int, width: int, frames: int | None) -> tuple:
    """The shape the stock pipeline draws its latents in for this call (its own rounding)."""
    name = MODELS[model]
    cfg = pipe.transformer.config
    if name == "WanPipeline":
        s = pipe.vae_scale_factor_spatial
        return (images, cfg.in_channels, (frames - 1) // pipe.vae_scale_factor_temporal + 1, height // s, width // s)
    rows, cols = 2 * (height // (pipe.vae_scale_factor * 2)), 2 * (width // (pipe.vae_scale_factor * 2))
    if name in ("StableDiffusion3Pipeline", "ZImagePipeline"):
        channels = cfg.in_channels
        return (images, channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    if name in ("Flux2Pipeline", "Flux2KleinPipeline"):
        return (images, cfg.in_channels, rows // 2, cols // 2)
    return (images, (rows // 2) * (cols // 2), cfg.in_channels)           # FLUX.1, Chroma, Qwen-Image: packed


def _other_form(name: str, latents: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """RALU's other form of the stock pipeline's latents (the extension table's ``latents`` rows)."""
    from ralu_torch.tokens import pack, unpack

    if name == "WanPipeline":                         # the clip's frames stacked on the rows
        B, C, T, h, w = latents.shape
        return latents.reshape(B, C, T * h, w)
    if name in ("StableDiffusion3Pipeline", "ZImagePipeline"):
        return pack(latents)                          # packed tokens
    if name in ("Flux2Pipeline", "Flux2KleinPipeline"):
        return latents.flatten(2).transpose(1, 2)     # the patchified latent's tokens
    return unpack(latents, (rows, cols))              # FLUX.1, Chroma, Qwen-Image: the 4-D latent


def _wrong_frames(latents: torch.Tensor) -> torch.Tensor:
    """A clip of another frame count holding as many values per channel (``T h`` kept)."""
    B, C, T, h, w = latents.shape
    if T > 1:
        return latents.reshape(B, C, 1, T * h, w)
    return latents.reshape(B, C, 2, h // 2, w)


def _latents(case: Case, pipe, ctx) -> tuple:
    """(stock latents, RALU latents) for the case, the same values."""
    if case.latents is None:
        return None, None
    height, width = case.call.get("height"), case.call.get("width")
    frames = case.call.get("num_frames")
    if case.latents == "bigger":
        height = height + 16
    shape = _latent_shape(pipe, case.model, case.images, height, width, frames)
    g = torch.Generator().manual_seed(case.seed + 1000)
    x = torch.randn(shape, generator=g).to(ctx.dtype)
    if case.latents == "float64":
        x = x.double()
    if case.latents == "alt" and height % 16 == 0 and width % 16 == 0:     # off the grid: no other form
        return x, _other_form(case.pipeline, x, height // 16, width // 16)
    if case.latents == "frames":
        x = _wrong_frames(x)
    return x, x


def _generators(case: Case):
    n = case.images
    if case.generator == "none":
        return None
    if case.generator == "one":
        return torch.Generator().manual_seed(case.seed)
    count = n if case.generator == "list" else (n + 1 if n < 2 else n - 1)
    return [torch.Generator().manual_seed(case.seed + i) for i in range(count)]


def _schedule(pipe, case: Case):
    """The one-stage schedule at the case's size, or None where RALU refuses it."""
    try:
        ralu = RALU(pipe, Layout(steps=(case.steps,), ends=(1.0,)))
        return ralu.schedule_for(case.call.get("height"), case.call.get("width"), case.call.get("num_frames"))
    except (ValueError, TypeError):
        return None


def run(pipes: Pipes, case: Case, extension_inputs) -> Outcome:
    """Both calls of ``case``; ``extension_inputs(case, call) -> (stock_call, used)`` turns the
    arguments RALU takes in another form than the stock pipeline into the stock's (the test
    module's extension table) and names the entries it used."""
    pipe = pipes(case.model, case.dtype)
    out = Outcome()
    schedule = _schedule(pipe, case)
    base = pipe.scheduler
    pinned = None if schedule is None else stage_scheduler(base, schedule, 0)
    ctx = Context(getattr(torch, case.dtype), None if pinned is None else pinned.timesteps,
                  base.config.num_train_timesteps)
    config = {k: build(v, ctx) for k, v in case.config.items()}
    call = {k: build(v, ctx) for k, v in case.call.items()}
    with configured(pipe, config):
        stock_latents, ralu_latents = _latents(case, pipe, ctx)
        stock_call, out.extensions = extension_inputs(case, call, ctx)
        if ralu_latents is not stock_latents:
            out.extensions = out.extensions + ("latents",)
        names = STOCK_NAMES.get(case.pipeline, {})
        stock_call = {names.get(k, k): v for k, v in stock_call.items()}
        if pinned is not None:
            pipe.scheduler = copy.deepcopy(pinned)
        try:
            out.stock = pipe(**stock_call, num_inference_steps=case.steps, generator=_generators(case),
                             latents=stock_latents)
        except Exception as err:         # noqa: BLE001 - any refusal of the stock pipeline counts
            out.stock_error = err
        finally:
            pipe.scheduler = base
        try:
            ralu = RALU(pipe, Layout(steps=(case.steps,), ends=(1.0,)))
            out.ralu = ralu(**call, generator=_generators(case), latents=ralu_latents)
        except Exception as err:         # noqa: BLE001 - checked to be a ValueError
            out.ralu_error = err
    return out


# -- the property --------------------------------------------------------------------------------------

def payload(result):
    """What a pipeline returned, as ``(return_dict, images)``."""
    if isinstance(result, tuple):
        assert len(result) == 1, f"a tuple of {len(result)} items"
        return False, result[0]
    images = getattr(result, "frames", None) if hasattr(result, "frames") else None
    return True, images if images is not None else result.images


def same(ours, stock, tolerance: float, where: str = "images") -> None:
    """``ours`` is ``stock``: the same type, dtype and shape, values within ``tolerance`` relative
    (PIL images: the same size and mode, pixels within one level of 255, the rounding of a
    value within the tolerance)."""
    import PIL.Image

    assert type(ours) is type(stock), f"{where}: RALU returned {type(ours).__name__}, stock {type(stock).__name__}"
    if isinstance(stock, (list, tuple)):
        assert len(ours) == len(stock), f"{where}: {len(ours)} items, stock {len(stock)}"
        for i, (a, b) in enumerate(zip(ours, stock)):
            same(a, b, tolerance, f"{where}[{i}]")
        return
    if isinstance(stock, PIL.Image.Image):
        assert (ours.size, ours.mode) == (stock.size, stock.mode), \
            f"{where}: {ours.size} {ours.mode}, stock {stock.size} {stock.mode}"
        diff = np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(stock, dtype=np.int16)).max()
        assert diff <= (1 if tolerance <= TOLERANCE else 255 * tolerance), f"{where}: pixels differ by {diff}"
        return
    if isinstance(stock, torch.Tensor):
        assert ours.dtype == stock.dtype, f"{where}: RALU dtype {ours.dtype}, stock {stock.dtype}"
        a, b = ours.detach().double().cpu().numpy(), stock.detach().double().cpu().numpy()
    else:
        assert isinstance(stock, np.ndarray), f"{where}: unexpected {type(stock).__name__}"
        assert ours.dtype == stock.dtype, f"{where}: RALU dtype {ours.dtype}, stock {stock.dtype}"
        a, b = ours.astype(np.float64), stock.astype(np.float64)
    assert a.shape == b.shape, f"{where}: RALU shape {a.shape}, stock {b.shape}"
    if not b.size:
        return
    scale = max(1.0, float(np.abs(b).max()))
    diff = float(np.abs(a - b).max())
    assert diff <= tolerance * scale, f"{where}: max |RALU - stock| = {diff:.3g} > {tolerance:g} x {scale:.3g}"


def check(case: Case, out: Outcome, refusals: dict) -> str:
    """The property, on one run; returns which branch held ("same", "both refuse", "refused: key")."""
    if out.stock_error is not None:
        assert out.ralu_error is not None, (f"the stock pipeline refused ({type(out.stock_error).__name__}: "
                                            f"{out.stock_error}) but RALU ran")
        assert isinstance(out.ralu_error, ValueError), (
            f"RALU refused with {type(out.ralu_error).__name__}, not ValueError: {out.ralu_error}")
        return "both refuse"
    if out.ralu_error is not None:
        assert isinstance(out.ralu_error, ValueError), (
            f"RALU failed with {type(out.ralu_error).__name__} where the stock pipeline ran: {out.ralu_error}")
        key = refusal_for(case, out.ralu_error, refusals)
        assert key is not None, f"RALU refused what the stock pipeline runs, and no refusal-table row says why: " \
                                f"{out.ralu_error}"
        return f"refused: {key[1]}"
    ours_dict, ours = payload(out.ralu)
    stock_dict, stock = payload(out.stock)
    assert ours_dict == stock_dict, f"return_dict: RALU {ours_dict}, stock {stock_dict}"
    taken = f" (RALU took {', '.join(out.extensions)} in its own form)" if out.extensions else ""
    same(ours, stock, TOLERANCE if case.dtype == "float32" else BF16_TOLERANCE, "images" + taken)
    return "same"


def refusal_for(case: Case, error: ValueError, refusals: dict):
    """The refusal-table row ``(pipeline, argument)`` that names this refusal: the row's pipeline
    is the case's (or ``"*"``), its argument is in the call, and its message pattern matches."""
    given = set(case.call) | ({"latents"} if case.latents else set()) | ({"generator"} if case.generator else set())
    for (pipeline, argument), (_, pattern) in refusals.items():
        if pipeline not in ("*", case.pipeline) or argument not in given:
            continue
        if re.search(pattern, str(error)):
            return pipeline, argument
    return None


# -- strategies ------------------------------------------------------------------------------------

def weighted(values):
    """A choice among ``values`` (repeats weight it), whose first value is the common case:
    hypothesis draws the ends of a choice more often than their share, so that value is put at
    both ends, and a rare value listed last is drawn about as rarely as its share says."""
    values = list(values)
    return st.sampled_from([values[0], *values, values[0]])


def around(threshold: float) -> list:
    """A threshold the pipeline compares against, the floats next to it, and values either side."""
    return [threshold, math.nextafter(threshold, -math.inf), math.nextafter(threshold, math.inf),
            threshold - 0.5, threshold + 0.5, threshold + 3.0]


def scales(threshold: float):
    """Guidance values at and around ``threshold`` (mostly), any in a range, rarely not finite."""
    return st.one_of(weighted(around(threshold) * 3 + [math.inf, math.nan]),
                     st.floats(threshold - 2, threshold + 6))


@st.composite
def sizes(draw, sides=(32, 48, 64), unit: int = 16) -> tuple:
    """``(height, width)``: on the pipeline's grid mostly, off it sometimes (by a few pixels, or by
    half a unit). (0, which most stock pipelines replace by their default size of 1024 pixels, is
    tested once, by hand: a run at that size is too slow to draw.)"""
    def side():
        kind = draw(weighted(["on"] * 27 + ["off", "half"]))
        value = draw(weighted(sides))
        return {"on": value, "off": value + draw(weighted([1, 7, 15])), "half": value + unit // 2}[kind]
    return side(), side()


@st.composite
def common(draw, model: str, *, sides=(32, 48, 64), outputs: int = 4) -> dict:
    """What every pipeline's call takes: size, steps, batch, images per prompt, generator, latents,
    output type (``"latent"`` ``outputs`` times as often as each decoded type), return_dict, dtype."""
    height, width = draw(sizes(sides))
    prompts = draw(st.integers(1, 2))
    per_prompt = draw(weighted([1] * 12 + [2] * 6 + [0]))
    bf16 = draw(weighted([False] * 9 + [True]))
    latents = draw(weighted([None] * 12 + ["stock"] * 4 + ["alt"] * 3 + ["bigger", "float64"]))
    generator = draw(weighted(["one"] * 9 + ["list"] * 6 + ["short"] + (["none"] * 6 if latents else [])))
    return dict(height=height, width=width, steps=draw(st.integers(1, 4)), prompts=prompts, per_prompt=per_prompt,
                generator=generator, latents=latents, dtype="bfloat16" if bf16 else "float32",
                output_type=draw(weighted(["latent"] * outputs + ["pt", "np", "pil"])),
                return_dict=draw(st.booleans()), seed=draw(st.integers(0, 3)))


def text(draw, batch: int, seed: int, *, tokens=None, dtype_choices=("model",) * 24 + ("float64", "int64")) -> Rand:
    """``(batch, tokens, width)`` text embeddings; rarely of another dtype, integer, or empty."""
    T = draw(weighted([1, 3, 5, 8])) if tokens is None else tokens
    empty = draw(weighted([None] * 28 + ["tokens", "batch"]))
    if empty == "tokens":
        T = 0
    return Rand((0 if empty == "batch" else batch, T, TINY_TEXT_DIM), seed, draw(weighted(dtype_choices)))


def finish(model: str, base: dict, call: dict, *, images_per=None, frames=None) -> Case:
    """A :class:`Case` from the common draw and the family's own arguments."""
    call = dict(call)
    call.update(height=base["height"], width=base["width"], output_type=base["output_type"],
                return_dict=base["return_dict"])
    if base["per_prompt"] != 1 or "num_images_per_prompt" in call:
        call["num_images_per_prompt"] = base["per_prompt"]
    if frames is not None:
        call["num_frames"] = frames
    images = base["prompts"] * max(base["per_prompt"], 0)
    return Case(model, base["steps"], call, images, base["generator"], base["latents"], base["dtype"],
                seed=base["seed"])


def _prompt(draw, call: dict) -> None:
    """Rarely a prompt string too (the stock pipelines refuse a prompt with its embeddings) or
    a prompt instead of the embeddings (the tiny pipelines have no text encoder)."""
    kind = draw(weighted([None] * 24 + ["both", "alone"]))
    if kind == "both":
        call["prompt"] = "a photo of a cat"
    elif kind == "alone":
        for key in [k for k in call if "prompt_embeds" in k or "mask" in k]:
            del call[key]
        call["prompt"] = "a photo of a cat"


def _pooled_negative(draw, call: dict, B: int, absent: int):
    """FLUX.1's and SD3's negative: none (``absent`` in 10), embeddings with their pooled ones,
    rarely without them or of another token count. Returns the kind drawn."""
    negative = draw(weighted([None] * absent + ["both"] * (8 - absent) + ["embeds only", "other length"]))
    if negative is not None:
        T = call["prompt_embeds"].shape[1] if negative != "other length" else draw(weighted([2, 6]))
        call["negative_prompt_embeds"] = Rand((B, T, TINY_TEXT_DIM), 3)
        if negative != "embeds only":
            call["negative_pooled_prompt_embeds"] = Rand((B, TINY_POOLED_DIM), 4)
    return negative


def _max_sequence_length(draw, call: dict, limit: int | None) -> None:
    choices = [None] * 24 + [0, 2]
    if limit is not None:
        choices += [limit, limit + 1]
    value = draw(weighted(choices))
    if value is not None:
        call["max_sequence_length"] = value


@st.composite
def flux_cases(draw, model: str) -> Case:
    """FluxPipeline: prompt and pooled embeddings, true CFG (a negative prompt and
    ``true_cfg_scale > 1``), the distilled ``guidance_scale`` (dev), ``max_sequence_length`` <= 512."""
    base = draw(common(model))
    B = base["prompts"]
    call = dict(prompt_embeds=text(draw, B, 1))
    if draw(weighted([True] * 19 + [False])):
        call["pooled_prompt_embeds"] = Rand((B, TINY_POOLED_DIM), 2)
    negative = _pooled_negative(draw, call, B, absent=4)
    if draw(weighted([True] * 3 + [False])) if negative else draw(st.booleans()):
        call["true_cfg_scale"] = draw(scales(1.0))
    if draw(st.booleans()):
        call["guidance_scale"] = draw(st.one_of(weighted([0.0, 1.0, 3.5]), st.floats(-2, 10)))
    _max_sequence_length(draw, call, 512)
    _prompt(draw, call)
    return finish(model, base, call)


@st.composite
def sd3_cases(draw, model: str = "sd3-medium") -> Case:
    """StableDiffusion3Pipeline: prompt and pooled embeddings, classifier-free guidance with
    ``guidance_scale > 1`` (negatives: given, or zeros), skip-layer guidance (its window compares
    the step index with ``num_inference_steps * start`` and ``* stop``), ``max_sequence_length`` <= 512."""
    base = draw(common(model))
    B = base["prompts"]
    call = dict(prompt_embeds=text(draw, B, 1), pooled_prompt_embeds=Rand((B, TINY_POOLED_DIM), 2))
    _pooled_negative(draw, call, B, absent=2)
    if draw(weighted([True] * 4 + [False])):
        call["guidance_scale"] = draw(scales(1.0))
    if draw(weighted([False] * 3 + [True])):
        call["skip_guidance_layers"] = draw(weighted([[0], [1], [0, 1]]))
        n = base["steps"]
        # the window's ends on step indices (i > n * start, i < n * stop) and off them
        call["skip_layer_guidance_start"] = draw(weighted([0.0, 0.01, 1 / n, 0.5]))
        call["skip_layer_guidance_stop"] = draw(weighted([0.2, 0.5, 1.0, (n - 1) / n]))
        if draw(st.booleans()):
            call["skip_layer_guidance_scale"] = draw(weighted([0.0, 2.8]))
    if draw(weighted([False] * 9 + [True])):
        call["mu"] = 1.0
    _max_sequence_length(draw, call, 512)
    _prompt(draw, call)
    return finish(model, base, call)


@st.composite
def flux2_cases(draw, model: str) -> Case:
    """Flux2Pipeline ([dev]: embedded guidance) and Flux2KleinPipeline (distilled: no guidance;
    base: a second call on the negative embeddings when ``guidance_scale > 1``)."""
    base = draw(common(model))
    B = base["prompts"]
    call = dict(prompt_embeds=text(draw, B, 1))
    guides = model == "flux2-klein-base-4b"           # the others take no negative (refused both ways)
    if draw(weighted([guides] * 5 + [not guides])):
        call["negative_prompt_embeds"] = Rand((B, draw(weighted([3, 5])), TINY_TEXT_DIM), 3)
    if draw(weighted([True] * 2 + [False])):
        call["guidance_scale"] = draw(scales(1.0))
    _max_sequence_length(draw, call, None)
    _prompt(draw, call)
    return finish(model, base, call)


@st.composite
def qwen_cases(draw, model: str = "qwen-image") -> Case:
    """QwenImagePipeline: embeddings with and without their masks (bool or integer, padded or
    all ones: an all-ones mask is dropped), true CFG (``true_cfg_scale > 1`` with a negative), a
    ``max_sequence_length`` that truncates the embeddings, or exceeds the pipeline's 1024."""
    base = draw(common(model))
    B = base["prompts"]
    call = dict(prompt_embeds=text(draw, B, 1))
    T = call["prompt_embeds"].shape[1]
    if draw(weighted([True] * 3 + [False])):
        call["prompt_embeds_mask"] = Mask(B, T, draw(weighted([0, 0, 1, T - 1] if T > 1 else [0])),
                                          draw(weighted(["bool", "int64"])))
    if draw(st.booleans()):
        Tn = draw(weighted([T, 2, 6]))
        call["negative_prompt_embeds"] = Rand((B, Tn, TINY_TEXT_DIM), 3)
        if draw(st.booleans()):
            call["negative_prompt_embeds_mask"] = Mask(B, Tn, draw(weighted([0, 1])),
                                                       draw(weighted(["bool", "int64"])))
    if draw(weighted([True] * 2 + [False])):
        call["true_cfg_scale"] = draw(scales(1.0))
    if draw(weighted([False] * 4 + [True])):
        call["guidance_scale"] = 2.0                 # ignored by a transformer without guidance embeddings
    _max_sequence_length(draw, call, 1024)
    if draw(weighted([False] * 4 + [True])) and T > 1:
        call["max_sequence_length"] = T - 1          # truncates the embeddings (and masks)
    _prompt(draw, call)
    return finish(model, base, call)


@st.composite
def zimage_cases(draw, model: str = "z-image") -> Case:
    """ZImagePipeline: caption lists (one ``(tokens, width)`` tensor per prompt, lengths differ),
    classifier-free guidance when ``guidance_scale > 0``, ``cfg_truncation`` on and next to the
    step grid of ``(1000 - t) / 1000``, ``cfg_normalization`` as the bool it is documented as, or a
    float, or off."""
    base = draw(common(model))
    B = base["prompts"]
    lengths = [draw(weighted([1, 3, 5])) for _ in range(B)]
    dtype = draw(weighted(["model"] * 12 + ["float64", "int64"]))
    empty = draw(weighted([False] * 14 + [True]))
    call = dict(prompt_embeds=Listed(tuple(Rand((0 if empty and i == 0 else n, TINY_TEXT_DIM), 1 + i, dtype)
                                           for i, n in enumerate(lengths))))
    if draw(weighted([True, True, False])):
        call["negative_prompt_embeds"] = Listed(tuple(Rand((draw(weighted([1, 4])), TINY_TEXT_DIM), 10 + i)
                                                      for i in range(draw(weighted([B, B, B + 1])))))
    if draw(weighted([True] * 3 + [False])):
        call["guidance_scale"] = draw(scales(0.0))
    truncation = draw(weighted(["grid"] * 3 + ["value", None]))
    if truncation == "grid":
        call["cfg_truncation"] = AtStep("t_norm", draw(st.integers(0, 3)), draw(weighted([0, -1, 1])),
                                        draw(weighted(["f64", "f32"])))
    elif truncation == "value":
        call["cfg_truncation"] = draw(weighted([None, 0.0, 0.5, 1.0, math.nextafter(1.0, 2.0), 2.0]))
    if draw(st.booleans()):
        call["cfg_normalization"] = draw(weighted([True, False, 0.0, 1.0, 1.5, 0.25]))
    _max_sequence_length(draw, call, None)
    _prompt(draw, call)
    return finish(model, base, call)


@st.composite
def chroma_cases(draw, model: str = "chroma") -> Case:
    """ChromaPipeline: embeddings with their attention masks (required by the pipeline with
    embeddings; bool or integer, padded or not) or without, classifier-free guidance when
    ``guidance_scale > 1`` (the negative: given, or the empty prompt), ``max_sequence_length`` <= 512."""
    base = draw(common(model))
    B = base["prompts"]
    call = dict(prompt_embeds=text(draw, B, 1))
    T = call["prompt_embeds"].shape[1]
    if draw(weighted([True] * 9 + [False])):
        call["prompt_attention_mask"] = Mask(B, T, draw(weighted([0, 1] if T > 1 else [0])),
                                             draw(weighted(["bool"] * 5 + ["int64"])))
    if draw(weighted([True] * 5 + [False])):   # without one, guidance encodes "" (no text encoder here)
        Tn = draw(weighted([T, 2]))
        call["negative_prompt_embeds"] = Rand((B, Tn, TINY_TEXT_DIM), 3)
        if draw(weighted([True] * 9 + [False])):
            call["negative_prompt_attention_mask"] = Mask(B, Tn, draw(weighted([0, 1])),
                                                          draw(weighted(["bool"] * 5 + ["int64"])))
    if draw(weighted([True] * 3 + [False])):
        call["guidance_scale"] = draw(scales(1.0))
    _max_sequence_length(draw, call, 512)
    _prompt(draw, call)
    return finish(model, base, call)


@st.composite
def wan_cases(draw, model: str) -> Case:
    """WanPipeline: ``num_frames`` on its ``4 k + 1`` rule and off it, classifier-free guidance
    when ``guidance_scale > 1``; with two experts (Wan 2.2) ``guidance_scale_2`` and the
    ``boundary_ratio`` on and next to the timestep grid, compared as the pipeline compares
    (``t >= ratio * num_train_timesteps`` on the scheduler's timesteps)."""
    base = draw(common(model, sides=(32, 48), outputs=8))       # decoding a clip costs most
    B = base["prompts"]
    frames = draw(weighted([1, 5, 5, 9, 3, 6]))
    call = dict(prompt_embeds=text(draw, B, 1))
    if draw(weighted([True] * 5 + [False])):   # without one, guidance encodes "" (no text encoder here)
        call["negative_prompt_embeds"] = Rand((B, draw(weighted([3, 5])), TINY_TEXT_DIM), 3)
    if draw(weighted([True] * 3 + [False])):
        call["guidance_scale"] = draw(scales(1.0))
    case = finish(model, base, call, frames=frames)
    if model == "wan2.2-t2v-a14b":
        if draw(st.booleans()):
            case.call["guidance_scale_2"] = draw(weighted(around(1.0)))
        if draw(weighted([True] * 3 + [False])):
            case.config["boundary_ratio"] = AtStep("boundary", draw(st.integers(0, 3)),
                                                   draw(weighted([0, -1, 1])),
                                                   draw(weighted(["f64", "f32"])))
    elif draw(weighted([False] * 5 + [True])):
        case.call["guidance_scale_2"] = 3.0
    if base["latents"] is not None and draw(weighted([False] * 2 + [True])):
        case.latents = "frames"
    return case


#: The strategy of each model.
STRATEGIES = {
    "flux-dev": flux_cases("flux-dev"), "flux-schnell": flux_cases("flux-schnell"), "sd3-medium": sd3_cases(),
    "flux2-dev": flux2_cases("flux2-dev"), "flux2-klein-4b": flux2_cases("flux2-klein-4b"),
    "flux2-klein-base-4b": flux2_cases("flux2-klein-base-4b"), "qwen-image": qwen_cases(),
    "z-image": zimage_cases(), "chroma": chroma_cases(), "wan2.1-t2v-14b": wan_cases("wan2.1-t2v-14b"),
    "wan2.2-t2v-a14b": wan_cases("wan2.2-t2v-a14b"),
}
