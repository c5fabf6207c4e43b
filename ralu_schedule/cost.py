"""Analytic cost model: FLOPs of the transformer, text encoders and VAE decoder of FLUX.1,
SD3, FLUX.2, Qwen-Image, Z-Image, Chroma and the Wan 2.1 / 2.2 text-to-video models, and the
cost and predicted speed-up of any layout (for a video model, of a whole clip).

Two conventions, always labelled:

- ``paper``: weight layers only (linear layers and convolutions), as the RALU paper counts;
- ``full``: every matrix product, the attention scores and attention-times-values included.

One multiply-add is 2 FLOPs. Elementwise work (norms, activations, RoPE) is not counted
in either, as ``torch.utils.flop_counter`` does not count it; the tests check every
formula here against that counter on full-size models built on torch's ``meta`` device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

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


def _qkvo(tokens, width, inner=None, kv=None) -> Flops:
    """Query, key and value projections and the output projection: ``width`` features in and
    out, ``inner`` attention features (heads x head dim; default ``width``), ``kv`` features
    each for keys and values (default ``inner``; fewer with grouped-query attention)."""
    inner = inner or width
    kv = kv or inner
    return _lin(tokens, width, inner + 2 * kv) + _lin(tokens, inner, width)


def _ffn(tokens, width, hidden, gates=1) -> Flops:
    """A feed-forward ``width -> hidden -> width``; ``gates=2`` for a gated one (SwiGLU, GEGLU),
    whose first layer makes ``2 x hidden`` features (two matrices or one fused)."""
    return _lin(tokens, width, gates * hidden) + _lin(tokens, hidden, width)


# -- transformers -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DiTSpec:
    """What every transformer of the cost model has: ``heads x head_dim`` attention, and
    ``pixels_per_token`` image pixels per token side (VAE factor 8 x patch 2 = 16 for all).

    A family is a subclass that writes only :meth:`forward`, the FLOPs of one forward pass
    for one image (batch 1) at ``image_tokens`` image and ``text_tokens`` text tokens, and
    names itself in ``family``.
    """

    heads: int
    head_dim: int
    pixels_per_token: int = PIXELS_PER_TOKEN

    def __post_init__(self):
        check_positive_int("heads", self.heads)
        check_positive_int("head_dim", self.head_dim)

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def step(self, image_tokens: int, text_tokens: int, batches: int = 1) -> Flops:
        """One sampler step: ``batches`` forwards (2 with classifier-free guidance). A family whose
        step makes calls of different kinds (LTX-2) writes its own."""
        return batches * self.forward(image_tokens, text_tokens)

    def for_clip(self, frames: int) -> "DiTSpec":
        """The spec for a clip of ``frames`` video frames (a family with a stream whose length the
        clip sets, LTX-2's audio, says so here); itself otherwise."""
        return self


@dataclass(frozen=True, kw_only=True)
class TransformerSpec(DiTSpec):
    """An MM-DiT: FLUX.1 (``double`` joint blocks then ``single`` blocks) or SD3 (joint blocks)."""

    FAMILIES: ClassVar[tuple] = ("flux", "sd3")

    family: str                 # "flux" or "sd3"
    double: int                 # joint (two-stream) blocks
    single: int = 0             # FLUX single-stream blocks
    mlp_ratio: int = 4
    token_features: int = 64    # input features per image token (FLUX: 16 ch x 2x2; SD3 conv: 16 x 2x2)
    context_dim: int = 4096
    pooled_dim: int = 768
    guidance_embeds: bool = False
    dual_attention_layers: tuple = ()   # SD3.5-medium: blocks with a second, image-only attention

    def __post_init__(self):
        super().__post_init__()
        if self.family not in self.FAMILIES:
            raise ValueError(f"unknown transformer family {self.family!r}; TransformerSpec is one of "
                             f"{', '.join(self.FAMILIES)} (FLUX.2, Qwen-Image, Z-Image and Chroma have "
                             "their own classes)")

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        """FLOPs of one forward pass for one image (batch 1)."""
        M, T, d = image_tokens, text_tokens, self.width
        L = M + T
        f = _lin(M, self.token_features, d) + _lin(T, self.context_dim, d)   # embedders
        f += _lin(1, 256, d) + _lin(1, d, d) + _lin(1, self.pooled_dim, d) + _lin(1, d, d)
        mlp = self.mlp_ratio * d
        per_stream = lambda n: _qkvo(n, d) + _ffn(n, d, mlp)  # noqa: E731
        if self.family == "flux":
            if self.guidance_embeds:
                f += _lin(1, 256, d) + _lin(1, d, d)
            f += self.double * (_lin(2, d, 6 * d) + per_stream(L) + _attn(L, L, d))
            f += self.single * (_lin(1, d, 3 * d) + _lin(L, d, 3 * d) + _lin(L, d, mlp)
                                + _lin(L, d + mlp, d) + _attn(L, L, d))
        else:  # sd3
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
        return f + _lin(1, d, 2 * d) + _lin(M, d, self.token_features)   # norm_out, proj_out


@dataclass(frozen=True, kw_only=True)
class Flux2Spec(DiTSpec):
    """FLUX.2 (diffusers ``Flux2Transformer2DModel``): ``double`` two-stream blocks, then
    ``single`` blocks whose attention and SwiGLU feed-forward share one input and one output
    projection; no biases. The modulation of all blocks comes from three layers run once per
    forward (``double_stream_modulation_img``/``_txt``, ``single_stream_modulation``)."""

    family: ClassVar[str] = "flux2"
    double: int
    single: int
    mlp_ratio: float = 3.0
    token_features: int = 128   # 32 latent channels x 2x2 patch
    context_dim: int = 15360    # three stacked hidden states of the text encoder
    guidance_embeds: bool = True

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        M, T, d = image_tokens, text_tokens, self.width
        L, m = M + T, int(d * self.mlp_ratio)
        f = _lin(M, self.token_features, d) + _lin(T, self.context_dim, d)
        f += (2 if self.guidance_embeds else 1) * (_lin(1, 256, d) + _lin(1, d, d))  # timestep (and guidance) MLP
        f += 2 * _lin(1, d, 6 * d) + _lin(1, d, 3 * d)                                # shared modulation
        f += self.double * (_qkvo(L, d) + _ffn(L, d, m, gates=2) + _attn(L, L, d))    # image and text weights
        f += self.single * (_lin(L, d, 3 * d + 2 * m) + _lin(L, d + m, d) + _attn(L, L, d))
        return f + _lin(1, d, 2 * d) + _lin(M, d, self.token_features)                # norm_out, proj_out


@dataclass(frozen=True, kw_only=True)
class QwenImageSpec(DiTSpec):
    """Qwen-Image (``QwenImageTransformer2DModel``): ``layers`` two-stream blocks, each with its
    own image and text modulation layers (``img_mod``, ``txt_mod``) and GELU feed-forwards."""

    family: ClassVar[str] = "qwen-image"
    layers: int
    mlp_ratio: int = 4
    token_features: int = 64    # 16 latent channels x 2x2 patch, in and out
    context_dim: int = 3584     # Qwen2.5-VL-7B's hidden size

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        M, T, d = image_tokens, text_tokens, self.width
        L = M + T
        f = _lin(M, self.token_features, d) + _lin(T, self.context_dim, d) + _lin(1, 256, d) + _lin(1, d, d)
        f += self.layers * (2 * _lin(1, d, 6 * d) + _qkvo(L, d) + _ffn(L, d, self.mlp_ratio * d) + _attn(L, L, d))
        return f + _lin(1, d, 2 * d) + _lin(M, d, self.token_features)   # norm_out, proj_out


@dataclass(frozen=True, kw_only=True)
class ZImageSpec(DiTSpec):
    """Z-Image (``ZImageTransformer2DModel``), a single-stream DiT: ``refiner_layers`` blocks on
    the image tokens (modulated) and as many on the caption tokens (not), then ``layers``
    modulated blocks on both, then the final layer on every token. Image and caption are each
    padded to a multiple of ``pad_multiple`` tokens, and the model computes on the padding."""

    family: ClassVar[str] = "z-image"
    layers: int
    refiner_layers: int = 2
    token_features: int = 64    # 16 latent channels x 2x2 patch, in and out
    context_dim: int = 2560     # Qwen3-4B's hidden size
    pad_multiple: int = 32      # SEQ_MULTI_OF

    def padded(self, tokens: int) -> int:
        return tokens + (-tokens) % self.pad_multiple

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        M, T, d = self.padded(image_tokens), self.padded(text_tokens), self.width
        L, hidden, a = M + T, int(d / 3 * 8), min(d, 256)   # a: the timestep embedding the modulation reads
        block = lambda n: _qkvo(n, d) + _ffn(n, d, hidden, gates=2) + _attn(n, n, d)  # noqa: E731
        f = _lin(1, 256, 1024) + _lin(1, 1024, a)           # timestep MLP
        f += _lin(M, self.token_features, d) + _lin(T, self.context_dim, d)
        f += self.refiner_layers * (_lin(1, a, 4 * d) + block(M) + block(T))   # noise and context refiners
        f += self.layers * (_lin(1, a, 4 * d) + block(L))
        return f + _lin(1, a, d) + _lin(L, d, self.token_features)           # final layer, every token


@dataclass(frozen=True, kw_only=True)
class ChromaSpec(DiTSpec):
    """Chroma (``ChromaTransformer2DModel``): FLUX.1-schnell's blocks without their modulation
    layers or pooled projection. Every block's shift, scale and gate come from one MLP, the
    distilled-guidance "approximator", run once per forward on one input vector per
    modulation (``3 single + 12 double + 2``: 344 at full size)."""

    family: ClassVar[str] = "chroma"
    double: int
    single: int
    mlp_ratio: int = 4
    token_features: int = 64    # 16 latent channels x 2x2 patch, in and out
    context_dim: int = 4096     # T5-XXL
    approximator_channels: int = 64
    approximator_hidden: int = 5120
    approximator_layers: int = 5

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        M, T, d = image_tokens, text_tokens, self.width
        L, m = M + T, self.mlp_ratio * d
        n, c, a = 3 * self.single + 12 * self.double + 2, self.approximator_channels, self.approximator_hidden
        f = _lin(M, self.token_features, d) + _lin(T, self.context_dim, d)
        f += _lin(n, c, a) + self.approximator_layers * 2 * _lin(n, a, a) + _lin(n, a, d)   # approximator
        f += self.double * (_qkvo(L, d) + _ffn(L, d, m) + _attn(L, L, d))
        f += self.single * (_lin(L, d, 3 * d + m) + _lin(L, d + m, d) + _attn(L, L, d))
        return f + _lin(M, d, self.token_features)   # proj_out (norm_out has no layer of its own)


@dataclass(frozen=True, kw_only=True)
class WanSpec(DiTSpec):
    """Wan 2.1 / 2.2 (``WanTransformer3DModel``) on one video: ``image_tokens`` are all the
    clip's tokens (latent frames x rows x columns, patch (1, 2, 2)), ``text_tokens`` the UMT5
    sequence (512: the pipeline pads the prompt to ``max_sequence_length``).

    The patch embedding (a Conv3d, one linear map of ``in_channels x 2 x 2`` features per
    token); the condition embedder: the timestep MLP ``freq_dim -> d -> d`` and its
    projection to ``6 d`` (once per call, or once per token with ``expand_timesteps``, as
    Wan 2.2 TI2V-5B's pipeline runs it), and the text embedder ``text_dim -> d -> d`` on every
    text token; per block self-attention over all image tokens (QKV, output, and the
    products, quadratic in the clip's tokens), cross-attention (query and output on the image
    tokens, key and value on the text tokens, products image x text) and a GELU feed-forward
    ``d -> ffn -> d``; the output projection. Norms, modulation tables and rotary are
    elementwise (not counted).

    Image-to-video (``WanImageToVideoPipeline``): the conditioning latents and mask are
    concatenated on the channels (``in_channels`` 36 for Wan 2.1 I2V and Wan 2.2 I2V A14B: only
    the patch embedding changes); Wan 2.1 I2V also gets ``image_tokens`` CLIP image tokens (257)
    of width ``image_dim``: its image embedder (``image_dim -> image_dim -> d``) runs on them once
    per call, and each block's cross-attention adds their keys and values (``d -> d`` each) and
    the products of every image token's query with them."""

    family: ClassVar[str] = "wan"
    layers: int
    ffn: int
    in_channels: int = 16
    out_channels: int | None = None   # default: in_channels
    text_dim: int = 4096              # UMT5-XXL's width
    freq_dim: int = 256
    expand_timesteps: bool = False    # Wan 2.2 TI2V-5B: a timestep per token
    image_tokens: int = 0             # Wan 2.1 I2V: the CLIP image tokens in cross-attention
    image_dim: int = 1280             # their width (CLIP ViT-H/14)

    def __post_init__(self):
        super().__post_init__()
        for name in ("layers", "ffn", "in_channels", "text_dim", "freq_dim"):
            check_positive_int(name, getattr(self, name))
        if self.out_channels is not None:
            check_positive_int("out_channels", self.out_channels)

    @property
    def token_features(self) -> int:
        """Input features per token: latent channels x the (1, 2, 2) patch."""
        return 4 * self.in_channels

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        M, T, d = image_tokens, text_tokens, self.width
        out = 4 * (self.out_channels or self.in_channels)
        rows = M if self.expand_timesteps else 1          # inputs of the timestep path
        f = _lin(M, self.token_features, d)                # patch embedding
        f += _lin(rows, self.freq_dim, d) + _lin(rows, d, d) + _lin(rows, d, 6 * d)   # time MLP, time_proj
        f += _lin(T, self.text_dim, d) + _lin(T, d, d)     # text embedder
        self_attn = _qkvo(M, d) + _attn(M, M, d)
        cross_attn = _lin(M, d, d) + _lin(T, d, 2 * d) + _lin(M, d, d) + _attn(M, T, d)
        N = self.image_tokens
        if N:                                              # image embedder; per block the image's keys and values
            f += _lin(N, self.image_dim, self.image_dim) + _lin(N, self.image_dim, d)
            cross_attn += _lin(N, d, 2 * d) + _attn(M, N, d)
        f += self.layers * (self_attn + cross_attn + _ffn(M, d, self.ffn))
        return f + _lin(M, d, out)                         # proj_out


@dataclass(frozen=True, kw_only=True)
class QwenImage21Spec(DiTSpec):
    """Qwen-Image 2.1 (``QwenImage21Transformer2DModel``): one single-stream, block-causal
    sequence ``[text, image]``, a token per latent pixel (``patch`` 1: 16 pixels a side), no
    biases, SwiGLU feed-forwards, one shared modulation layer. With ``causal_condition`` the
    text is modulated from ``t = 0`` (one more timestep row), never sees the image, and its keys
    and values are cached: the pipeline's first step runs the whole sequence, every later step
    (:meth:`forward`, ``kv_cache``) the image tokens alone against the stored prefix, still
    projecting the text (``txt_in``) each time. :meth:`prefix` is what the first step costs
    beyond a later one (the text through every block, the output layer on the text), once per
    image and branch; ``kv_cache=False``: every step runs the whole sequence."""

    family: ClassVar[str] = "qwen-image-2.1"
    patch: ClassVar[int] = 1
    layers: int
    mlp_ratio: int = 3
    token_features: int = 64    # 64 latent channels, one latent pixel per token
    out_features: int = 64
    context_dim: int = 4096     # Qwen3-VL-8B's hidden size
    kv_cache: bool = True

    def _common(self, M: int, T: int) -> Flops:
        d = self.width
        f = _lin(M, self.token_features, d) + _lin(T, self.context_dim, d) + _lin(T, d, d)   # img_in, txt_in
        f += _lin(2, 256, d) + _lin(2, d, d) + _lin(2, d, 4 * d)       # timestep MLP and modulation: t and t = 0
        return f + _lin(2, d, d)                                        # norm_out's scale, both rows

    def _layer(self, q: int, kv: int) -> Flops:
        d = self.width
        return _qkvo(q, d) + _ffn(q, d, self.mlp_ratio * d, gates=2) + _attn(q, kv, d)

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        M, T = image_tokens, text_tokens
        f = self._common(M, T) + _lin(M, self.width, self.out_features)
        if self.kv_cache:
            return f + self.layers * self._layer(M, T + M)
        return f + self.layers * (self._layer(M, T + M) + self._layer(T, T)) + _lin(T, self.width, self.out_features)

    def prefix(self, text_tokens: int) -> Flops:
        """The first (prefill) step's cost beyond a cached one: zero without ``kv_cache``."""
        T = text_tokens
        return self.layers * self._layer(T, T) + _lin(T, self.width, self.out_features) if self.kv_cache else Flops()


@dataclass(frozen=True, kw_only=True)
class HunyuanVideo15Spec(DiTSpec):
    """HunyuanVideo 1.5 (``HunyuanVideo15Transformer3DModel``) on one clip: ``image_tokens`` are
    all its tokens (latent frames x rows x columns, a token per latent pixel of the 16x VAE:
    ``patch`` 1), ``text_tokens`` the whole conditioning sequence the blocks see: the Qwen2.5-VL
    prompt (padded to 1000 and computed on, masked), the ByT5 glyph tokens (256) and the image
    tokens of the image-conditioned mode (729; in text-to-video zeros, masked, still computed).

    The patch embedding (a 1x1x1 convolution over the latent, its condition latent and mask:
    ``in_channels`` 65), the timestep MLP; the token refiner on the prompt (its own timestep and
    pooled-text MLPs, ``refiner_layers`` self-attention blocks with a SiLU feed-forward); the ByT5
    projection (``byt5_dim -> 2048 -> 2048 -> d``); the image projection (``image_dim ->
    image_dim -> d``); ``layers`` two-stream blocks (modulation of both streams, joint attention
    over image and conditioning, GELU feed-forwards); the output norm's modulation and projection."""

    family: ClassVar[str] = "hunyuanvideo1.5"
    patch: ClassVar[int] = 1
    layers: int
    refiner_layers: int = 2
    mlp_ratio: float = 4.0
    in_channels: int = 65
    out_channels: int = 32
    text_dim: int = 3584        # Qwen2.5-VL-7B's hidden size
    byt5_dim: int = 1472        # ByT5-small's
    image_dim: int = 1152       # SigLIP's
    byt5_tokens: int = 256
    image_cond_tokens: int = 729

    def forward(self, image_tokens: int, text_tokens: int) -> Flops:
        M, d = image_tokens, self.width
        T2, T3 = self.byt5_tokens, self.image_cond_tokens
        T1 = text_tokens - T2 - T3
        if T1 < 1:
            raise ValueError(f"HunyuanVideo 1.5's conditioning holds {T2} ByT5 and {T3} image tokens besides the "
                             f"prompt's: text_tokens must exceed {T2 + T3}, got {text_tokens}")
        T, m = text_tokens, int(d * self.mlp_ratio)
        f = _lin(M, self.in_channels, d) + _lin(1, 256, d) + _lin(1, d, d)                   # patch, timestep
        f += _lin(1, 256, d) + _lin(1, d, d) + _lin(1, self.text_dim, d) + _lin(1, d, d)     # refiner's t and text
        f += _lin(T1, self.text_dim, d) + self.refiner_layers * (
            _qkvo(T1, d) + _attn(T1, T1, d) + _ffn(T1, d, 4 * d) + _lin(1, d, 2 * d))
        f += _lin(T2, self.byt5_dim, 2048) + _lin(T2, 2048, 2048) + _lin(T2, 2048, d)       # ByT5 projection
        f += _lin(T3, self.image_dim, self.image_dim) + _lin(T3, self.image_dim, d)         # image projection
        f += self.layers * (2 * _lin(1, d, 6 * d) + _qkvo(M, d) + _qkvo(T, d) + _attn(M + T, M + T, d)
                            + _ffn(M, d, m) + _ffn(T, d, m))
        return f + _lin(1, d, 2 * d) + _lin(M, d, self.out_channels)                        # norm_out, proj_out


@dataclass(frozen=True)
class TransformerPrefix:
    """A transformer's once-per-image work on the text, as an entry of ``ModelSpec.encoders``
    (Qwen-Image 2.1's cached prefix: :meth:`QwenImage21Spec.prefix`) on the transformer's own
    text sequence."""

    transformer: DiTSpec

    def sequence(self, prompt_tokens: int) -> int:
        return prompt_tokens

    def forward(self, tokens: int) -> Flops:
        return self.transformer.prefix(tokens)


@dataclass(frozen=True, kw_only=True)
class LTX2Spec(DiTSpec):
    """LTX-2 (``LTX2VideoTransformer3DModel``) on one clip: two streams in every block, video
    (``heads x head_dim``) and audio (``audio_heads x audio_head_dim``), each with self-attention,
    cross-attention to its text embeddings and a GELU feed-forward (``4 x`` width), and between
    them the audio-to-video and video-to-audio cross-attentions (at the audio's width).

    ``image_tokens`` counts RALU's tokens, ``2 x 2`` latent pixels each (``pixels_per_token``: the
    VAE's 32 x 2), so the model sees ``4 image_tokens`` video tokens (its patch is one latent
    pixel); ``audio_tokens`` is the clip's audio length (:meth:`audio_frames`, which the clip's
    duration sets), ``text_tokens`` the connectors' sequence (the prompt padded to
    ``max_sequence_length``, 1024). Once per call: the patch projections, the timestep MLPs
    (``256 -> d -> d``) and their modulation projections (video and audio, the two cross-attention
    scale/shift sets and the two gates), the caption projections (``caption -> d -> d`` on every
    text token), the output projections. ``isolated``: the call with the audio-video
    cross-attention off (LTX-2's modality guidance), which skips those two attentions in every
    block; ``perturbed``: blocks whose self-attentions are perturbed (spatio-temporal guidance;
    with ``perturbed_attn`` they compute values only, no queries, keys or products). Norms,
    modulation tables and rotary are elementwise (not counted)."""

    family: ClassVar[str] = "ltx2"
    layers: int
    audio_heads: int
    audio_head_dim: int
    in_channels: int = 128
    audio_in_channels: int = 128
    caption_channels: int = 3840
    audio_tokens: int = 126              # 121 frames at 24 fps: round(121 / 24 x 25)
    audio_latents_per_second: float = 25.0   # 16000 Hz / hop 160 / the audio VAE's 4
    tokens_per_token: int = 4            # model tokens per RALU token (a 2 x 2 patch of latent pixels)
    perturbed_attn: bool = False         # LTX-2.3: spatio-temporal guidance skips the perturbed attentions
    gated_attn: bool = False
    audio_gated_attn: bool = False
    cross_attn_mod: bool = False
    audio_cross_attn_mod: bool = False
    prompt_embeddings: bool = True       # LTX-2.0's caption projections (LTX-2.3 projects in its connectors)
    prompt_adaln: bool = True
    stg: bool = True                     # LTX2Pipeline's defaults: stg_scale 1 (one block, [28]) and modality_scale 3
    stg_blocks: int = 1
    modality: bool = True

    def __post_init__(self):
        super().__post_init__()
        for name in ("layers", "audio_heads", "audio_head_dim", "in_channels", "audio_in_channels",
                     "caption_channels", "tokens_per_token"):
            check_positive_int(name, getattr(self, name))

    @classmethod
    def from_config(cls, c, *, pixels_per_token: int = 64, **over) -> "LTX2Spec":
        """The spec of a transformer config (diffusers' field names)."""
        g = c.get if hasattr(c, "get") else lambda k, d=None: getattr(c, k, d)
        return cls(layers=g("num_layers"), heads=g("num_attention_heads"), head_dim=g("attention_head_dim"),
                   audio_heads=g("audio_num_attention_heads"), audio_head_dim=g("audio_attention_head_dim"),
                   in_channels=g("in_channels"), audio_in_channels=g("audio_in_channels"),
                   caption_channels=g("caption_channels"), pixels_per_token=pixels_per_token,
                   audio_latents_per_second=g("audio_sampling_rate", 16000) / g("audio_hop_length", 160)
                   / g("audio_scale_factor", 4),
                   perturbed_attn=bool(g("perturbed_attn", False)), gated_attn=bool(g("gated_attn", False)),
                   audio_gated_attn=bool(g("audio_gated_attn", False)), cross_attn_mod=bool(g("cross_attn_mod", False)),
                   audio_cross_attn_mod=bool(g("audio_cross_attn_mod", False)),
                   prompt_embeddings=bool(g("use_prompt_embeddings", True)),
                   prompt_adaln=bool(g("use_prompt_adaln_single", True)), **over)

    @property
    def audio_width(self) -> int:
        return self.audio_heads * self.audio_head_dim

    def audio_frames(self, frames: int, fps: float = 24.0) -> int:
        """The audio tokens of a clip of ``frames`` video frames at ``fps`` (LTX2Pipeline's rule)."""
        return round(frames / fps * self.audio_latents_per_second)

    def for_clip(self, frames: int, fps: float = 24.0) -> "LTX2Spec":
        return replace(self, audio_tokens=self.audio_frames(frames, fps))

    def step(self, image_tokens: int, text_tokens: int, batches: int = 2) -> Flops:
        """LTX2Pipeline's step at its defaults: the classifier-free pair (``batches`` forwards), the
        spatio-temporal guidance call (``stg_blocks`` perturbed) and the modality call (isolated)."""
        f = batches * self.forward(image_tokens, text_tokens)
        if self.stg:
            f += self.forward(image_tokens, text_tokens, perturbed=self.stg_blocks)
        if self.modality:
            f += self.forward(image_tokens, text_tokens, isolated=True)
        return f

    def forward(self, image_tokens: int, text_tokens: int, *, audio_tokens: int | None = None, isolated: bool = False,
                perturbed: int = 0) -> Flops:
        M, T, d, a = self.tokens_per_token * image_tokens, text_tokens, self.width, self.audio_width
        A = self.audio_tokens if audio_tokens is None else audio_tokens
        vh, ah = self.heads, self.audio_heads

        def mlp(width, mods):                          # a timestep MLP 256 -> w -> w and its modulation projection
            return _lin(1, 256, width) + _lin(1, width, width) + _lin(1, width, mods * width)

        f = _lin(M, self.in_channels, d) + _lin(A, self.audio_in_channels, a)
        f += mlp(d, 9 if self.cross_attn_mod else 6) + mlp(a, 9 if self.audio_cross_attn_mod else 6)
        if (self.cross_attn_mod or self.audio_cross_attn_mod) and self.prompt_adaln:
            f += mlp(d, 2) + mlp(a, 2)
        f += mlp(d, 4) + mlp(a, 4) + mlp(d, 1) + mlp(a, 1)  # the audio-video cross-attention's scale/shift and gates
        if self.prompt_embeddings:
            f += _lin(T, self.caption_channels, d) + _lin(T, d, d) + _lin(T, self.caption_channels, a) + _lin(T, a, a)
        gate = lambda n, width, heads, on: _lin(n, width, heads) if on else Flops()  # noqa: E731
        self_v = _qkvo(M, d) + _attn(M, M, d) + gate(M, d, vh, self.gated_attn)
        self_a = _qkvo(A, a) + _attn(A, A, a) + gate(A, a, ah, self.audio_gated_attn)
        text_v = _lin(M, d, d) + _lin(T, d, 2 * d) + _lin(M, d, d) + _attn(M, T, d) + gate(M, d, vh, self.gated_attn)
        text_a = (_lin(A, a, a) + _lin(T, a, 2 * a) + _lin(A, a, a) + _attn(A, T, a)
                  + gate(A, a, ah, self.audio_gated_attn))
        a2v = (_lin(M, d, a) + _lin(A, a, 2 * a) + _lin(M, a, d) + _attn(M, A, a)
               + gate(M, d, ah, self.gated_attn))      # queries video, keys and values audio, at the audio's width
        v2a = (_lin(A, a, a) + _lin(M, d, 2 * a) + _lin(A, a, a) + _attn(A, M, a)
               + gate(A, a, ah, self.audio_gated_attn))
        block = self_v + self_a + text_v + text_a + _ffn(M, d, 4 * d) + _ffn(A, a, 4 * a)
        f += self.layers * (block if isolated else block + a2v + v2a)
        if perturbed and self.perturbed_attn:          # values and outputs only in the perturbed self-attentions
            f += -1.0 * perturbed * (_lin(M, d, 2 * d) + _attn(M, M, d) + _lin(A, a, 2 * a) + _attn(A, A, a))
        return f + _lin(M, d, self.in_channels) + _lin(A, a, self.audio_in_channels)


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

    def sequence(self, prompt_tokens: int) -> int:
        """Its sequence for a prompt sequence of ``prompt_tokens``: T5 is padded to
        ``max_sequence_length``, all of which the transformer sees; CLIP always runs ``tokens`` (77)."""
        return prompt_tokens if self.kind == "t5" else self.tokens

    def forward(self, tokens: int | None = None) -> Flops:
        T = self.tokens if tokens is None else tokens
        d, inner = self.width, self.inner or self.width
        ffn_mats = 3 if self.kind == "t5" else 2
        layer = _lin(T, d, 3 * inner) + _lin(T, inner, d) + Flops(linear=2.0 * T * d * self.ffn * ffn_mats)
        layer += _attn(T, T, inner)
        f = self.layers * layer
        return f + _lin(1, d, d) if self.projection else f


@dataclass(frozen=True, kw_only=True)
class LLMEncoderSpec:
    """A decoder-only language model used as a text encoder, run once per prompt: grouped-query
    attention (``heads`` query and ``kv_heads`` key/value heads of ``head_dim``) and a gated
    MLP of three matrices per layer. ``logits``: the vocabulary of the language-model head
    where the pipeline's class has one (``...ForCausalLM``, ``...ForConditionalGeneration``
    compute logits at every position even though the pipeline keeps hidden states); 0 for a
    bare ``...Model``. Causal attention is counted over the whole square, as the FLOP counter does.

    Its sequence for a prompt sequence of ``n`` tokens (what the transformer sees) is
    ``max(padded_to, n + prefix_tokens)``: ``prefix_tokens`` of template that the pipeline
    drops before the transformer (Qwen-Image's system prompt), ``padded_to`` the length the
    tokenizer pads to where the pipeline then drops the padding (Z-Image: 512).
    """

    layers: int
    width: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    logits: int = 0
    prefix_tokens: int = 0
    padded_to: int = 0

    def sequence(self, prompt_tokens: int) -> int:
        return max(self.padded_to, prompt_tokens + self.prefix_tokens)

    def forward(self, tokens: int) -> Flops:
        T, d = tokens, self.width
        inner, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        layer = _qkvo(T, d, inner, kv) + _ffn(T, d, self.ffn, gates=2) + _attn(T, T, inner)
        return self.layers * layer + _lin(T, d, self.logits)


@dataclass(frozen=True, kw_only=True)
class ViTSpec(EncoderSpec):
    """A CLIP vision tower (``CLIPVisionModel``, Wan 2.1 I2V's image encoder): the patch
    embedding (a ``patch x patch`` convolution of ``3`` channels) and the CLIP encoder's layers on
    the patches and the class token, all of them (the pipeline keeps the second-to-last
    layer's states, but the model runs every layer), once per image."""

    kind: str = "clip"
    patch: int = 14
    image: int = 224

    @property
    def grid(self) -> int:
        return self.image // self.patch

    @property
    def image_tokens(self) -> int:
        """Tokens it hands on: the patches and the class token (257 for ViT-H/14 at 224 pixels)."""
        return self.grid ** 2 + 1

    def forward(self, tokens: int | None = None) -> Flops:
        g = self.grid
        return _conv(3, self.width, self.patch ** 2, g, g) + super().forward(self.image_tokens)


@dataclass(frozen=True, kw_only=True)
class QwenVisionSpec:
    """Qwen2.5-VL's vision encoder (``Qwen2_5_VisionTransformerPretrainedModel``), as the
    Qwen-Image-Edit pipelines' text encoder runs it on each image it sees.

    The processor resizes an image to multiples of ``patch x merge`` pixels within
    ``[min_pixels, max_pixels]`` (Qwen2.5-VL's ``smart_resize``; the limits of its published
    processor configuration) and cuts ``patch x patch`` patches of two copies of the image
    (``temporal_patch``); the patch embedding is one linear map of ``3 x 2 x 14 x 14``
    features per patch. ``layers`` blocks of attention (QKV and output projections, with
    biases) and a SwiGLU feed-forward run on the patches; attention is over the whole image in
    ``full_layers`` and within windows of ``window x window`` pixels (4 x 4 merged tokens) in the
    others, the windows at the right and bottom edges cut by the image. The merger maps each
    ``merge x merge`` group of patches (``4 width`` features) through a two-layer MLP to the
    language model's width: one image token each, which the prompt then carries."""

    layers: int = 32
    width: int = 1280
    ffn: int = 3420
    patch: int = 14
    temporal_patch: int = 2
    merge: int = 2
    window: int = 112
    full_layers: tuple = (7, 15, 23, 31)
    out_width: int = 3584
    min_pixels: int = 56 * 56
    max_pixels: int = 12845056

    def resized(self, height: int, width: int) -> tuple:
        """The size the processor gives an image: each side a multiple of ``patch x merge``
        pixels nearest to its own, scaled (down or up) to stay within the pixel limits."""
        import math

        f = self.patch * self.merge
        h, w = round(height / f) * f, round(width / f) * f
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return h, w

    def image_tokens(self, height: int, width: int) -> int:
        """Tokens an image becomes in the prompt (one per ``merge x merge`` patches)."""
        h, w = self.resized(height, width)
        return (h // self.patch) * (w // self.patch) // self.merge ** 2

    def forward(self, height: int, width: int) -> Flops:
        h, w = self.resized(height, width)
        gh, gw = h // self.patch, w // self.patch
        N, d, m = gh * gw, self.width, self.merge
        f = _lin(N, 3 * self.temporal_patch * self.patch ** 2, d)                  # patch embedding
        unit = self.window // self.merge // self.patch                             # merged tokens per window side
        sides = lambda n: [min(unit, n - k) for k in range(0, n, unit)]  # noqa: E731  (merged tokens per window)
        window_attn = Flops()
        for a in sides(gh // m):
            for b in sides(gw // m):
                window_attn += _attn(m * m * a * b, m * m * a * b, d)
        full = len([k for k in self.full_layers if k < self.layers])
        f += self.layers * (_lin(N, d, 3 * d) + _lin(N, d, d) + _ffn(N, d, self.ffn, gates=2))
        f += full * _attn(N, N, d) + (self.layers - full) * window_attn
        return f + _lin(N // m ** 2, m * m * d, m * m * d) + _lin(N // m ** 2, m * m * d, self.out_width)   # merger


def _conv(cin, cout, taps, h, w) -> Flops:
    return Flops(linear=2.0 * cin * cout * taps * h * w)


@dataclass(frozen=True, kw_only=True)
class VAEDecoderSpec:
    """diffusers' ``AutoencoderKL`` decoder (and, for the pipelines that encode an image, its
    encoder, :meth:`encode`): ``channels`` is ``block_out_channels``."""

    latent_channels: int = 16
    channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    out_channels: int = 3
    post_quant_conv: bool = False
    quant_conv: bool = False

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channels) - 1)

    #: Video frames per latent frame: an image VAE has no time axis.
    temporal: ClassVar[int] = 1

    def decode(self, height: int, width: int, latent_frames: int = 1) -> Flops:
        """FLOPs of decoding one latent to a ``height x width`` image."""
        if latent_frames != 1:
            raise ValueError(f"an image VAE (AutoencoderKL) decodes one frame: latent_frames must be 1, "
                             f"got {latent_frames!r}")
        h, w = height // self.downsampling, width // self.downsampling
        conv = lambda cin, cout, k, hh, ww: _conv(cin, cout, k * k, hh, ww)  # noqa: E731

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

    def encode(self, height: int, width: int, frames: int = 1) -> Flops:
        """FLOPs of encoding one ``height x width`` image (the encoder's mean and variance at the
        latent's size; the pipelines keep the mean). Per level: ``layers_per_block`` ResNet
        blocks, then a stride-2 convolution except at the last; the middle block (two ResNet
        blocks around a one-head attention over the latent's pixels); the output convolution to
        ``2 latent_channels``; ``quant_conv`` where the VAE has one."""
        if frames != 1:
            raise ValueError(f"an image VAE (AutoencoderKL) encodes one frame: frames must be 1, got {frames!r}")
        h, w = height, width
        conv = lambda cin, cout, k, hh, ww: _conv(cin, cout, k * k, hh, ww)  # noqa: E731

        def resnet(cin, cout, hh, ww):
            f = conv(cin, cout, 3, hh, ww) + conv(cout, cout, 3, hh, ww)
            return f + conv(cin, cout, 1, hh, ww) if cin != cout else f

        f, prev = conv(self.out_channels, self.channels[0], 3, h, w), self.channels[0]
        for i, ch in enumerate(self.channels):
            for j in range(self.layers_per_block):
                f += resnet(prev if j == 0 else ch, ch, h, w)
            prev = ch
            if i < len(self.channels) - 1:
                h, w = h // 2, w // 2
                f += conv(ch, ch, 3, h, w)
        top, z = self.channels[-1], 2 * self.latent_channels
        f += 2 * resnet(top, top, h, w) + _lin(h * w, top, 4 * top) + _attn(h * w, h * w, top)
        f += conv(top, z, 3, h, w)
        return f + conv(z, z, 1, h, w) if self.quant_conv else f


@dataclass(frozen=True, kw_only=True)
class CausalVAEDecoderSpec:
    """diffusers' ``AutoencoderKLWan`` decoder (causal 3-D convolutions), which is also
    ``AutoencoderKLQwenImage``'s: Wan 2.1's VAE (the defaults) and Wan 2.2's (``residual``,
    ``patch_size=2``); Qwen-Image decodes one latent frame with Wan 2.1's.

    ``base_dim`` is the decoder's base width (``decoder_base_dim`` where the config gives
    one); ``temporal_upsample`` is in decoder order (the config's ``temperal_downsample``
    reversed). The decoder runs latent frame by latent frame with a cache of the previous
    frames' features: every causal 3x3x3 convolution computes all 27 taps on each of its
    output frames (the cache or zero padding supplies the two frames before), so the FLOP
    counter counts them all. On the first latent frame the temporal upsampling convolutions
    do not run and it yields one video frame; each later latent frame doubles its frames at
    each temporal upsampling (two in Wan's VAEs), giving ``temporal`` (4) video frames. The
    only attention is the middle block's, over one frame's latent pixels. Wan 2.1's
    upsampling convolutions halve the channels (the next block starts at half width); Wan
    2.2's keep them, its up blocks add a parameter-free shortcut, and its decoder ends in
    ``3 x 2 x 2`` channels that are unpatchified to the pixels (16x spatial compression).
    ``image``: Qwen-Image 2.1's ``AutoencoderKLQwenImage21``, the image specialisation of Wan 2.2's
    residual decoder, whose causal 3x3x3 convolutions are 3x3 ones on its one frame."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_upsample: tuple = (True, True, False)
    out_channels: int = 3
    residual: bool = False
    patch_size: int = 1
    image: bool = False
    encoder_base_dim: int | None = None   # the encoder's base width (the config's base_dim); None: base_dim

    @property
    def downsampling(self) -> int:
        """Image pixels per latent pixel (8 for Wan 2.1's VAE, 16 for Wan 2.2's)."""
        return 2 ** (len(self.dim_mult) - 1) * self.patch_size

    @property
    def temporal(self) -> int:
        """Video frames per latent frame after the first (4 for Wan's VAEs)."""
        return 2 ** sum(bool(t) for t in self.temporal_upsample[:len(self.dim_mult) - 1])

    def frames(self, latent_frames: int) -> int:
        """Video frames decoded from ``latent_frames`` latent frames: ``1 + temporal (n - 1)``."""
        return 1 + self.temporal * (check_positive_int("latent frames", latent_frames) - 1)

    def decode(self, height: int, width: int, latent_frames: int = 1) -> Flops:
        """FLOPs of decoding ``latent_frames`` latent frames to a ``height x width`` video
        (one image for one latent frame)."""
        n = check_positive_int("latent frames", latent_frames)
        if self.image and n != 1:
            raise ValueError(f"an image VAE (AutoencoderKLQwenImage21) decodes one frame: latent_frames must be 1, "
                             f"got {latent_frames!r}")
        h, w = height // self.downsampling, width // self.downsampling
        f = n * _conv(self.z_dim, self.z_dim, 1, h, w)   # post_quant_conv, on the whole latent
        f += self._chunk(h, w, first=True)
        return f + (n - 1) * self._chunk(h, w, first=False) if n > 1 else f

    def _chunk(self, h: int, w: int, first: bool) -> Flops:
        """One latent frame through the decoder; ``first``: the first one (no temporal upsampling)."""
        t = 1   # frames at the current stage of the decoder
        k = 9 if self.image else 27          # taps of a "causal 3-D" convolution (the image decoder's: 3x3)

        def resnet(cin, cout):
            f = t * (_conv(cin, cout, k, h, w) + _conv(cout, cout, k, h, w))
            return f + t * _conv(cin, cout, 1, h, w) if cin != cout else f

        dims = [self.base_dim * k for k in (self.dim_mult[-1], *reversed(self.dim_mult))]
        top = dims[0]
        f = _conv(self.z_dim, top, k, h, w)                                      # conv_in
        f += 2 * resnet(top, top) + _lin(h * w, top, 4 * top) + _attn(h * w, h * w, top)   # middle block
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i and not self.residual:
                cin //= 2                     # Wan 2.1: the previous upsampling halved the channels
            for j in range(self.num_res_blocks + 1):
                f += resnet(cin if j == 0 else cout, cout)
            if i < len(dims) - 2:             # upsample: in time (not on the first frame), then 2x in space
                if self.temporal_upsample[i] and not first:
                    f += t * _conv(cout, 2 * cout, 3, h, w)   # time_conv, a (3, 1, 1) causal convolution
                    t *= 2
                h, w = 2 * h, 2 * w
                f += t * _conv(cout, cout if self.residual else cout // 2, 9, h, w)
        return f + t * _conv(dims[-1], self.out_channels, k, h, w)              # conv_out

    def encode(self, height: int, width: int, frames: int = 1) -> Flops:
        """FLOPs of encoding a ``height x width`` video of ``frames`` frames (``1 + temporal k``;
        one image: 1), as ``AutoencoderKLWan`` encodes (also ``AutoencoderKLQwenImage``): Wan
        2.2's VAE first folds ``patch_size x patch_size`` pixels into channels; the first frame
        alone, then chunks of ``temporal`` frames, each through the encoder with a cache of the
        frames before (so every causal ``3 x 3 x 3`` convolution computes all its taps on each
        output frame). Per level, ``num_res_blocks`` ResNet blocks, then a stride-2 spatial
        convolution per frame except at the last level, and at a temporal level a stride-2
        causal time convolution (not on the first frame: a later chunk's 4 frames become 2,
        then 1); the middle block, the output convolution to ``2 z_dim``; ``quant_conv`` on the
        latent. The mean and variance at the latent's size: the pipelines keep the mean."""
        n = self.latent_frames_of(frames)
        p = self.patch_size
        h, w = height // p, width // p
        f = self._encode_chunk(h, w, first=True)
        if n > 1:
            f += (n - 1) * self._encode_chunk(h, w, first=False)
        s = self.downsampling
        return f + n * _conv(2 * self.z_dim, 2 * self.z_dim, 1, height // s, width // s)   # quant_conv

    def latent_frames_of(self, frames: int) -> int:
        frames = check_positive_int("frames", frames)
        if (frames - 1) % self.temporal:
            raise ValueError(f"a video VAE with temporal compression {self.temporal} encodes {self.temporal}k + 1 "
                             f"frames, got {frames}")
        return (frames - 1) // self.temporal + 1

    def _encode_chunk(self, h: int, w: int, first: bool) -> Flops:
        t = 1 if first else self.temporal
        base = self.encoder_base_dim or self.base_dim
        dims = [base * k for k in (1, *self.dim_mult)]

        def resnet(cin, cout):
            f = t * (_conv(cin, cout, 27, h, w) + _conv(cout, cout, 27, h, w))
            return f + t * _conv(cin, cout, 1, h, w) if cin != cout else f

        f = t * _conv(3 * self.patch_size ** 2, dims[0], 27, h, w)                # conv_in
        last = len(self.dim_mult) - 1
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for j in range(self.num_res_blocks):
                f += resnet(cin if j == 0 else cout, cout)
            if i < last:
                h, w = h // 2, w // 2
                f += t * _conv(cout, cout, 9, h, w)                                 # stride-2 spatial
                if self.temporal_upsample[last - 1 - i] and not first:              # (decoder order reversed)
                    t //= 2
                    f += t * _conv(cout, cout, 3, h, w)                             # stride-2 causal time conv
        top = dims[-1]
        f += 2 * resnet(top, top) + t * (_lin(h * w, top, 4 * top) + _attn(h * w, h * w, top))   # middle block
        return f + t * _conv(top, 2 * self.z_dim, 27, h, w)                        # conv_out


@dataclass(frozen=True, kw_only=True)
class HunyuanVideo15VAEDecoderSpec:
    """diffusers' ``AutoencoderKLHunyuanVideo15`` decoder, which decodes the whole clip at once:
    causal 3x3x3 convolutions over all its frames (27 taps each, replicate padding), a middle
    block with one attention over every latent pixel of every frame, up blocks of
    ``layers_per_block + 1`` residual blocks whose upsampler is one convolution to 4 (spatial) or
    8 (spatial and temporal) times its output channels, rearranged (the first frame keeps one
    frame), 16x spatial and 4x temporal compression. ``channels`` in decoder order."""

    latent_channels: int = 32
    channels: tuple = (1024, 1024, 512, 256, 128)
    layers_per_block: int = 2
    spatial_upsamples: int = 4
    temporal_upsamples: int = 2
    out_channels: int = 3

    @property
    def downsampling(self) -> int:
        return 2 ** self.spatial_upsamples

    @property
    def temporal(self) -> int:
        return 2 ** self.temporal_upsamples

    def frames(self, latent_frames: int) -> int:
        return 1 + self.temporal * (check_positive_int("latent frames", latent_frames) - 1)

    def decode(self, height: int, width: int, latent_frames: int = 1) -> Flops:
        t = check_positive_int("latent frames", latent_frames)
        h, w = height // self.downsampling, width // self.downsampling
        conv = lambda cin, cout, taps=27: _conv(cin, cout, taps, t * h, w)  # noqa: E731   (all current frames)

        def resnet(cin, cout):
            return conv(cin, cout) + conv(cout, cout) + (conv(cin, cout, 1) if cin != cout else Flops())

        ch = self.channels
        f = conv(self.latent_channels, ch[0]) + 2 * resnet(ch[0], ch[0])                       # conv_in, middle
        f += _lin(t * h * w, ch[0], 4 * ch[0]) + _attn(t * h * w, t * h * w, ch[0])           # middle attention
        cin = ch[0]
        for i, cout in enumerate(ch):
            for j in range(self.layers_per_block + 1):
                f += resnet(cin if j == 0 else cout, cout)
            cin = cout
            if i < self.spatial_upsamples:
                temporal = i < self.temporal_upsamples
                f += conv(cout, ch[i + 1] * (8 if temporal else 4))
                h, w, t = 2 * h, 2 * w, (1 + 2 * (t - 1)) if temporal else t
                cin = ch[i + 1]
        return f + conv(ch[-1], self.out_channels)                                              # conv_out


@dataclass(frozen=True, kw_only=True)
class LTX2VAEDecoderSpec:
    """diffusers' ``AutoencoderKLLTX2Video`` decoder (its ``decoder_*`` config fields): 3-D
    convolutions (3 x 3 x 3, padded in time by repeating the end frames, so every conv computes
    all 27 taps on each of its output frames), a middle block of ``layers[0]`` ResNet blocks, then
    per up block (``channels`` reversed) an upsampler, a convolution to ``stride`` x the channels
    followed by a pixel shuffle (a spatio-temporal one doubles frames, rows and columns and drops
    the first new frame: ``2 T - 1``), and ``layers[i + 1]`` ResNet blocks; the output convolution
    gives ``3 x patch_size^2`` channels that are unpatchified (``downsampling`` = patch x 2 per
    spatial upsampling: 32 for LTX-2). A block whose channels change starts with a ResNet block
    (1 x 1 x 1 shortcut). Norms and the residual paths are elementwise (not counted)."""

    latent_channels: int = 128
    channels: tuple = (256, 512, 1024)
    layers: tuple = (5, 5, 5, 5)
    scaling: tuple = (True, True, True)
    upsample: tuple = ("spatiotemporal", "spatiotemporal", "spatiotemporal")
    factors: tuple = (2, 2, 2)
    patch_size: int = 4
    out_channels: int = 3

    _STRIDES: ClassVar[dict] = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}

    def _strides(self) -> list:
        """(time, space) stride of each up block in decoder order."""
        return [self._STRIDES[u][:2] if on else (1, 1)
                for u, on in zip(tuple(reversed(self.upsample)), tuple(reversed(self.scaling)))]

    @property
    def downsampling(self) -> int:
        return self.patch_size * math.prod(s for _, s in self._strides())

    @property
    def temporal(self) -> int:
        return math.prod(t for t, _ in self._strides())

    def frames(self, latent_frames: int) -> int:
        return 1 + self.temporal * (check_positive_int("latent frames", latent_frames) - 1)

    def decode(self, height: int, width: int, latent_frames: int = 1) -> Flops:
        T = check_positive_int("latent frames", latent_frames)
        h, w = height // self.downsampling, width // self.downsampling

        def conv(cin, cout, taps):
            return T * _conv(cin, cout, taps, h, w)

        def resnet(cin, cout):
            f = conv(cin, cout, 27) + conv(cout, cout, 27)
            return f + conv(cin, cout, 1) if cin != cout else f

        chans = tuple(reversed(self.channels))
        factors, layers = tuple(reversed(self.factors)), tuple(reversed(self.layers))
        f = conv(self.latent_channels, chans[0], 27) + layers[0] * resnet(chans[0], chans[0])
        out = c = chans[0]
        for i, (st, ss) in enumerate(self._strides()):
            inp, out = out // factors[i], chans[i] // factors[i]
            if inp != out:
                f += resnet(c, out)
                c = out
            if (st, ss) != (1, 1):
                f += conv(c, out * st * ss * ss, 27)          # then shuffled to ``out`` channels
                T, h, w, c = st * T - (st - 1), ss * h, ss * w, out
            f += layers[i + 1] * resnet(out, out)
        return f + conv(c, self.out_channels * self.patch_size ** 2, 27)


@dataclass(frozen=True, kw_only=True)
class AudioDecoderSpec:
    """LTX-2's audio decode after the last step: the audio VAE decoder (``AutoencoderKLLTX2Audio``:
    causal 3 x 3 convolutions over (time, mel) from the latent's ``latent_channels`` x
    ``mel_bins / 4``, a middle of two ResNet blocks at ``base x ch_mult[-1]`` channels, per level
    ``res_blocks + 1`` ResNet blocks (a 1 x 1 shortcut where the channels change) and, but for the
    last, a nearest 2x upsampling and its convolution, which drops its first new time row:
    ``2 T - 1``) to the mel spectrogram, cut or padded to ``4 T - 3`` frames and ``mel_bins``, then
    the vocoder (``LTX2Vocoder``: a width-7 convolution in, per level a leaky ReLU, a transposed
    convolution upsampling time by ``factors[i]`` and halving the channels, and one ResNet block
    per kernel size, each ``2 x len(dilations)`` convolutions, averaged; a width-7 convolution out
    to the waveform). ``decode(audio_tokens)``
    is one clip's (its latent's time length is the transformer's audio tokens)."""

    latent_channels: int = 8
    mel_bins: int = 64
    base: int = 128
    ch_mult: tuple = (1, 2, 4)
    res_blocks: int = 2
    out_channels: int = 2
    vocoder_hidden: int = 1024
    vocoder_out: int = 2
    kernels: tuple = (16, 15, 8, 4, 4)
    factors: tuple = (6, 5, 2, 2, 2)
    resnet_kernels: tuple = (3, 7, 11)
    dilations: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

    def decode(self, audio_tokens: int) -> Flops:
        T, M = check_positive_int("audio tokens", audio_tokens), self.mel_bins // 4

        def conv(cin, cout, taps):
            return _conv(cin, cout, taps, T, M)

        def resnet(cin, cout):
            f = conv(cin, cout, 9) + conv(cout, cout, 9)
            return f + conv(cin, cout, 1) if cin != cout else f

        c = self.base * self.ch_mult[-1]
        f = conv(self.latent_channels, c, 9) + 2 * resnet(c, c)
        for level in reversed(range(len(self.ch_mult))):
            out = self.base * self.ch_mult[level]
            for _ in range(self.res_blocks + 1):
                f += resnet(c, out)
                c = out
            if level:
                f += _conv(c, c, 9, 2 * T, 2 * M)          # on the upsampled grid, then the first row dropped
                T, M = 2 * T - 1, 2 * M
        f += conv(c, self.out_channels, 9)
        # the vocoder, on the spectrogram cut (or padded) to 4 T - 3 frames and mel_bins (channels x mel bins in)
        L, c = max(4 * audio_tokens - 3, 1), self.vocoder_hidden
        f += Flops(linear=2.0 * self.out_channels * self.mel_bins * c * 7 * L)
        for k, s in zip(self.kernels, self.factors):
            f += Flops(linear=2.0 * c * (c // 2) * k * L)    # transposed: every input sample times the kernel
            L, c = (L - 1) * s - 2 * ((k - s) // 2) + k, c // 2
            for rk, d in zip(self.resnet_kernels, self.dilations):
                f += 2 * len(d) * Flops(linear=2.0 * c * c * rk * L)
        return f + Flops(linear=2.0 * c * self.vocoder_out * 7 * L)


@dataclass(frozen=True, kw_only=True)
class ConnectorSpec:
    """LTX-2's text connectors (``LTX2TextConnectors``), run on the text encoder's stacked hidden
    states after it: the projection of all ``factor`` layers' states to ``width`` (LTX-2.0's one,
    shared by both streams), then a video and an audio connector of ``layers`` transformer blocks
    each (``heads x head_dim`` attention, GELU feed-forward ``4 x``) on every token, the padding
    replaced by learnt registers (no work)."""

    width: int = 3840
    factor: int = 49
    layers: int = 2
    heads: int = 30
    head_dim: int = 128

    def sequence(self, prompt_tokens: int) -> int:
        return prompt_tokens

    def forward(self, tokens: int) -> Flops:
        inner = self.heads * self.head_dim
        block = _qkvo(tokens, inner) + _attn(tokens, tokens, inner) + _ffn(tokens, inner, 4 * inner)
        return _lin(tokens, self.width * self.factor, self.width) + 2 * self.layers * block


T5_XXL = EncoderSpec(kind="t5", layers=24, width=4096, ffn=10240, inner=4096, tokens=512)
CLIP_L = EncoderSpec(kind="clip", layers=12, width=768, ffn=3072, tokens=77)
CLIP_L_PROJ = EncoderSpec(kind="clip", layers=12, width=768, ffn=3072, tokens=77, projection=True)
CLIP_G_PROJ = EncoderSpec(kind="clip", layers=32, width=1280, ffn=5120, tokens=77, projection=True)
VAE_16 = VAEDecoderSpec()

# FLUX.2 [dev]: the language model of Mistral-Small-3.1-24B (Mistral3ForConditionalGeneration,
# so logits too), its prompt padded to max_sequence_length (512), all of which the transformer sees.
MISTRAL_SMALL_3_1 = LLMEncoderSpec(layers=40, width=5120, ffn=32768, heads=32, kv_heads=8, head_dim=128,
                                   logits=131072)
# FLUX.2 [klein] 4B and 9B: Qwen3ForCausalLM, padded to 512 likewise.
QWEN3_4B = LLMEncoderSpec(layers=36, width=2560, ffn=9728, heads=32, kv_heads=8, head_dim=128, logits=151936)
QWEN3_8B = LLMEncoderSpec(layers=36, width=4096, ffn=12288, heads=32, kv_heads=8, head_dim=128, logits=151936)
# Z-Image: the same Qwen3-4B loaded as a bare Qwen3Model (no logits); the tokenizer pads to
# max_sequence_length (512) and the pipeline keeps only the prompt's own tokens.
QWEN3_4B_ZIMAGE = replace(QWEN3_4B, logits=0, padded_to=512)
# Qwen-Image: Qwen2_5_VLForConditionalGeneration on the prompt in its template, unpadded; the
# 34-token system prefix is dropped before the transformer.
QWEN2_5_VL_7B = LLMEncoderSpec(layers=28, width=3584, ffn=18944, heads=28, kv_heads=4, head_dim=128,
                               logits=152064, prefix_tokens=34)
VAE_32 = VAEDecoderSpec(latent_channels=32, post_quant_conv=True, quant_conv=True)   # FLUX.2's AutoencoderKLFlux2
QWEN_IMAGE_VAE = CausalVAEDecoderSpec()   # Wan 2.1's VAE, one frame
# Wan: UMT5-XXL (google/umt5-xxl's encoder: T5-XXL's sizes, relative position biases per layer,
# which are lookups), run on the prompt padded to max_sequence_length 512.
UMT5_XXL = EncoderSpec(kind="t5", layers=24, width=4096, ffn=10240, inner=4096, tokens=512)
WAN21_VAE = CausalVAEDecoderSpec()        # AutoencoderKLWan's defaults: z 16, 8x spatial, 4x temporal
# Qwen-Image 2.1: Qwen3VLForConditionalGeneration (Qwen3-VL-8B: its language model's sizes, untied
# logits at every position; the vision tower does not run without condition images) on the prompt
# in the pipeline's template, unpadded; the 14-token system prefix is dropped before the transformer.
QWEN3_VL_8B = LLMEncoderSpec(layers=36, width=4096, ffn=12288, heads=32, kv_heads=8, head_dim=128, logits=151936,
                             prefix_tokens=14)
# AutoencoderKLQwenImage21 (Qwen/Qwen-Image-2.1 vae/config.json: base_dim 96, decoder_base_dim 144, z_dim 64,
# dim_mult [1, 2, 4, 8, 8], residual, RGBA out): the image decoder, 3x3 convolutions, 16x spatial.
QWEN_IMAGE_21_VAE = CausalVAEDecoderSpec(base_dim=144, z_dim=64, dim_mult=(1, 2, 4, 8, 8),
                                         temporal_upsample=(True, True, True, False), out_channels=4, residual=True,
                                         image=True)
# HunyuanVideo 1.5: Qwen2_5_VLTextModel (Qwen2.5-VL-7B's language model, no logits) on the prompt in the
# pipeline's template, padded to 1000 + 108 tokens; the first 108 are dropped, the 1000 after reach the
# transformer (masked where padding, computed on). The ByT5 glyph encoder runs only on prompts with quoted
# text (otherwise zeros are passed): not counted for the nominal prompt.
QWEN2_5_VL_7B_TEXT = replace(QWEN2_5_VL_7B, logits=0, prefix_tokens=108, padded_to=1108)
HUNYUANVIDEO15_VAE = HunyuanVideo15VAEDecoderSpec()   # AutoencoderKLHunyuanVideo15's defaults
# Wan 2.2's VAE (Wan2.2-TI2V-5B-Diffusers vae/config.json: base_dim 160, decoder_base_dim 256, z_dim 48,
# is_residual, patch_size 2, out_channels 12, 16x spatial, 4x temporal).
WAN22_VAE = CausalVAEDecoderSpec(base_dim=256, z_dim=48, out_channels=12, residual=True, patch_size=2,
                                 encoder_base_dim=160)
# Image conditions. Wan 2.1 I2V's image encoder: CLIP ViT-H/14 (open-clip xlm-roberta-large-vit-huge-14's vision
# tower, Wan2.1-I2V-14B-*-Diffusers image_encoder/config.json: hidden 1280, 32 layers, MLP 5120, 224 pixels).
CLIP_VIT_H = ViTSpec(layers=32, width=1280, ffn=5120, tokens=257, patch=14, image=224)
# Qwen-Image-Edit: Qwen2.5-VL-7B's vision tower, with the processor limits of Qwen2.5-VL's published
# preprocessor_config.json (min_pixels 3136, max_pixels 12845056); its template drops 64 tokens of system prompt.
QWEN2_5_VL_VISION = QwenVisionSpec()
QWEN2_5_VL_7B_EDIT = replace(QWEN2_5_VL_7B, prefix_tokens=64)


#: How a layout's stages see reference images (``ralu_torch.backends.references``): at full
#: resolution in every stage, or at each stage's resolution.
REFERENCE_MODES = ("full", "stage")


@dataclass(frozen=True, kw_only=True)
class ReferenceSpec:
    """Reference images a pipeline appends to the transformer's image tokens (FLUX.1 Kontext,
    Qwen-Image-Edit, FLUX.2 with ``image=``): ``images`` of them priced by default, each at
    ``resolution`` (the size the pipeline resizes a square input to: all three keep about
    1024 x 1024 pixels whatever the output's size), VAE-encoded once per call. ``vision``: the
    text encoder's vision tower, which also sees each reference (Qwen2.5-VL, at
    ``vision_resolution``) and puts its image tokens into the prompt, with ``text_per_image``
    tokens around them (the vision markers, Edit Plus's ``"Picture k: "``)."""

    images: int = 1
    resolution: tuple = (1024, 1024)
    vision: QwenVisionSpec | None = None
    vision_resolution: tuple = (1024, 1024)
    text_per_image: int = 0

    def prompt_tokens(self, images: int) -> int:
        """Tokens ``images`` references add to the prompt the transformer and text encoder see."""
        if self.vision is None:
            return 0
        return images * (self.vision.image_tokens(*self.vision_resolution) + self.text_per_image)


# LTX-2 (Lightricks/LTX-2; diffusers' scripts/convert_ltx2_to_diffusers.py, version "2.0"): Gemma 3 12B as
# Gemma3ForConditionalGeneration (so logits too) on the prompt padded to max_sequence_length 1024, all of
# which the connectors and the transformer see; the 2.0 connectors, video VAE decoder and transformer.
GEMMA3_12B = LLMEncoderSpec(layers=48, width=3840, ffn=15360, heads=16, kv_heads=8, head_dim=256, logits=262208)
LTX2_CONNECTORS = ConnectorSpec()
LTX2_VAE = LTX2VAEDecoderSpec()
# the audio VAE decoder (AutoencoderKLLTX2Audio's defaults) and the 2.0 vocoder of the conversion script
LTX2_AUDIO = AudioDecoderSpec()
_LTX2 = LTX2Spec(layers=48, heads=32, head_dim=128, audio_heads=32, audio_head_dim=64, pixels_per_token=64)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A whole text-to-image or text-to-video model as the cost model sees it.

    ``text_tokens``: the transformer's text sequence (SD3: 77 CLIP + T5; the others: the
    prompt sequence). ``t5_tokens``: the prompt sequence, what ``layout_cost(text_tokens=)``
    replaces (T5's tokens for FLUX.1, SD3 and Chroma; for FLUX.2, Qwen-Image and Z-Image the
    language model's tokens as the transformer sees them). Each encoder derives its own
    sequence from it (``encoder.sequence``). ``cfg_batches``: forwards per step (2 with
    classifier-free guidance, which also encodes the negative prompt, priced at the prompt's length).

    A video model has ``temporal > 1``: its VAE keeps the first frame and compresses each
    ``temporal`` frames after it into one latent frame, so a clip has ``4k + 1`` frames
    (``temporal`` 4) and ``(frames - 1) // temporal + 1`` latent frames. ``default_frames``:
    the stock run's frame count (1 for an image model); ``default_resolution``: the
    ``(height, width)`` that ``layout_cost`` prices when given none.
    """

    name: str
    transformer: DiTSpec
    encoders: tuple
    vae: VAEDecoderSpec | CausalVAEDecoderSpec = VAE_16
    text_tokens: int
    t5_tokens: int
    cfg_batches: int = 1
    temporal: int = 1
    default_frames: int = 1
    default_resolution: tuple = (1024, 1024)
    audio_decoder: object = None    # a joint model's audio decode (LTX-2: AudioDecoderSpec), priced after the last step
    diffusers_id: str = ""
    notes: str = field(default="", compare=False)
    references: ReferenceSpec | None = None
    image_encoder: ViTSpec | None = None
    condition: str | None = None     # Wan I2V: "video" or "first frame" (what the VAE encodes)

    CONDITIONS: ClassVar[tuple] = ("video", "first frame")

    def __post_init__(self):
        if self.condition is not None and self.condition not in self.CONDITIONS:
            raise ValueError(f"{self.name}: condition must be one of {', '.join(self.CONDITIONS)}, "
                             f"got {self.condition!r}")
        check_positive_int("temporal", self.temporal)
        check_positive_int("default frames", self.default_frames)
        if self.is_video:
            if getattr(self.vae, "temporal", 1) != self.temporal:
                raise ValueError(f"{self.name}: temporal {self.temporal} must be its VAE's temporal compression "
                                 f"({getattr(self.vae, 'temporal', 1)})")
            self.latent_frames(self.default_frames)
        elif self.default_frames != 1:
            raise ValueError(f"{self.name}: an image model (temporal 1) has default_frames 1, "
                             f"got {self.default_frames}")

    @property
    def is_video(self) -> bool:
        return self.temporal > 1

    def latent_frames(self, frames: int | None = None) -> int:
        """Latent frames of a clip of ``frames`` video frames (default: ``default_frames``);
        1 for an image model, which takes ``frames`` None or 1 only."""
        if not self.is_video:
            if frames is None or (not isinstance(frames, bool) and frames == 1):
                return 1
            raise ValueError(f"{self.name} is an image model: frames must be None or 1, got {frames!r}")
        n = self.default_frames if frames is None else check_positive_int("frames", frames)
        t = self.temporal
        if (n - 1) % t:
            lower = (n - 1) // t * t + 1
            raise ValueError(f"frames must be {t}k + 1 for {self.name} (its VAE keeps the first frame and packs "
                             f"each {t} after it into one latent frame), got {n}; the nearest allowed are "
                             f"{lower} and {lower + t}")
        return (n - 1) // t + 1

    @property
    def default_references(self) -> int:
        """Reference images priced by default (0 for a model without any)."""
        return self.references.images if self.references is not None else 0

    def _prompt_extra(self, references: int) -> int:
        return self.references.prompt_tokens(references) if references else 0

    def text_encoding(self, references: int | None = None) -> Flops:
        """The prompt's encoding (``cfg_batches`` times: the negative prompt too), with the
        references' vision tokens and vision tower where the text encoder sees them."""
        n = self.default_references if references is None else references
        extra = self._prompt_extra(n)
        f = Flops()
        for enc in self.encoders:
            f += enc.forward(enc.sequence(self.t5_tokens + extra))
        if n and self.references.vision is not None:
            f += n * self.references.vision.forward(*self.references.vision_resolution)
        return self.cfg_batches * f

    def step(self, image_tokens: int, reference_tokens: int = 0, references: int | None = None) -> Flops:
        """One sampler step: the transformer's forwards (``cfg_batches`` of them; LTX-2: its three
        kinds of call, :meth:`LTX2Spec.step`) on ``image_tokens`` generated and ``reference_tokens``
        reference tokens (``references`` images, whose vision tokens lengthen the prompt where the
        text encoder sees them)."""
        n = self.default_references if references is None else references
        return self.transformer.step(image_tokens + reference_tokens, self.text_tokens + self._prompt_extra(n),
                                     self.cfg_batches)

    def for_clip(self, frames: int | None) -> "ModelSpec":
        """The spec for a clip of ``frames`` video frames (default ``default_frames``)."""
        tr = self.transformer.for_clip(self.default_frames if frames is None else frames)
        return self if tr is self.transformer else replace(self, transformer=tr)

    def final_decode(self, height: int, width: int, latent_frames: int = 1) -> Flops:
        """The decode after the last step: the VAE's, and a joint model's audio (its VAE and vocoder)."""
        f = self.decode(height, width, latent_frames)
        if self.audio_decoder is not None:
            f += self.audio_decoder.decode(self.transformer.audio_tokens)
        return f

    def reference_grid(self) -> tuple:
        """A reference image's full-resolution token grid."""
        return self.token_grid(*self.references.resolution)

    def image_encoding(self, height: int, width: int, latent_frames: int = 1, references: int | None = None) -> Flops:
        """What runs once per call on the conditioning images: each reference's VAE encode, Wan
        2.1 I2V's CLIP image encoder, the VAE encode of Wan I2V's conditioning video (all its
        frames) or first frame."""
        n = self.default_references if references is None else references
        f = Flops()
        if n:
            f += n * self.vae.encode(*self.references.resolution)
        if self.image_encoder is not None:
            f += self.image_encoder.forward()
        if self.condition is not None:
            frames = self.vae.frames(latent_frames) if self.condition == "video" else 1
            f += self.vae.encode(height, width, frames)
        return f

    def token_grid(self, height: int, width: int, multiple: int = 1) -> tuple:
        """Full-resolution token grid of an image or of one frame (:func:`ralu_schedule.grid.token_grid`)."""
        return token_grid(height, width, pixels_per_token=self.transformer.pixels_per_token,
                          downsampling=multiple, what=f"{self.name} with this layout")

    def decode(self, height: int, width: int, latent_frames: int = 1) -> Flops:
        """The VAE decode of an image, or of a clip of ``latent_frames`` latent frames."""
        return self.vae.decode(height, width, latent_frames) if self.is_video else self.vae.decode(height, width)


_FLUX = dict(family="flux", double=19, single=38, heads=24, head_dim=128, pooled_dim=768)
_SD3 = dict(family="sd3", heads=24, head_dim=64, pooled_dim=2048)

# Qwen-Image and Z-Image do not pad the prompt to a fixed length, so their cost follows it:
# priced at a nominal 128-token prompt, the order of the detailed one-paragraph prompts of the
# model cards (pass layout_cost(text_tokens=) for another). With the chat template around it
# the transformer sees 128 + 5 tokens in Qwen-Image ("<|im_end|>\n<|im_start|>assistant\n"
# stays after the dropped system prefix) and 128 + 8 in Z-Image ("<|im_start|>user\n" before,
# the same 5 after).
_PROMPT = 128
_FLUX2_KLEIN_4B = Flux2Spec(double=5, single=20, heads=24, head_dim=128, context_dim=7680, guidance_embeds=False)
# Klein 9B, confirmed from copies of BFL's reference Klein9BParams (depth 8, 24 single blocks, hidden
# 4096 = 32 heads x 128, context 12288 = 3 x Qwen3-8B's 4096, no guidance embedder) and from copies of
# the published diffusers config (num_layers 8, num_single_layers 24, num_attention_heads 32,
# joint_attention_dim 12288, guidance_embeds false); the Hub file itself was not read.
_FLUX2_KLEIN_9B = Flux2Spec(double=8, single=24, heads=32, head_dim=128, context_dim=12288, guidance_embeds=False)
_Z_IMAGE = ZImageSpec(layers=30, refiner_layers=2, heads=30, head_dim=128)
# HunyuanVideo 1.5 (diffusers' scripts/convert_hunyuan_video1_5_to_diffusers.py TRANSFORMER_CONFIGS: the 480p and
# 720p text-to-video checkpoints, CFG-distilled or not, share this architecture; 8.33 B parameters)
_HUNYUANVIDEO15 = HunyuanVideo15Spec(layers=54, refiner_layers=2, heads=16, head_dim=128)
_HY15 = dict(transformer=_HUNYUANVIDEO15, encoders=(QWEN2_5_VL_7B_TEXT,), vae=HUNYUANVIDEO15_VAE,
             text_tokens=1000 + 256 + 729, t5_tokens=1000, temporal=4, default_frames=121)
_HY15_NOTE = ("HunyuanVideo15Pipeline: the Qwen2.5-VL prompt padded to 1000 tokens, 256 ByT5 glyph tokens and 729 "
              "image tokens (zero in text-to-video), all computed on by every block; 121 frames (the pipeline's "
              "num_frames) at 24 fps; a token per latent pixel of the 16x VAE")
# Qwen/Qwen-Image-2.1 transformer/config.json (QwenImage21Transformer2DModel's defaults; 7.115 B parameters)
_QWEN_IMAGE_21 = QwenImage21Spec(layers=32, heads=32, head_dim=128)

# Wan (diffusers' scripts/convert_wan_to_diffusers.py configs: patch (1, 2, 2), head_dim 128,
# text_dim 4096, freq_dim 256; cross-checked against the reference wan/configs/*.py).
_WAN_1_3B = WanSpec(layers=30, heads=12, head_dim=128, ffn=8960)
_WAN_14B = WanSpec(layers=40, heads=40, head_dim=128, ffn=13824)
_WAN_5B = WanSpec(layers=30, heads=24, head_dim=128, ffn=14336, in_channels=48, expand_timesteps=True,
                  pixels_per_token=WAN22_VAE.downsampling * 2)
_WAN = dict(encoders=(UMT5_XXL,), vae=WAN21_VAE, text_tokens=512, t5_tokens=512, cfg_batches=2,
            temporal=4, default_frames=81)
_WAN_NOTE = ("WanPipeline: CFG (guidance_scale > 1: a second transformer call per step, the negative prompt "
             "also encoded); UMT5-XXL prompt padded to 512, all of which the transformer sees")
_WAN_81 = "81 frames at 16 fps (WanPipeline's num_frames; the reference configs' frame_num and sample_fps)"
_PADDED_512 = "prompt padded to max_sequence_length 512, all of which the transformer sees"
_NOMINAL = f"nominal {_PROMPT}-token prompt (the pipeline does not pad it; text_tokens= prices another)"
# Reference images as the pipelines resize a square input: FLUX.1 Kontext to the preferred 1024x1024, Qwen-Image-Edit
# (both) to calculate_dimensions(1024 * 1024) for the VAE; Qwen-Image-Edit shows Qwen2.5-VL the same image, Edit Plus
# each image at 384x384 (CONDITION_IMAGE_SIZE) after "Picture k: " (5 tokens); two vision markers around each.
_KONTEXT_REFERENCE = ReferenceSpec(images=1, resolution=(1024, 1024))
_QWEN_EDIT_REFERENCE = ReferenceSpec(images=1, resolution=(1024, 1024), vision=QWEN2_5_VL_VISION,
                                     vision_resolution=(1024, 1024), text_per_image=2)
_QWEN_EDIT_PLUS_REFERENCE = ReferenceSpec(images=1, resolution=(1024, 1024), vision=QWEN2_5_VL_VISION,
                                          vision_resolution=(384, 384), text_per_image=2 + 5)
# FLUX.2 with image=: each reference at its own size up to 1024x1024 pixels; none priced unless asked (text-to-image)
_FLUX2_REFERENCE = ReferenceSpec(images=0, resolution=(1024, 1024))
# Wan image-to-video (WanImageToVideoPipeline): 16 noise + 16 condition + 4 mask channels (Wan 2.1 I2V, Wan 2.2 I2V
# A14B); Wan 2.1 I2V's 257 CLIP tokens in cross-attention; TI2V-5B's first frame replaces the noise (the same 48-channel
# transformer as text-to-video)
_WAN21_I2V = replace(_WAN_14B, in_channels=36, out_channels=16, image_tokens=CLIP_VIT_H.image_tokens)
_WAN22_I2V = replace(_WAN_14B, in_channels=36, out_channels=16)
_I2V_NOTE = ("the VAE encodes the conditioning video (the image, then zeros for the other frames) once per call; "
             "its latents and mask are concatenated on the channels (in_channels 36)")

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
    ModelSpec(name="flux2-dev", transformer=Flux2Spec(double=8, single=48, heads=48, head_dim=128),
              encoders=(MISTRAL_SMALL_3_1,), vae=VAE_32, text_tokens=512, t5_tokens=512,
              diffusers_id="black-forest-labs/FLUX.2-dev", references=_FLUX2_REFERENCE,
              notes=f"guidance-distilled (guidance embedder, no CFG); Mistral {_PADDED_512}"),
    ModelSpec(name="flux2-klein-4b", transformer=_FLUX2_KLEIN_4B, encoders=(QWEN3_4B,), vae=VAE_32,
              text_tokens=512, t5_tokens=512, references=_FLUX2_REFERENCE,
              diffusers_id="black-forest-labs/FLUX.2-klein-4B",
              notes=f"step-distilled, no CFG; Qwen3 {_PADDED_512}"),
    ModelSpec(name="flux2-klein-9b", transformer=_FLUX2_KLEIN_9B, encoders=(QWEN3_8B,), vae=VAE_32,
              text_tokens=512, t5_tokens=512, references=_FLUX2_REFERENCE,
              diffusers_id="black-forest-labs/FLUX.2-klein-9B",
              notes=f"step-distilled, no CFG; Qwen3 {_PADDED_512}"),
    ModelSpec(name="flux2-klein-base-4b", transformer=_FLUX2_KLEIN_4B, encoders=(QWEN3_4B,), vae=VAE_32,
              text_tokens=512, t5_tokens=512, cfg_batches=2, references=_FLUX2_REFERENCE,
              diffusers_id="black-forest-labs/FLUX.2-klein-base-4B",
              notes=f"CFG with the empty negative prompt, also encoded; Qwen3 {_PADDED_512}"),
    ModelSpec(name="flux2-klein-base-9b", transformer=_FLUX2_KLEIN_9B, encoders=(QWEN3_8B,), vae=VAE_32,
              text_tokens=512, t5_tokens=512, cfg_batches=2, references=_FLUX2_REFERENCE,
              diffusers_id="black-forest-labs/FLUX.2-klein-base-9B",
              notes=f"CFG with the empty negative prompt, also encoded; Qwen3 {_PADDED_512}"),
    ModelSpec(name="qwen-image", transformer=QwenImageSpec(layers=60, heads=24, head_dim=128),
              encoders=(QWEN2_5_VL_7B,), vae=QWEN_IMAGE_VAE, text_tokens=_PROMPT + 5, t5_tokens=_PROMPT + 5,
              cfg_batches=2, diffusers_id="Qwen/Qwen-Image",
              notes=f"{_NOMINAL}; true CFG with a negative prompt, priced at the prompt's length "
                    "(a short one costs less)"),
    ModelSpec(name="z-image-turbo", transformer=_Z_IMAGE, encoders=(QWEN3_4B_ZIMAGE,),
              text_tokens=_PROMPT + 8, t5_tokens=_PROMPT + 8, diffusers_id="Tongyi-MAI/Z-Image-Turbo",
              notes=f"{_NOMINAL}; guidance 0, no CFG; Qwen3 runs on the 512-token padded prompt"),
    ModelSpec(name="z-image", transformer=_Z_IMAGE, encoders=(QWEN3_4B_ZIMAGE,),
              text_tokens=_PROMPT + 8, t5_tokens=_PROMPT + 8, cfg_batches=2, diffusers_id="Tongyi-MAI/Z-Image",
              notes=f"{_NOMINAL}; CFG: one batched call of 2 per step (the negative caption padded to the "
                    "prompt's length: the FLOPs of 2 calls); Qwen3 runs on the 512-token padded prompt"),
    ModelSpec(name="chroma", transformer=ChromaSpec(double=19, single=38, heads=24, head_dim=128),
              encoders=(T5_XXL,), text_tokens=512, t5_tokens=512, cfg_batches=2,
              diffusers_id="lodestones/Chroma1-HD",
              notes="CFG with the negative prompt; T5 prompt padded to 512 (masked, but computed on)"),
    ModelSpec(name="wan2.1-t2v-1.3b", transformer=_WAN_1_3B, **_WAN, default_resolution=(480, 832),
              diffusers_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
              notes=f"{_WAN_NOTE}; {_WAN_81}; 480x832 (WanPipeline's default size, the size this model is made for)"),
    ModelSpec(name="wan2.1-t2v-14b", transformer=_WAN_14B, **_WAN, default_resolution=(480, 832),
              diffusers_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
              notes=f"{_WAN_NOTE}; {_WAN_81}; 480x832 by default (WanPipeline's; the model also makes 720p)"),
    ModelSpec(name="wan2.2-t2v-a14b", transformer=_WAN_14B, **_WAN, default_resolution=(480, 832),
              diffusers_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
              notes=f"two experts of the 14B architecture (transformer for high noise, transformer_2 for low, "
                    f"switched at boundary_ratio 0.875; guidance 4.0 high-noise, 3.0 low-noise): one runs per "
                    f"call, so a call costs the 14B's; {_WAN_NOTE}; {_WAN_81}"),
    ModelSpec(name="wan2.2-ti2v-5b", transformer=_WAN_5B, **{**_WAN, "vae": WAN22_VAE, "default_frames": 121},
              default_resolution=(704, 1280), diffusers_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
              notes=f"Wan 2.2 VAE (z 48, 16x spatial: 32 pixels per token), a timestep per token "
                    f"(expand_timesteps); 121 frames at 24 fps and 704x1280 (the reference TI2V-5B config's frame_num "
                    f"and sample_fps, its 720p size); {_WAN_NOTE}"),
    *[ModelSpec(name=f"hunyuanvideo1.5-{size}{kind}", **_HY15, cfg_batches=2 if not kind else 1,
                default_resolution=resolution,
                diffusers_id="" if kind else f"hunyuanvideo-community/HunyuanVideo-1.5-{size}_t2v",
                notes=("CFG-distilled (its guider's guidance_scale 1: one call per step)" if kind else
                       "CFG with guidance_scale 6 (a second call per step, the empty negative prompt also encoded)")
                + f"; {size}: flow shift {shift:g}, priced at {resolution[0]}x{resolution[1]} (the pipeline's "
                  f"{size} size on the 32-pixel grid a 2x-coarser first stage needs); {_HY15_NOTE}")
      for size, resolution, shift in (("480p", (480, 832), 5.0), ("720p", (704, 1280), 9.0))
      for kind in ("", "-distilled")],
    ModelSpec(name="qwen-image-2.1", transformer=_QWEN_IMAGE_21,
              encoders=(QWEN3_VL_8B, TransformerPrefix(_QWEN_IMAGE_21)), vae=QWEN_IMAGE_21_VAE,
              text_tokens=_PROMPT + 8, t5_tokens=_PROMPT + 8, diffusers_id="Qwen/Qwen-Image-2.1",
              notes=f"{_NOMINAL}, which the transformer sees with 8 template tokens; no guidance by default (true CFG "
                    "with a negative prompt doubles the calls); a token per latent pixel of the 16x VAE; the text's "
                    "keys and values cached after the first step (its extra cost counted with the text encoding)"),
        # -- image-conditioned (docs/conditioned.md, docs/cost.md) --
    ModelSpec(name="flux-kontext-dev", transformer=TransformerSpec(**_FLUX, guidance_embeds=True),
              encoders=(T5_XXL, CLIP_L), text_tokens=512, t5_tokens=512, references=_KONTEXT_REFERENCE,
              diffusers_id="black-forest-labs/FLUX.1-Kontext-dev",
              notes="FLUX.1-dev's transformer; the reference image (resized to the preferred 1024x1024 for a square "
                    "input) VAE-encoded once and appended to every call's image tokens; no CFG by default"),
    ModelSpec(name="qwen-image-edit", transformer=QwenImageSpec(layers=60, heads=24, head_dim=128),
              encoders=(QWEN2_5_VL_7B_EDIT,), vae=QWEN_IMAGE_VAE, text_tokens=_PROMPT + 5, t5_tokens=_PROMPT + 5,
              cfg_batches=2, references=_QWEN_EDIT_REFERENCE, diffusers_id="Qwen/Qwen-Image-Edit",
              notes=f"{_NOMINAL}; the reference (about 1024x1024 pixels) VAE-encoded once and appended to the image "
                    "tokens; Qwen2.5-VL sees it too (its vision tower, and 1369 image tokens in the prompt, which "
                    "the transformer sees), for the negative prompt as well; true CFG"),
    ModelSpec(name="qwen-image-edit-2509", transformer=QwenImageSpec(layers=60, heads=24, head_dim=128),
              encoders=(QWEN2_5_VL_7B_EDIT,), vae=QWEN_IMAGE_VAE, text_tokens=_PROMPT + 5, t5_tokens=_PROMPT + 5,
              cfg_batches=2, references=_QWEN_EDIT_PLUS_REFERENCE, diffusers_id="Qwen/Qwen-Image-Edit-2509",
              notes=f"{_NOMINAL}; QwenImageEditPlusPipeline: each reference (1 priced; up to 3) VAE-encoded at "
                    "about 1024x1024 pixels and appended to the image tokens, and shown to Qwen2.5-VL at 384x384 "
                    "(196 image tokens in the prompt); true CFG"),
    ModelSpec(name="wan2.1-i2v-14b-480p", transformer=_WAN21_I2V, **_WAN, default_resolution=(480, 832),
              image_encoder=CLIP_VIT_H, condition="video", diffusers_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
              notes=f"{_I2V_NOTE}; the CLIP ViT-H/14 image encoder once per call, its 257 tokens in every block's "
                    f"cross-attention; {_WAN_NOTE}; {_WAN_81}"),
    ModelSpec(name="wan2.1-i2v-14b-720p", transformer=_WAN21_I2V, **_WAN, default_resolution=(704, 1280),
              image_encoder=CLIP_VIT_H, condition="video", diffusers_id="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
              notes=f"{_I2V_NOTE}; the CLIP ViT-H/14 image encoder once per call, its 257 tokens in every block's "
                    f"cross-attention; 704x1280 (720p rounded to the 32 pixels a 2x coarser stage needs); "
                    f"{_WAN_NOTE}; {_WAN_81}"),
    ModelSpec(name="wan2.2-i2v-a14b", transformer=_WAN22_I2V, **_WAN, default_resolution=(480, 832),
              condition="video", diffusers_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
              notes=f"two experts of the 14B architecture (one per call) with in_channels 36, no image encoder; "
                    f"{_I2V_NOTE}; {_WAN_NOTE}; {_WAN_81}"),
    ModelSpec(name="wan2.2-ti2v-5b-i2v", transformer=_WAN_5B, **{**_WAN, "vae": WAN22_VAE, "default_frames": 121},
              default_resolution=(704, 1280), condition="first frame",
              diffusers_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
              notes=f"TI2V-5B from an image (WanImageToVideoPipeline with expand_timesteps): the VAE encodes the first "
                    f"frame once, whose latent replaces the noise's first frame (the text-to-video transformer's "
                    f"cost, a timestep per token); 121 frames at 24 fps, 704x1280; {_WAN_NOTE}"),
    ModelSpec(name="ltx-2", transformer=_LTX2, encoders=(GEMMA3_12B, LTX2_CONNECTORS), vae=LTX2_VAE,
              text_tokens=1024, t5_tokens=1024, cfg_batches=2, temporal=8, default_frames=121,
              default_resolution=(512, 768), audio_decoder=LTX2_AUDIO, diffusers_id="Lightricks/LTX-2",
              notes="LTX2Pipeline's defaults: per step the classifier-free pair (the negative prompt also encoded), "
                    "a spatio-temporal guidance call and a modality call (the audio-video cross-attention off), each "
                    "on the video and the audio tokens (126 for 121 frames at 24 fps); Gemma 3 12B and the "
                    "connectors on the prompt padded to 1024, all of which the transformer sees; 121 frames at "
                    "512x768 (the pipeline's defaults); the final decode includes the audio's VAE decoder and vocoder"),
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
    tflops: float   # the transformer's alone, in the layout's convention
    evaluations: int = 0   # transformer calls: ``steps`` for Euler, ``2 steps - 1`` for Heun
    full_calls: int | None = None   # with a cache: calls that run the whole model (else all of them)
    linear_tflops: float = 0.0      # the same calls' weight layers (either convention)
    attention_tflops: float = 0.0   # the same calls' attention products (counted in "full" only)
    reference_tokens: int = 0       # reference-image tokens each call carries besides ``tokens``

    def __post_init__(self):
        if not self.evaluations:
            object.__setattr__(self, "evaluations", self.steps)
        if self.full_calls is None:
            object.__setattr__(self, "full_calls", self.evaluations)

    @property
    def attention_share(self) -> float:
        """Attention products' share of this stage's transformer FLOPs (``full`` convention)."""
        total = self.linear_tflops + self.attention_tflops
        return self.attention_tflops / total if total else 0.0


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
    frames: int = 1                # video frames (1 for an image)
    latent_frames: int = 1
    baseline_stage: StageCost | None = None   # the baseline's transformer: baseline_steps full-resolution calls
    image_encoding_tflops: float = 0.0        # once per call: the conditioning images' encoders (VAE, CLIP)
    references: str | None = None             # reference mode (REFERENCE_MODES), for a model with references
    reference_images: int = 0

    @property
    def transformer_tflops(self) -> float:
        return sum(s.tflops for s in self.stages)

    @property
    def tflops(self) -> float:
        return (self.transformer_tflops + self.text_encoding_tflops + self.image_encoding_tflops
                + sum(self.edge_decode_tflops) + self.decode_tflops)

    @property
    def speedup(self) -> float:
        return self.baseline_tflops / self.tflops

    @property
    def attention_share(self) -> float:
        """Attention products' share of the layout's transformer FLOPs, all stages (``full`` convention)."""
        att = sum(s.attention_tflops for s in self.stages)
        total = att + sum(s.linear_tflops for s in self.stages)
        return att / total if total else 0.0

    @property
    def baseline_attention_share(self) -> float:
        """The same share for the baseline's transformer calls."""
        return self.baseline_stage.attention_share if self.baseline_stage is not None else 0.0

    def to_dict(self) -> dict:
        return {"model": self.model, "resolution": list(self.resolution), "convention": self.convention,
                "frames": self.frames, "latent_frames": self.latent_frames,
                "tflops": self.tflops, "baseline_tflops": self.baseline_tflops,
                "baseline_steps": self.baseline_steps, "speedup": self.speedup, "solver": self.solver,
                "transformer_tflops": self.transformer_tflops,
                "attention_share": self.attention_share, "baseline_attention_share": self.baseline_attention_share,
                "stages": [{"tokens": s.tokens, "steps": s.steps, "evaluations": s.evaluations,
                            "full_calls": s.full_calls, "tflops": s.tflops, "linear_tflops": s.linear_tflops,
                            "attention_tflops": s.attention_tflops, "attention_share": s.attention_share,
                            "reference_tokens": s.reference_tokens}
                           for s in self.stages],
                "references": self.references, "reference_images": self.reference_images,
                "image_encoding_tflops": self.image_encoding_tflops,
                "cache": None if self.cache is None else {"name": type(self.cache).__name__, **vars(self.cache)},
                "text_tokens": self.text_tokens,
                "text_encoding_tflops": self.text_encoding_tflops,
                "edge_decode_tflops": list(self.edge_decode_tflops), "decode_tflops": self.decode_tflops}


def layout_cost(layout: Layout, model: "str | ModelSpec" = "flux-dev", resolution=None, *,
                convention: str = "paper", baseline_steps: int = 50, solver: str = "euler", cache=None,
                text_tokens: int | None = None, frames: int | None = None, references: str | None = None,
                reference_images: int | None = None) -> LayoutCost:
    """Cost of sampling one image (or one video clip) with ``layout`` against a
    ``baseline_steps``-step baseline.

    Counted: each stage's transformer forwards at its token count (low-res tokens kept plus
    ``f^2`` children per upsampled one), an edge-detection VAE decode at each transition
    that upsamples only part of the blocks (at the resolution of the level it selects
    from), text encoding once, the final decode. The baseline is a one-stage layout of
    ``baseline_steps`` steps at full resolution, counted the same way.

    ``resolution``: ``(height, width)`` or ``"HEIGHTxWIDTH"``; default the model's
    ``default_resolution`` (1024x1024 for the image models).

    ``frames`` (video models): the clip's video frames, ``temporal k + 1`` (Wan: ``4k + 1``;
    default the model's ``default_frames``). The clip has ``(frames - 1) // temporal + 1``
    latent frames; the sampler stacks them along the row axis, so each stage's tokens are
    ``layout.stage_tokens(latent_frames x rows, cols)`` (the top fraction is chosen over the
    whole clip), and the edge decodes, the final decode and the baseline's decode are of the
    whole clip. Image models take ``frames`` None or 1 only.

    ``solver`` (one of :data:`ralu_schedule.export.SOLVERS`) sets how many transformer calls
    a stage's steps make (:func:`~ralu_schedule.export.model_evaluations`; Heun ``2 n - 1``);
    the baseline stays the ``baseline_steps``-call Euler run the paper compares against.

    ``cache``: a fixed-pattern step cache (:class:`ralu_schedule.caching.TaylorSeerPolicy`),
    restarted in every stage; predicted calls cost its ``predicted_cost`` (paper: 0).
    ``text_tokens``: the prompt sequence (``ModelSpec.t5_tokens``: ``max_sequence_length``
    where the pipeline pads the prompt to it, else the prompt's own length) instead of the
    model's default (FLUX.1-dev 512, schnell 256, SD3 256 T5 tokens after 77 CLIP tokens,
    FLUX.2, Chroma and Wan 512, Qwen-Image and Z-Image a nominal prompt); it sets the
    transformer's text tokens and each text encoder's sequence, for the layout and the
    baseline alike.

    Each stage (and ``baseline_stage``) also carries its weight-layer and attention TFLOPs,
    whatever the convention: ``attention_share`` is the attention products' share of the
    transformer FLOPs (per stage, for the layout, for the baseline).

    Image-conditioned models (:class:`ModelSpec`): every call carries the reference images'
    tokens (``reference_images`` of them, default the model's), at full resolution in every
    stage with ``references="full"`` (the default), or read at each stage's resolution with
    ``"stage"`` (a stage whose coarsest tokens have side ``D`` carries ``1/D^2`` of them); the
    baseline carries them all. What encodes the conditioning images (VAE encodes, CLIP, a
    vision tower in the text encoder) is counted once, for the layout and the baseline alike.
    """
    _check_convention(convention)
    spec = get_model(model)
    model = spec.name
    n_refs = check_reference_options(spec, references, reference_images)
    references = (references or "full") if spec.references is not None else None
    if text_tokens is not None:
        n = check_positive_int("text tokens", text_tokens)
        spec = replace(spec, text_tokens=spec.text_tokens - spec.t5_tokens + n, t5_tokens=n)
    if cache is not None and not hasattr(cache, "step_costs"):
        raise ValueError(f"cache must be a fixed-pattern policy such as ralu_schedule.caching.TaylorSeerPolicy, "
                         f"got {type(cache).__name__}")
    baseline_steps = check_positive_int("baseline steps", baseline_steps)
    latent = spec.latent_frames(frames)
    spec = spec.for_clip(frames)                 # LTX-2: the audio's length follows the clip's
    height, width = _resolution(spec.default_resolution if resolution is None else resolution)
    gh, gw = spec.token_grid(height, width, layout.downsampling)
    T = lambda f: f.total(convention) / 1e12  # noqa: E731

    sizes, edges, level, down = [], [], 0, layout.downsampling     # each stage's coarsest token side
    for r in layout.fractions:
        sizes.append(down)
        edges.append(0.0 if r >= 1.0 else T(spec.decode(height // down, width // down, latent)))
        if r >= 1.0:
            down //= layout.level_factors[level]
            level += 1
    sizes.append(down)
    rows, cols = spec.reference_grid() if n_refs else (0, 0)

    def reference_tokens(size):
        if not n_refs:
            return 0
        if references == "stage" and (rows % size or cols % size):
            raise ValueError(f"a {rows}x{cols}-token reference cannot be read at 1/{size} resolution "
                             "(references='stage'); use references='full'")
        return n_refs * (rows * cols if references == "full" else (rows // size) * (cols // size))

    def stage(tokens, steps, calls, work, full, size=1):
        R = reference_tokens(size)
        f = work * spec.step(tokens, R, n_refs)
        return StageCost(tokens=tokens, steps=steps, tflops=T(f), evaluations=calls, full_calls=full,
                         linear_tflops=f.linear / 1e12, attention_tflops=f.attention / 1e12, reference_tokens=R)

    calls = [model_evaluations(k, solver) for k in layout.steps]
    work = [float(m) if cache is None else sum(cache.step_costs(m)) for m in calls]
    full = [m if cache is None else len(cache.full_steps(m)) for m in calls]
    stages = tuple(stage(*args) for args in zip(layout.stage_tokens(latent * gh, gw), layout.steps, calls, work, full,
                                                 sizes))
    text = T(spec.text_encoding(n_refs))
    images = T(spec.image_encoding(height, width, latent, n_refs))
    decode = T(spec.final_decode(height, width, latent))
    base = stage(latent * gh * gw, baseline_steps, baseline_steps, float(baseline_steps), baseline_steps)
    baseline = base.tflops + text + images + decode
    return LayoutCost(model=model, resolution=(height, width), convention=convention, stages=stages,
                      text_encoding_tflops=text, edge_decode_tflops=tuple(edges), decode_tflops=decode,
                      baseline_steps=baseline_steps, baseline_tflops=baseline, solver=solver, cache=cache,
                      text_tokens=text_tokens, frames=spec.vae.frames(latent) if spec.is_video else 1,
                      latent_frames=latent, baseline_stage=base, image_encoding_tflops=images,
                      references=references, reference_images=n_refs)


def check_reference_options(spec: ModelSpec, references, reference_images) -> int:
    """The number of reference images to price, after checking the reference options against ``spec``."""
    if references is not None and references not in REFERENCE_MODES:
        raise ValueError(f"references must be one of {', '.join(REFERENCE_MODES)}, got {references!r}")
    if spec.references is None:
        if references is not None or reference_images:
            raise ValueError(f"{spec.name} takes no reference images; the models that do: "
                             + ", ".join(n for n, m in MODELS.items() if m.references is not None))
        return 0
    if reference_images is None:
        return spec.default_references
    if isinstance(reference_images, bool) or not isinstance(reference_images, int) or reference_images < 0:
        raise ValueError(f"reference images must be an integer >= 0, got {reference_images!r}")
    return reference_images


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
    clip = f", {c.frames} frames ({c.latent_frames} latent)" if c.frames > 1 else ""
    lines = [f"{c.model} at {c.resolution[0]}x{c.resolution[1]}{clip}, convention '{c.convention}'{solver} (TFLOPs)",
             f"{'stage':>5} {'tokens':>7} {'steps':>5} {'calls':>5} {'full':>5} {'TFLOPs':>9} {'attn':>6}"]
    for i, s in enumerate(c.stages, 1):
        lines.append(f"{i:>5} {s.tokens:>7} {s.steps:>5} {s.evaluations:>5} {s.full_calls:>5} {s.tflops:>9.1f} "
                     f"{s.attention_share:>6.1%}")
    if c.references is not None:
        lines.insert(1, f"{c.reference_images} reference image(s), references '{c.references}': reference tokens per "
                        f"call by stage {', '.join(str(s.reference_tokens) for s in c.stages)} "
                        f"(baseline {c.baseline_stage.reference_tokens})")
    lines += [f"text encoding       {c.text_encoding_tflops:9.2f}"]
    if c.image_encoding_tflops:
        lines += [f"image encoding      {c.image_encoding_tflops:9.2f}"]
    lines += [f"edge decodes        {sum(c.edge_decode_tflops):9.2f}",
              f"final decode        {c.decode_tflops:9.2f}",
              f"total               {c.tflops:9.1f}",
              f"baseline ({c.baseline_steps} steps) {c.baseline_tflops:9.1f}",
              f"predicted speed-up  {c.speedup:9.2f}x",
              f"attention share of the transformer's FLOPs (full convention): {c.attention_share:.1%} "
              f"(baseline {c.baseline_attention_share:.1%})"]
    return "\n".join(lines)
