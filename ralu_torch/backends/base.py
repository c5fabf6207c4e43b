"""The backend contract, as code, and what every diffusers-pipeline backend shares.

:class:`SamplerBackend` is all that :func:`ralu_torch.sampler.sample` asks of a model: its
device and dtype, the token layout (features per token, latent channels, pixels per token,
how its first noise is laid out), ``prepare(tokens, conditioning)`` once per stage,
``velocity(tokens, positions, sigma, conditioning)`` each step, and ``decode``.
:class:`PipelineBackend` adds what :class:`ralu_torch.RALU` needs to run a diffusers
pipeline: prompt encoding, the scheduler's shift rule, the pipeline's own latent format and
its defaults, and the price of a call. Every family, and the analytic Gaussian backend,
conforms; the tests check it with ``isinstance``.

What the diffusers families share lives here once:

- :class:`DiffusersBackend`: device, dtype, the shift rule read from the scheduler config,
  regional compilation, the VAE decode, the price of a velocity from the cost model;
- :class:`Guided`: conditioning with classifier-free guidance by separate transformer calls
  (FLUX.1's true CFG, Chroma, FLUX.2 [klein] base, Qwen-Image with its per-token rescale):
  the branches, their cache-context names, and the combination;
- :func:`stock_timestep`: the timestep as the FLUX-style pipelines round it;
- :class:`RotaryBackend`: positions for transformers that take rotary position ids (FLUX.1,
  Chroma, FLUX.2, Qwen-Image): one set of ids when every image holds the same tokens,
  per-image rotary tables through the stock processors (:mod:`.rotary`) when they differ,
  one call per image when the processors cannot be wrapped.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from ralu_schedule import ShiftRule

from ..caches import model_call
from ..tokens import pack, unpack
from . import rotary as rotary_module


@runtime_checkable
class SamplerBackend(Protocol):
    """What the sampler needs of a model."""

    features: int            # values per token (FLUX and SD3: 16 channels x 2 x 2 = 64)
    latent_channels: int     # channels of the latent the first noise is drawn as
    pixels_per_token: int    # decoded pixels per token side (FLUX and SD3: 16)
    noise_layout: str        # how the first noise is drawn (ralu_torch.tokens.NOISE_LAYOUTS)

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def prepare(self, tokens, cond: Any) -> Any:
        """The model's form of a stage's positions (ids, embeddings, index maps), built once
        per stage from the :class:`~ralu_torch.tokens.TokenSet` so that steps do no bookkeeping."""

    def velocity(self, x: torch.Tensor, positions: Any, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """Float32 velocity ``(B, L, features)`` of tokens ``x`` at prepared ``positions`` and
        ``sigma`` (a float32 scalar tensor on the device). No host synchronisation: a whole
        step must be capturable in a CUDA graph."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents ``(B, C, h, w)`` to images in ``[-1, 1]``."""

    # Optional: ``before_call(sigma: float, step: int, steps: int)``: the next call's sigma, its
    # index among the run's model calls and the run's step count, all host values (read from the
    # schedule, never from the device), for a backend whose call depends on the noise level (Wan
    # 2.2's two experts) or on the step (SD3's skip-layer guidance window).


@runtime_checkable
class PipelineBackend(SamplerBackend, Protocol):
    """What :class:`ralu_torch.RALU` needs beyond the sampler: a diffusers pipeline's side."""

    name: str
    default_guidance_scale: float | None
    default_max_sequence_length: int

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale,
               joint_attention_kwargs, device, **prompt_kwargs) -> Any:
        """Conditioning for ``velocity``: a ``batch`` attribute (images per call), the
        tensors a step callback may read and replace (``callback_tensors``/``update``)."""

    def shift_rule(self) -> ShiftRule:
        """The base shift rule of the pipeline's scheduler (``h0`` at a token count)."""

    @property
    def latents_dtype(self) -> torch.dtype:
        """The dtype of the pipeline's final latents: what it returns for ``output_type="latent"``
        and decodes from."""

    def pipeline_latents(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """Final raster-order tokens in the form the pipeline returns for ``output_type="latent"``."""

    def from_pipeline_latents(self, latents: torch.Tensor, grid: tuple) -> torch.Tensor:
        """The inverse of :meth:`pipeline_latents`: raster-order tokens of what the pipeline returned."""

    def pipeline_input(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """Raster-order tokens in the form the pipeline takes as ``latents=``."""

    def compile(self, options: dict) -> None:
        """Compile the model's blocks in place with ``torch.compile(**options)``."""

    def call_tflops(self, tokens: int, cond: Any) -> float:
        """Transformer TFLOPs (paper convention) of one velocity for one image at ``tokens``
        image tokens: every transformer call a step makes, guidance included."""


def stock_timestep(sigma: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """The timestep FLUX-style pipelines feed their transformer: ``t = 1000 sigma`` rounded to
    the model dtype, then divided by 1000 (``t.expand(B).to(dtype) / 1000``)."""
    return (sigma * 1000).expand(batch).to(dtype) / 1000


def batched_slice(value, b: int):
    """Image ``b`` of a batch-first tensor or list (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return type(value)(value[b:b + 1])
    return value[b:b + 1]


class BranchConditioning:
    """A dataclass of one transformer call's inputs whose ``BATCHED`` fields are batch-first.
    Families' branch classes derive from it."""

    BATCHED: ClassVar[tuple] = ()

    def image(self, b: int):
        """The inputs of image ``b`` alone."""
        return dataclasses.replace(self, **{k: batched_slice(getattr(self, k), b) for k in self.BATCHED})


@dataclasses.dataclass
class Guided:
    """Conditioning of a pipeline that guides with separate transformer calls.

    ``positive`` (and ``negative`` when guidance is on) are one call's inputs each (a family's
    :class:`BranchConditioning`). The guided velocity is ``neg + scale (pos - neg)``, as
    FluxPipeline's true CFG, ChromaPipeline and Flux2KleinPipeline compute it; with
    ``rescale`` (QwenImagePipeline) it is then scaled per token to the positive velocity's
    norm. The calls are named ``"cond"`` and ``"uncond"`` for diffusers' caches, as the stock
    pipelines name them.
    """

    positive: Any
    negative: Any | None = None
    scale: float = 1.0
    rescale: bool = False
    text_tokens: int = 0

    @property
    def batch(self) -> int:
        return self.positive.prompt_embeds.shape[0]

    @property
    def calls(self) -> int:
        return 1 if self.negative is None else 2

    @property
    def prompt_embeds(self):
        return self.positive.prompt_embeds

    def branches(self) -> list:
        out = [("cond", self.positive)]
        if self.negative is not None:
            out.append(("uncond", self.negative))
        return out

    def run(self, transformer, call, prefix: str = "") -> torch.Tensor:
        """``call(branch)`` for each branch, inside the transformer's cache context of that
        branch's name, in float32, combined."""
        outputs = []
        for name, branch in self.branches():
            with model_call(transformer, prefix + name):
                outputs.append(call(branch).float())
        return self.combine(outputs)

    def combine(self, outputs: list) -> torch.Tensor:
        if self.negative is None:
            return outputs[0]
        pos, neg = outputs
        guided = neg + self.scale * (pos - neg)
        if self.rescale:
            guided = guided * (torch.norm(pos, dim=-1, keepdim=True) / torch.norm(guided, dim=-1, keepdim=True))
        return guided

    def image(self, b: int) -> "Guided":
        return dataclasses.replace(self, positive=self.positive.image(b),
                                   negative=None if self.negative is None else self.negative.image(b))

    def callback_tensors(self) -> dict:
        out = {"prompt_embeds": self.positive.prompt_embeds}
        if self.negative is not None:
            out["negative_prompt_embeds"] = self.negative.prompt_embeds
        return out

    def update(self, values: dict) -> None:
        """Take back what a step callback returned (``prompt_embeds``, ``negative_prompt_embeds``)."""
        if "prompt_embeds" in values:
            self.positive = dataclasses.replace(self.positive, prompt_embeds=values["prompt_embeds"])
        if "negative_prompt_embeds" in values and self.negative is not None:
            self.negative = dataclasses.replace(self.negative, prompt_embeds=values["negative_prompt_embeds"])


@dataclasses.dataclass(frozen=True)
class EmbeddingInputs:
    """The embedding arguments a pipeline takes in place of prompts: ``forms`` maps each name
    to its form, a number of tensor dimensions (batch first) or ``"list"`` (a list of 2-D
    ``(tokens, width)`` tensors, one per image, as Z-Image takes them); ``requires`` maps a
    name to those it cannot go without; ``masks`` maps a mask to the embeddings it masks (its
    shape is theirs without the width); ``bool_masks``: masks must be boolean (a pipeline whose
    attention takes them as they are: an integer mask fails inside torch there).

    Embeddings must be floating-point and hold at least one image and one token: integer or
    empty ones would fail inside torch or diffusers (or, for some pipelines, condition on
    nothing), so they are refused here by name."""

    forms: dict
    requires: dict = dataclasses.field(default_factory=dict)
    masks: dict = dataclasses.field(default_factory=dict)
    bool_masks: bool = False

    def describe(self) -> str:
        first = next(iter(self.forms))
        needs = self.requires.get(first, ())
        return first + (f" with {' and '.join(needs)}" if needs else "")

    def check(self, name: str, value, width: int | None = None) -> None:
        """``value`` has ``name``'s form, a floating-point (masks: boolean where ``bool_masks``)
        dtype, at least one image and token, and, where ``width`` is given, that last dimension."""
        form = self.forms[name]
        if form == "list":
            if not isinstance(value, (list, tuple)) or not value or not all(
                    isinstance(v, torch.Tensor) and v.dim() == 2 for v in value):
                raise ValueError(f"{name} must be a list of 2-D (tokens, width) tensors, one per image, got "
                                 f"{type(value).__name__}{' (empty)' if isinstance(value, (list, tuple)) else ''}")
            for v in value:
                self._check_values(name, v)
            bad = next((tuple(v.shape) for v in value if width is not None and v.shape[-1] != width), None)
            if bad is not None:
                raise ValueError(f"{name} must be (tokens, {width}) tensors for this transformer, got one of {bad}")
            return
        if not isinstance(value, torch.Tensor) or value.dim() != form:
            raise ValueError(f"{name} must be a {form}-D tensor (batch first), got "
                             f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
        self._check_values(name, value)
        if width is not None and value.shape[-1] != width:
            raise ValueError(f"{name} must have width {width} (its last dimension, the transformer's "
                             f"{'pooled ' if 'pooled' in name else ''}text width), got {tuple(value.shape)}")

    def _check_values(self, name: str, value: torch.Tensor) -> None:
        """Non-empty; embeddings floating-point, masks boolean where the pipeline needs it."""
        if name in self.masks:
            if self.bool_masks and value.dtype != torch.bool:
                raise ValueError(f"{name} must be a boolean tensor (True for the tokens to attend to), got "
                                 f"{value.dtype}")
        elif not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if 0 in value.shape[:-1] or (name in self.masks and 0 in value.shape):
            raise ValueError(f"{name} must hold at least one image and one token, got shape {tuple(value.shape)}")

    def check_masks(self, given: dict) -> None:
        for mask, embeds in self.masks.items():
            if mask in given and embeds in given and tuple(given[mask].shape) != tuple(given[embeds].shape[:2]):
                raise ValueError(f"{mask} must be (batch, tokens) of {embeds}, {tuple(given[embeds].shape[:2])}, "
                                 f"got {tuple(given[mask].shape)}")

    def repeat(self, value, n: int):
        """Each image's embedding ``n`` times in a row (as ``num_images_per_prompt`` does)."""
        if isinstance(value, (list, tuple)):
            return [v for v in value for _ in range(n)]
        return value.repeat_interleave(n, dim=0)


@contextlib.contextmanager
def lora_scaled(model, attention_kwargs: dict | None):
    """What diffusers' ``apply_lora_scale`` does around a transformer's ``forward``, for the
    backends that run the transformer's modules themselves (SD3, Z-Image, Wan): its LoRA layers
    scaled by ``attention_kwargs["scale"]`` for the call. Yields the kwargs without ``scale``,
    which is what the blocks receive."""
    kwargs = dict(attention_kwargs or {})
    scale = kwargs.pop("scale", None)
    if scale is not None:
        from diffusers.utils import scale_lora_layers

        scale_lora_layers(model, scale)
    try:
        yield kwargs or None
    finally:
        if scale is not None:
            from diffusers.utils import unscale_lora_layers

            unscale_lora_layers(model, scale)


def check_negative_batch(positive: torch.Tensor, negative: torch.Tensor) -> None:
    if negative.shape[0] != positive.shape[0]:
        raise ValueError(f"negative prompts give {negative.shape[0]} embeddings for {positive.shape[0]} prompts; "
                         "give one negative prompt per prompt, or one for all")


#: What guidance encodes when no negative prompt is given (:meth:`DiffusersBackend.require_text_encoder`).
EMPTY_NEGATIVE = "the empty negative prompt that guidance uses"


def check_same_shape(pipeline: str, positive: torch.Tensor | None, negative: torch.Tensor | None) -> None:
    """FluxPipeline's and StableDiffusion3Pipeline's rule for embeddings passed directly: a
    negative the shape of the positive (they batch or compare them token by token)."""
    if positive is not None and negative is not None and positive.shape != negative.shape:
        raise ValueError(f"prompt_embeds and negative_prompt_embeds must have the same shape ({pipeline}'s rule), "
                         f"got {tuple(positive.shape)} and {tuple(negative.shape)}")


class DiffusersBackend:
    """Device, dtype, scheduler shift rule, compilation, decode and pricing, shared by every
    diffusers family."""

    default_guidance_scale: float | None
    default_max_sequence_length: int
    noise_layout: str = "latent"
    #: the form of the pipeline's latents, returned (``output_type="latent"``) and taken
    #: (``latents=``): "packed" raster-order tokens, or the 4-D "latent"
    output_form: str = "packed"
    input_form: str = "packed"
    #: the mu rule the pipeline applies to its scheduler (ralu_schedule.shift.MU_RULES)
    mu_rule: str = "linear"
    embedding_inputs: EmbeddingInputs = EmbeddingInputs({"prompt_embeds": 3})
    #: the transformer's module lists of repeated blocks, in order (:meth:`blocks`)
    block_lists: tuple = ("transformer_blocks",)
    #: the transformer config's field giving the text embeddings' width (:meth:`embedding_widths`)
    text_width_field: str = "joint_attention_dim"
    #: the largest ``max_sequence_length`` the pipeline takes (its ``check_inputs``), or None
    max_sequence_length_limit: int | None = None
    #: the components a prompt's encoding needs (:meth:`require_text_encoder`)
    text_encoders: tuple = ("text_encoder", "tokenizer")

    def __init__(self, pipe):
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.vae = pipe.vae

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def latents_dtype(self) -> torch.dtype:
        """The transformer's: the pipelines run their latents in the embeddings' dtype (FLUX.1, SD3,
        FLUX.2, Chroma, Qwen-Image), or their scheduler's steps return the model output's (Wan);
        Z-Image keeps its latents in float32."""
        return self.dtype

    @property
    def default_size(self) -> int:
        """The pipeline's image side when none is given."""
        return self.pipe.default_sample_size * self.pipe.vae_scale_factor

    @property
    def default_height(self) -> int:
        return self.default_size

    @property
    def default_width(self) -> int:
        return self.default_size

    def first_noise(self, latents):
        """The caller's ``latents=`` in the form the sampler takes (a video backend reshapes a clip)."""
        return latents

    def postprocess(self, decoded: torch.Tensor, output_type: str):
        """Decoded images in ``[-1, 1]`` as the pipeline returns them for ``output_type``."""
        return self.pipe.image_processor.postprocess(decoded, output_type=output_type)

    def shift_rule(self) -> ShiftRule:
        """The base shift rule of the pipeline's own scheduler config (and ``shift_terminal``)."""
        return ShiftRule.from_scheduler_config(self.pipe.scheduler.config, mu_rule=self.mu_rule)

    def blocks(self) -> list:
        """The transformer's repeated blocks, which regional compilation compiles: its module
        lists named in ``block_lists``, in order."""
        return [block for name in self.block_lists for block in getattr(self.transformer, name)]

    def compile(self, options: dict) -> None:
        """Compile every transformer block in place with ``torch.compile`` (dynamic shapes by
        default, so that stage token counts and batch sizes reuse one graph per block)."""
        for block in self.blocks():
            block.compile(**{"dynamic": True, **options})

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents ``(B, C, h, w)`` to images in ``[-1, 1]``, as the pipeline decodes."""
        cfg = self.vae.config
        z = latents / cfg.scaling_factor + cfg.shift_factor
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]

    def pipeline_latents(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        return tokens if self.output_form == "packed" else unpack(tokens, grid)

    def from_pipeline_latents(self, latents: torch.Tensor, grid: tuple) -> torch.Tensor:
        return latents if self.output_form == "packed" else pack(latents)

    def pipeline_input(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        return tokens if self.input_form == "packed" else unpack(tokens, grid)

    def require_text_encoder(self, what: str) -> None:
        """Refuse to encode ``what`` (a prompt, the empty negative prompt guidance uses) on a
        pipeline loaded without the components that encode it, which would fail inside diffusers."""
        missing = [name for name in self.text_encoders if getattr(self.pipe, name, None) is None]
        if missing:
            raise ValueError(f"this {type(self.pipe).__name__} has no {' and '.join(missing)}, so it cannot encode "
                             f"{what}; pass the embeddings instead (or load the pipeline with its text encoders)")

    def embedding_widths(self) -> dict:
        """The last dimension each embedding argument must have for this transformer: the text
        embeddings' (its config's ``text_width_field``), and the pooled ones' where the pipeline
        takes them (``embedding_inputs``)."""
        c = self.transformer.config
        width = getattr(c, self.text_width_field)
        widths = {"prompt_embeds": width, "negative_prompt_embeds": width}
        for name in ("pooled_prompt_embeds", "negative_pooled_prompt_embeds"):
            if name in self.embedding_inputs.forms:
                widths[name] = c.pooled_projection_dim
        return widths

    def cost_spec(self):
        """The cost model's description of this transformer (from its config)."""
        raise NotImplementedError

    def call_tflops(self, tokens: int, cond) -> float:
        return cond.calls * self.cost_spec().forward(tokens, cond.text_tokens).total("paper") / 1e12


@dataclasses.dataclass
class RotaryPositions:
    """A stage's positions for a rotary transformer: ``ids``, the model's position ids of a
    token set shared by the batch (or of the first image), with ``rotary`` the per-image
    replacement for ``image_rotary_emb`` when the images differ; or ``per_image``, one set
    of ids per image, for one call per image."""

    ids: Any
    rotary: Any = None
    per_image: list | None = None


class RotaryBackend(DiffusersBackend):
    """Positions, the guided velocity and the per-image fallback of rotary transformers.

    A family states only what differs: ``ids(pos, tokens)`` (its position ids for ``(L, 2)``
    float positions on the token set's frame), ``rotary(pos, tokens, cond)`` (the per-image
    replacement for ``image_rotary_emb`` of ``(B, L, 2)`` positions, built with the model's own
    rotary module), ``forward(x, ids, sigma, branch, rotary)`` (one transformer call), the
    processor classes (``stock_processors()``) and rotary probe (``rotary_probe``) of
    :mod:`.rotary`, and, for a model whose forward builds positions from a grid shape alone
    (Qwen-Image), ``stock_positions(tokens)``: whether its stock forward can place ``tokens``.
    """

    rotary_probe: Any = None

    def stock_processors(self) -> tuple:
        raise NotImplementedError

    def ids(self, pos: torch.Tensor, tokens) -> Any:
        raise NotImplementedError

    def rotary(self, pos: torch.Tensor, tokens, cond) -> Any:
        raise NotImplementedError

    def stock_positions(self, tokens) -> bool:
        """Whether the stock forward can place a token set shared by the batch (any positions)."""
        return True

    def forward(self, x, ids, sigma, branch, rotary=None) -> torch.Tensor:
        raise NotImplementedError

    def install(self) -> bool:
        """Wrap the stock attention processors for per-image tables (see :mod:`.rotary`)."""
        return rotary_module.install(self.transformer, self.stock_processors(), type(self).rotary_probe)

    def compile(self, options: dict) -> None:
        self.install()         # the processors the mixed stage uses, traced from the start
        super().compile(options)

    def prepare(self, tokens, cond) -> RotaryPositions:
        """Position ids of a stage's token set, built once (host work happens here, not per step).

        Equal token sets across the batch give the model's stock ids. Token sets that differ
        per image also get per-image rotary tables, so the whole batch still runs in one
        call; if the transformer uses an attention processor the adapters cannot wrap, the
        stage runs one call per image.
        """
        pos = tokens.positions()
        if bool((pos == pos[:1]).all()) and self.stock_positions(tokens):
            return RotaryPositions(self.ids(pos[0], tokens))
        if self.install():
            return RotaryPositions(self.ids(pos[0], tokens), rotary=self.rotary(pos, tokens, cond))
        if not self.stock_positions(tokens):
            raise ValueError(f"{type(self.transformer).__name__} uses an attention processor RALU cannot give per-token "
                             "positions to, so it cannot run a mixed-resolution stage; use its stock attention "
                             "processors (or a layout whose transitions all have fraction 1)")
        return RotaryPositions(None, per_image=[self.ids(p, tokens) for p in pos])

    def velocity(self, x: torch.Tensor, positions: RotaryPositions, sigma: torch.Tensor, cond) -> torch.Tensor:
        """``x`` (B, L, F) float32 tokens at prepared ``positions``, ``sigma`` a float32 scalar."""
        if positions.per_image is not None:
            return torch.cat([self._guided(x[b:b + 1], ids, sigma, cond.image(b), None, f"image{b}-")
                              for b, ids in enumerate(positions.per_image)])
        return self._guided(x, positions.ids, sigma, cond, positions.rotary)

    def _guided(self, x, ids, sigma, cond, rotary, prefix=""):
        return cond.run(self.transformer, lambda branch: self.forward(x, ids, sigma, branch, rotary), prefix)


def joint_kwargs(kwargs: dict | None, rotary) -> dict | None:
    """``joint_attention_kwargs`` with the per-image tables added for the wrapped processors."""
    if rotary is None:
        return kwargs
    return {**(kwargs or {}), "ralu_rotary": rotary}
