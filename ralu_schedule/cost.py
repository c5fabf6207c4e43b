"""Analytic cost model: FLOPs of the transformer, text encoders and VAE decoder of FLUX.1
and SD3, and the cost and predicted speed-up of any layout.

Two conventions, always labelled:

- ``paper``: weight layers only (linear layers and convolutions), as the RALU paper counts;
- ``full``: every matrix product, the attention scores and attention-times-values included.

One multiply-add is 2 FLOPs. Elementwise work (norms, activations, RoPE) is not counted
in either, as ``torch.utils.flop_counter`` does not count it; the tests check every
formula here against that counter on full-size models built on torch's ``meta`` device.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ._errors import check_positive_int
from .grid import PIXELS_PER_TOKEN, token_grid
from .layout import Layout
from .export import model_evaluations

CONVENTIONS = ("paper", "full")


def _check_convention(convention):
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")


@dataclass(frozen=True)
class Flops:
    """FLOPs split into weight layers (``linear``: linear and convolution) and attention products."""

    linear: float = 0.0
    attention: float = 0.0

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.linear + other.linear, self.attention + other.attention)

    def __mul__(self, k: float) -> "Flops":
        return Flops(self.linear * k, self.attention * k)

    __rmul__ = __mul__

    def total(self, convention: str = "full") -> float:
        _check_convention(convention)
        return self.linear + (self.attention if convention == "full" else 0.0)


def _lin(tokens, fan_in, fan_out) -> Flops:
    return Flops(linear=2.0 * tokens * fan_in * fan_out)


def _attn(q_tokens, kv_tokens, width) -> Flops:
    """Scores ``Q K^T`` and ``softmax(.) V``: ``2 * 2 * Lq * Lkv * width``."""
    return Flops(attention=4.0 * q_tokens * kv_tokens * width)


# -- transformers -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TransformerSpec:
    """An MM-DiT: FLUX (``double`` joint blocks then ``single`` blocks) or SD3 (joint blocks).

    ``pixels_per_token``: image pixels per token side (VAE factor 8 x patch 2 = 16).
    """

    family: str                 # "flux" or "sd3"
    double: int                 # joint (two-stream) blocks
    single: int = 0             # FLUX single-stream blocks
    heads: int
    head_dim: int
    mlp_ratio: int = 4
    token_features: int = 64    # input features per image token (FLUX: 16 ch x 2x2; SD3 conv: 16 x 2x2)
    context_dim: int = 4096
    pooled_dim: int = 768
    guidance_embeds: bool = False
    dual_attention_layers: tuple = ()   # SD3.5-medium: blocks with a second, image-only attention
    pixels_per_token: int = PIXELS_PER_TOKEN

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        """FLOPs of one forward pass for one image (batch 1)."""
        M, T, d = image_tokens, text_tokens, self.width
        L = M + T
        f = _lin(M, self.token_features, d) + _lin(T, self.context_dim, d)   # embedders
        f += _lin(1, 256, d) + _lin(1, d, d) + _lin(1, self.pooled_dim, d) + _lin(1, d, d)
        mlp = self.mlp_ratio * d
        per_stream = lambda n: _lin(n, d, 3 * d) + _lin(n, d, d) + _lin(n, d, mlp) + _lin(n, mlp, d)  # noqa: E731
        if self.family == "flux":
            if self.guidance_embeds:
                f += _lin(1, 256, d) + _lin(1, d, d)
            f += self.double * (_lin(2, d, 6 * d) + per_stream(L) + _attn(L, L, d))
            f += self.single * (_lin(1, d, 3 * d) + _lin(L, d, 3 * d) + _lin(L, d, mlp)
                                + _lin(L, d + mlp, d) + _attn(L, L, d))
        elif self.family == "sd3":
            for i in range(self.double):
                last = i == self.double - 1
                dual = i in self.dual_attention_layers
                f += _lin(1, d, (9 if dual else 6) * d) + per_stream(M) + _attn(L, L, d)
                if last:  # context_pre_only: the text stream only gives keys and values
                    f += _lin(1, d, 2 * d) + _lin(T, d, 3 * d)
                else:
                    f += _lin(1, d, 6 * d) + per_stream(T)
                if dual:
                    f += _lin(M, d, 4 * d) + _attn(M, M, d)
        else:
            raise ValueError(f"unknown transformer family {self.family!r}")
        return f + _lin(1, d, 2 * d) + _lin(M, d, self.token_features)   # norm_out, proj_out


# -- text encoders and VAE ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EncoderSpec:
    """A text encoder: ``kind`` "t5" (gated-GELU feed-forward) or "clip"."""

    kind: str
    layers: int
    width: int
    ffn: int
    inner: int = 0          # attention width (T5: heads x d_kv); 0 means ``width``
    tokens: int = 77
    projection: bool = False  # CLIPTextModelWithProjection: one pooled d x d projection

    def forward(self, tokens: int | None = None) -> Flops:
        T = self.tokens if tokens is None else tokens
        d, inner = self.width, self.inner or self.width
        ffn_mats = 3 if self.kind == "t5" else 2
        layer = _lin(T, d, 3 * inner) + _lin(T, inner, d) + Flops(linear=2.0 * T * d * self.ffn * ffn_mats)
        layer += _attn(T, T, inner)
        f = self.layers * layer
        return f + _lin(1, d, d) if self.projection else f


@dataclass(frozen=True, kw_only=True)
class VAEDecoderSpec:
    """diffusers' ``AutoencoderKL`` decoder: ``channels`` is ``block_out_channels``."""

    latent_channels: int = 16
    channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    out_channels: int = 3
    post_quant_conv: bool = False

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def decode(self, height: int, width: int) -> Flops:
        """FLOPs of decoding one latent to a ``height x width`` image."""
        h, w = height // self.downsampling, width // self.downsampling
        conv = lambda cin, cout, k, hh, ww: Flops(linear=2.0 * cin * cout * k * k * hh * ww)  # noqa: E731

        def resnet(cin, cout, hh, ww):
            f = conv(cin, cout, 3, hh, ww) + conv(cout, cout, 3, hh, ww)
            return f + conv(cin, cout, 1, hh, ww) if cin != cout else f

        top = self.channels[-1]
        f = conv(self.latent_channels, self.latent_channels, 1, h, w) if self.post_quant_conv else Flops()
        f += conv(self.latent_channels, top, 3, h, w)
        f += 2 * resnet(top, top, h, w) + _lin(h * w, top, 4 * top) + _attn(h * w, h * w, top)
        prev = top
        rev = list(reversed(self.channels))
        for i, ch in enumerate(rev):
            for j in range(self.layers_per_block + 1):
                f += resnet(prev if j == 0 else ch, ch, h, w)
            prev = ch
            if i < len(rev) - 1:
                h, w = 2 * h, 2 * w
                f += conv(ch, ch, 3, h, w)
        return f + conv(self.channels[0], self.out_channels, 3, h, w)


T5_XXL = EncoderSpec(kind="t5", layers=24, width=4096, ffn=10240, inner=4096, tokens=512)
CLIP_L = EncoderSpec(kind="clip", layers=12, width=768, ffn=3072, tokens=77)
CLIP_L_PROJ = EncoderSpec(kind="clip", layers=12, width=768, ffn=3072, tokens=77, projection=True)
CLIP_G_PROJ = EncoderSpec(kind="clip", layers=32, width=1280, ffn=5120, tokens=77, projection=True)
VAE_16 = VAEDecoderSpec()


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A whole text-to-image model as the cost model sees it.

    ``text_tokens``: the transformer's text sequence (FLUX: T5 tokens; SD3: 77 CLIP + T5).
    ``t5_tokens``: T5's sequence length. ``cfg_batches``: forwards per step (2 with
    classifier-free guidance, which also encodes the negative prompt).
    """

    name: str
    transformer: TransformerSpec
    encoders: tuple
    vae: VAEDecoderSpec = VAE_16
    text_tokens: int
    t5_tokens: int
    cfg_batches: int = 1
    diffusers_id: str = ""
    notes: str = field(default="", compare=False)

    def text_encoding(self) -> Flops:
        f = Flops()
        for enc in self.encoders:
            f += enc.forward(self.t5_tokens if enc.kind == "t5" else None)
        return self.cfg_batches * f

    def step(self, image_tokens: int) -> Flops:
        """One sampler step: the transformer's forwards (``cfg_batches`` of them)."""
        return self.cfg_batches * self.transformer.forward(image_tokens, self.text_tokens)

    def token_grid(self, height: int, width: int, multiple: int = 1) -> tuple:
        """Full-resolution token grid of an image (:func:`ralu_schedule.grid.token_grid`)."""
        return token_grid(height, width, pixels_per_token=self.transformer.pixels_per_token,
                          downsampling=multiple, what=f"{self.name} with this layout")


_FLUX = dict(family="flux", double=19, single=38, heads=24, head_dim=128, pooled_dim=768)
_SD3 = dict(family="sd3", heads=24, head_dim=64, pooled_dim=2048)
MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    ModelSpec(name="flux-dev", transformer=TransformerSpec(**_FLUX, guidance_embeds=True),
              encoders=(T5_XXL, CLIP_L), text_tokens=512, t5_tokens=512,
              diffusers_id="black-forest-labs/FLUX.1-dev"),
    ModelSpec(name="flux-schnell", transformer=TransformerSpec(**_FLUX, guidance_embeds=False),
              encoders=(T5_XXL, CLIP_L), text_tokens=256, t5_tokens=256,
              diffusers_id="black-forest-labs/FLUX.1-schnell"),
    ModelSpec(name="sd3-medium", transformer=TransformerSpec(**_SD3, double=24),
              encoders=(CLIP_L_PROJ, CLIP_G_PROJ, T5_XXL), text_tokens=77 + 256, t5_tokens=256,
              cfg_batches=2, diffusers_id="stabilityai/stable-diffusion-3-medium-diffusers"),
    ModelSpec(name="sd3.5-medium",
              transformer=TransformerSpec(**_SD3, double=24, dual_attention_layers=tuple(range(13))),
              encoders=(CLIP_L_PROJ, CLIP_G_PROJ, T5_XXL), text_tokens=77 + 256, t5_tokens=256,
              cfg_batches=2, diffusers_id="stabilityai/stable-diffusion-3.5-medium"),
    ModelSpec(name="sd3.5-large",
              transformer=TransformerSpec(**{**_SD3, "heads": 38}, double=38),
              encoders=(CLIP_L_PROJ, CLIP_G_PROJ, T5_XXL), text_tokens=77 + 256, t5_tokens=256,
              cfg_batches=2, diffusers_id="stabilityai/stable-diffusion-3.5-large"),
]}


def get_model(name) -> ModelSpec:
    """A model of :data:`MODELS` by name, or a :class:`ModelSpec` as given (e.g. a benchmark's own)."""
    if isinstance(name, ModelSpec):
        return name
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


# -- layouts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageCost:
    tokens: int
    steps: int
    tflops: float   # the transformer's alone
    evaluations: int = 0   # transformer calls: ``steps`` for Euler, ``2 steps - 1`` for Heun
    full_calls: int | None = None   # with a cache: calls that run the whole model (else all of them)

    def __post_init__(self):
        if not self.evaluations:
            object.__setattr__(self, "evaluations", self.steps)
        if self.full_calls is None:
            object.__setattr__(self, "full_calls", self.evaluations)


@dataclass(frozen=True)
class LayoutCost:
    model: str
    resolution: tuple
    convention: str
    stages: tuple
    text_encoding_tflops: float
    edge_decode_tflops: tuple      # one entry per transition (0 where no edges are needed)
    decode_tflops: float
    baseline_steps: int
    baseline_tflops: float
    solver: str = "euler"
    cache: object = None
    text_tokens: int | None = None

    @property
    def transformer_tflops(self) -> float:
        return sum(s.tflops for s in self.stages)

    @property
    def tflops(self) -> float:
        return (self.transformer_tflops + self.text_encoding_tflops + sum(self.edge_decode_tflops)
                + self.decode_tflops)

    @property
    def speedup(self) -> float:
        return self.baseline_tflops / self.tflops

    def to_dict(self) -> dict:
        return {"model": self.model, "resolution": list(self.resolution), "convention": self.convention,
                "tflops": self.tflops, "baseline_tflops": self.baseline_tflops,
                "baseline_steps": self.baseline_steps, "speedup": self.speedup, "solver": self.solver,
                "transformer_tflops": self.transformer_tflops,
                "stages": [{"tokens": s.tokens, "steps": s.steps, "evaluations": s.evaluations,
                            "full_calls": s.full_calls, "tflops": s.tflops} for s in self.stages],
                "cache": None if self.cache is None else {"name": type(self.cache).__name__, **vars(self.cache)},
                "text_tokens": self.text_tokens,
                "text_encoding_tflops": self.text_encoding_tflops,
                "edge_decode_tflops": list(self.edge_decode_tflops), "decode_tflops": self.decode_tflops}


def layout_cost(layout: Layout, model: "str | ModelSpec" = "flux-dev", resolution=(1024, 1024), *,
                convention: str = "paper", baseline_steps: int = 50, solver: str = "euler", cache=None,
                text_tokens: int | None = None) -> LayoutCost:
    """Cost of sampling one image with ``layout`` against a ``baseline_steps``-step baseline.

    Counted: each stage's transformer forwards at its token count (low-res tokens kept plus
    ``f^2`` children per upsampled one), an edge-detection VAE decode at each transition
    that upsamples only part of the blocks (at the resolution of the level it selects
    from), text encoding once, the final decode. The baseline is a one-stage layout of
    ``baseline_steps`` steps at full resolution, counted the same way.

    ``solver`` (one of :data:`ralu_schedule.export.SOLVERS`) sets how many transformer calls
    a stage's steps make (:func:`~ralu_schedule.export.model_evaluations`; Heun ``2 n - 1``);
    the baseline stays the ``baseline_steps``-call Euler run the paper compares against.

    ``cache``: a fixed-pattern step cache (:class:`ralu_schedule.caching.TaylorSeerPolicy`),
    restarted in every stage; predicted calls cost its ``predicted_cost`` (paper: 0).
    ``text_tokens``: the T5 sequence length (``max_sequence_length``) instead of the model's
    default (FLUX.1-dev 512, schnell 256, SD3 256 T5 tokens after 77 CLIP tokens); it sets
    the transformer's text tokens and T5's cost, for the layout and the baseline alike.
    """
    _check_convention(convention)
    spec = get_model(model)
    model = spec.name
    if text_tokens is not None:
        n = check_positive_int("text tokens", text_tokens)
        spec = replace(spec, text_tokens=spec.text_tokens - spec.t5_tokens + n, t5_tokens=n)
    if cache is not None and not hasattr(cache, "step_costs"):
        raise ValueError(f"cache must be a fixed-pattern policy such as ralu_schedule.caching.TaylorSeerPolicy, "
                         f"got {type(cache).__name__}")
    baseline_steps = check_positive_int("baseline steps", baseline_steps)
    height, width = _resolution(resolution)
    gh, gw = spec.token_grid(height, width, layout.downsampling)
    T = lambda f: f.total(convention) / 1e12  # noqa: E731
    calls = [model_evaluations(k, solver) for k in layout.steps]
    work = [float(m) if cache is None else sum(cache.step_costs(m)) for m in calls]
    full = [m if cache is None else len(cache.full_steps(m)) for m in calls]
    stages = tuple(StageCost(tokens=n, steps=k, tflops=w * T(spec.step(n)), evaluations=m, full_calls=f)
                   for n, k, m, w, f in zip(layout.stage_tokens(gh, gw), layout.steps, calls, work, full))
    edges, level, down = [], 0, layout.downsampling
    for r in layout.fractions:
        edges.append(0.0 if r >= 1.0 else T(spec.vae.decode(height // down, width // down)))
        if r >= 1.0:
            down //= layout.level_factors[level]
            level += 1
    text = T(spec.text_encoding())
    decode = T(spec.vae.decode(height, width))
    baseline = baseline_steps * T(spec.step(gh * gw)) + text + decode
    return LayoutCost(model=model, resolution=(height, width), convention=convention, stages=stages,
                      text_encoding_tflops=text, edge_decode_tflops=tuple(edges), decode_tflops=decode,
                      baseline_steps=baseline_steps, baseline_tflops=baseline, solver=solver, cache=cache,
                      text_tokens=text_tokens)


def _resolution(resolution) -> tuple:
    if isinstance(resolution, str):
        parts = resolution.lower().split("x")
        try:
            h, w = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"resolution must look like HEIGHTxWIDTH, e.g. 1024x1024, got {resolution!r}") from None
        return check_positive_int("height", h), check_positive_int("width", w)
    h, w = resolution
    return check_positive_int("height", h), check_positive_int("width", w)


def format_cost(c: LayoutCost) -> str:
    solver = "" if c.solver == "euler" else f", solver {c.solver}"
    if c.cache is not None:
        solver += ", cache " + ", ".join(f"{k}={v}" for k, v in vars(c.cache).items())
    if c.text_tokens is not None:
        solver += f", {c.text_tokens} text tokens"
    lines = [f"{c.model} at {c.resolution[0]}x{c.resolution[1]}, convention '{c.convention}'{solver} (TFLOPs)",
             f"{'stage':>5} {'tokens':>7} {'steps':>5} {'calls':>5} {'full':>5} {'TFLOPs':>9}"]
    for i, s in enumerate(c.stages, 1):
        lines.append(f"{i:>5} {s.tokens:>7} {s.steps:>5} {s.evaluations:>5} {s.full_calls:>5} {s.tflops:>9.1f}")
    lines += [f"text encoding       {c.text_encoding_tflops:9.2f}",
              f"edge decodes        {sum(c.edge_decode_tflops):9.2f}",
              f"final decode        {c.decode_tflops:9.2f}",
              f"total               {c.tflops:9.1f}",
              f"baseline ({c.baseline_steps} steps) {c.baseline_tflops:9.1f}",
              f"predicted speed-up  {c.speedup:9.2f}x"]
    return "\n".join(lines)
