"""FLUX.1 (dev and schnell) through diffusers' ``FluxPipeline`` components, and FLUX.1 Kontext
through ``FluxKontextPipeline``'s.

Positions: ids ``(0, row, col)`` (:mod:`ralu_torch.tokens`' coordinate rule), FLUX's rotary
over text then image ids. Guidance: the distilled guidance embedding, and FluxPipeline's
true CFG (a negative prompt with ``true_cfg_scale > 1``: a second call per step).

Kontext appends its reference image's tokens with ids ``(1, row, col)`` after the generated
image's (:mod:`.references`: at full resolution, or at each stage's with the coordinate rule),
and sizes its output by ``max_area`` (the area kept, the aspect ratio of ``height x width``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from ralu_schedule._errors import check_finite, check_positive_int

from .conditions import check_batch, check_generators, check_image, check_mask

from ..tokens import latent_tokens, unpack
from . import rotary
from .img2img import ImageStart
from .base import (BranchConditioning, EmbeddingInputs, Guided, RotaryBackend, RotaryPositions, check_negative_batch,
                   check_same_shape, joint_kwargs, stock_timestep)
from .references import ReferenceBackend, ReferenceGuided, check_grids, reference_batch, stage_reference_ids, \
    stock_default, with_references


@dataclass
class FluxInputs(BranchConditioning):
    """One FLUX call's text inputs."""

    BATCHED = ("prompt_embeds", "pooled_prompt_embeds", "guidance")

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    text_ids: torch.Tensor
    guidance: torch.Tensor | None
    joint_attention_kwargs: dict | None


def image_ids(pos: torch.Tensor) -> torch.Tensor:
    """FLUX's ``(N, 3)`` image ids ``(0, row, col)`` of ``(N, 2)`` float positions."""
    return torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1).to(torch.float32)


def per_image_tables(pos_embed, txt_ids: torch.Tensor, img_ids: torch.Tensor) -> tuple:
    """FLUX's rotary ``(cos, sin)`` per image, each :class:`~.rotary.PerImage` of ``(B, T + L, D)``,
    from the transformer's ``pos_embed``, shared text ids ``(T, 3)`` and per-image ids
    ``(B, L, 3)``: every image sees the text, then its own tokens."""
    B, L, _ = img_ids.shape
    cos, sin = pos_embed(torch.cat([txt_ids, img_ids.reshape(B * L, img_ids.shape[-1])]))
    T = txt_ids.shape[0]
    per_image = lambda t: torch.cat([t[:T].expand(B, -1, -1), t[T:].view(B, L, -1)], dim=1)  # noqa: E731
    return rotary.PerImage(per_image(cos)), rotary.PerImage(per_image(sin))


def _probe() -> bool:
    from diffusers.models.transformers import transformer_flux

    return rotary.probe_real(functools.partial(transformer_flux.apply_rotary_emb, sequence_dim=1))


class FluxLayout(RotaryBackend):
    """FLUX.1's transformer as RALU sees it, whatever conditions it: 2x2-patch tokens of 16
    latent channels, double- then single-stream blocks, ids ``(0, row, col)`` and per-image
    rotary tables over text then image ids. FLUX.1 and Chroma (FLUX.1-schnell's architecture)
    differ only in their conditioning and call."""

    default_max_sequence_length = 512
    max_sequence_length_limit = 512
    rotary_probe = _probe
    block_lists = ("transformer_blocks", "single_transformer_blocks")

    def __init__(self, pipe):
        super().__init__(pipe)
        c = self.transformer.config                                   # 64: 16 channels x 2 x 2 (a Fill or
        self.features = c.out_channels or c.in_channels                # Control model takes more in)
        self.latent_channels = self.features // 4
        self.pixels_per_token = pipe.vae_scale_factor * 2             # 16

    def stock_processors(self) -> tuple:
        from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

        return (FluxAttnProcessor,)

    def ids(self, pos: torch.Tensor, tokens) -> torch.Tensor:
        return image_ids(pos)

    def rotary(self, pos: torch.Tensor, tokens, cond) -> tuple:
        ids = stage_reference_ids(torch.stack([image_ids(p) for p in pos]), tokens, cond)
        return per_image_tables(self.transformer.pos_embed, cond.positive.text_ids.float(), ids)


class FluxBackend(FluxLayout):
    name = "flux"
    default_guidance_scale = 3.5
    text_encoders = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    embedding_inputs = EmbeddingInputs(
        {"prompt_embeds": 3, "pooled_prompt_embeds": 2, "negative_prompt_embeds": 3, "negative_pooled_prompt_embeds": 2},
        requires={"prompt_embeds": ("pooled_prompt_embeds",),
                  "negative_prompt_embeds": ("negative_pooled_prompt_embeds",)})

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_2=None, prompt_embeds=None, pooled_prompt_embeds=None, negative_prompt=None,
               negative_prompt_2=None, negative_prompt_embeds=None, negative_pooled_prompt_embeds=None,
               true_cfg_scale: float = 1.0) -> Guided:
        """As FluxPipeline: true classifier-free guidance when ``true_cfg_scale > 1`` and a
        negative prompt (or negative embeddings) is given, one more transformer call per step."""
        lora_scale = (joint_attention_kwargs or {}).get("scale")
        enc = functools.partial(self.pipe.encode_prompt, device=device, num_images_per_prompt=num_images_per_prompt,
                                max_sequence_length=max_sequence_length, lora_scale=lora_scale)
        embeds, pooled, text_ids = enc(prompt=prompt, prompt_2=prompt_2, prompt_embeds=prompt_embeds,
                                       pooled_prompt_embeds=pooled_prompt_embeds)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([embeds.shape[0]], guidance_scale, device=device, dtype=torch.float32)
        has_negative = negative_prompt is not None or negative_prompt_embeds is not None
        true_cfg_scale = check_finite("true_cfg_scale", true_cfg_scale)
        if has_negative and true_cfg_scale <= 1:
            raise ValueError(f"a negative prompt on FLUX.1 needs true_cfg_scale > 1 (FluxPipeline's true CFG), got "
                             f"{true_cfg_scale:g}; without it the negative prompt would be ignored")
        positive = FluxInputs(embeds, pooled, text_ids, guidance, joint_attention_kwargs)
        negative = None
        if true_cfg_scale > 1 and has_negative:
            check_same_shape(type(self.pipe).__name__, prompt_embeds, negative_prompt_embeds)
            n_embeds, n_pooled, n_ids = enc(prompt=negative_prompt, prompt_2=negative_prompt_2,
                                            prompt_embeds=negative_prompt_embeds,
                                            pooled_prompt_embeds=negative_pooled_prompt_embeds)
            check_negative_batch(embeds, n_embeds)
            negative = FluxInputs(n_embeds, n_pooled, n_ids, guidance, joint_attention_kwargs)
        return FluxGuided(positive, negative, float(true_cfg_scale), text_tokens=embeds.shape[1])

    def forward(self, x, ids, sigma, branch: FluxInputs, rotary=None) -> torch.Tensor:
        dtype = branch.prompt_embeds.dtype
        return self.transformer(hidden_states=x.to(dtype), timestep=stock_timestep(sigma, x.shape[0], dtype),
                                guidance=branch.guidance, pooled_projections=branch.pooled_prompt_embeds,
                                encoder_hidden_states=branch.prompt_embeds, txt_ids=branch.text_ids, img_ids=ids,
                                joint_attention_kwargs=joint_kwargs(branch.joint_attention_kwargs, rotary),
                                return_dict=False)[0]

    def cost_spec(self):
        """The cost model's description of this transformer (from its config)."""
        from ralu_schedule.cost import TransformerSpec

        c = self.transformer.config
        return TransformerSpec(family="flux", double=c.num_layers, single=c.num_single_layers,
                               heads=c.num_attention_heads, head_dim=c.attention_head_dim, token_features=c.in_channels,
                               context_dim=c.joint_attention_dim, pooled_dim=c.pooled_projection_dim,
                               guidance_embeds=c.guidance_embeds)


@dataclass
class FluxGuided(Guided):
    """FLUX's conditioning: callbacks also see the pooled embeddings."""

    def callback_tensors(self) -> dict:
        return {**super().callback_tensors(), "pooled_prompt_embeds": self.positive.pooled_prompt_embeds}

    def update(self, values: dict) -> None:
        super().update(values)
        if "pooled_prompt_embeds" in values:
            self.positive = dataclasses.replace(self.positive, pooled_prompt_embeds=values["pooled_prompt_embeds"])


# -- channel-concatenated conditions: FluxFillPipeline, FluxControlPipeline ------------------------------------
@dataclass
class FluxConditioned(FluxGuided):
    """FLUX conditioning with condition latents concatenated to every step's latents:
    ``condition``, the full-resolution condition latent ``(B, C, H/8, W/8)`` (float32; packed, it
    is what the stock pipeline concatenates), or ``deferred``, the call that makes it once the
    sampler has drawn its first noise (FluxFillPipeline samples the masked image's latents from
    the generator after its noise); ``selection_pixels``: the condition image at the output size
    in ``[-1, 1]`` (``select="condition"``), or None where the condition came as latents."""

    condition: torch.Tensor | None = None
    deferred: object = None
    selection_pixels: torch.Tensor | None = None

    def ready(self) -> torch.Tensor:
        if self.condition is None:
            self.condition, self.deferred = self.deferred(), None
        return self.condition


@dataclass
class ConcatPositions(RotaryPositions):
    """A stage's rotary positions and its condition tokens ``(B, L, condition features)``."""

    condition: torch.Tensor | None = None


class FluxConcatBackend(FluxBackend):
    """A FLUX.1 model whose input is the latent's tokens followed by condition tokens (``in_channels =
    64 + condition features``). A stage's tokens read the full-resolution condition by the one rule,
    :func:`~ralu_torch.tokens.latent_tokens` (each token: the condition pooled over the cells it
    covers); steps concatenate them to the state as the pipeline concatenates its packed ones."""

    conditioned = True
    pipeline_name = ""
    condition_features = 0          # the condition's values per token (the pipeline's own)

    def __init__(self, pipe):
        super().__init__(pipe)
        width = self.transformer.config.in_channels
        if width != self.features + self.condition_features:
            raise ValueError(f"{self.pipeline_name} gives its transformer {self.features + self.condition_features} "
                             f"values per token ({self.features} latent + {self.condition_features} condition); this "
                             f"transformer takes {width} (load the {self.pipeline_name} model's transformer)")

    #: the arguments of ``encode`` that are the prompt's (FluxPipeline's, without its true CFG)
    TEXT = ("prompt", "prompt_2", "prompt_embeds", "pooled_prompt_embeds", "num_images_per_prompt",
            "max_sequence_length", "guidance_scale", "joint_attention_kwargs", "device")

    def text(self, args: dict) -> FluxConditioned:
        """The prompt's conditioning as FluxPipeline encodes it, from ``encode``'s arguments ``args``
        (these pipelines have no true CFG)."""
        guided = FluxBackend.encode(self, **{k: args[k] for k in self.TEXT})
        return FluxConditioned(**{f.name: getattr(guided, f.name) for f in dataclasses.fields(guided)})

    def prepare(self, tokens, cond: FluxConditioned) -> ConcatPositions:
        pos = super().prepare(tokens, cond)
        return ConcatPositions(pos.ids, pos.rotary, pos.per_image, condition=latent_tokens(cond.ready(), tokens))

    def velocity(self, x, positions: ConcatPositions, sigma, cond) -> torch.Tensor:
        return super().velocity(torch.cat([x, positions.condition], dim=-1), positions, sigma, cond)


class FluxFillBackend(FluxConcatBackend):
    """``FluxFillPipeline`` (FLUX.1 Fill): the masked image's latents (64 values per token) and the
    mask (256: the 8 x 8 pixels of each latent pixel's 2 x 2 patch) after the latent; guidance 30 by
    default, as the pipeline. At a coarse token the mask reads the fraction of its pixels masked (the
    rule pools it: see docs/conditioned.md)."""

    pipeline_name = "FluxFillPipeline"
    default_guidance_scale = 30.0
    condition_features = 64 + 256

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_2=None, prompt_embeds=None, pooled_prompt_embeds=None, image=None, mask_image=None,
               masked_image_latents=None, strength=1.0, height=None, width=None, generator=None,
               latents=None) -> FluxConditioned:
        """As FluxFillPipeline at ``strength`` 1: the image encoded first (its draw from the generator
        precedes the noise's, so a seed gives the stock noise), the masked image's latents and the
        mask made by its ``prepare_mask_latents`` after the sampler's first noise."""
        pipe, name = self.pipe, self.pipeline_name
        if masked_image_latents is not None:
            raise ValueError(f"{name} refuses image= with masked_image_latents= and cannot run without image=, so "
                             "masked_image_latents= cannot be used; give image= and mask_image=")
        strength = check_finite("strength", strength)
        if strength != 1.0:
            raise ValueError(f"{name} with strength < 1 starts from the noised image (img2img), which RALU does not "
                             f"run for a fill model; strength must be 1 (the default), got {strength:g}")
        shape = check_image("image", image, pipeline=name)
        masks = check_mask("mask_image", mask_image, shape)
        if 1 not in (shape[0], masks) and shape[0] != masks:
            raise ValueError(f"got {shape[0]} images and {masks} masks; give as many of each, or one of either")
        cond = self.text(locals())
        batch, dtype = cond.batch, cond.prompt_embeds.dtype
        check_batch("image", shape[0], batch)
        check_batch("mask_image", masks, batch)
        check_generators(generator, batch)
        init = pipe.image_processor.preprocess(image, height=height, width=width).to(dtype=torch.float32)
        mask = pipe.mask_processor.preprocess(mask_image, height=height, width=width)
        if latents is None:                       # the stock draws the image's latents here (unused at strength 1)
            pipe._encode_vae_image(init.to(device=device, dtype=dtype), generator)
        masked = (init * (1 - mask)).to(device=device, dtype=dtype)
        grid = (height // self.pixels_per_token, width // self.pixels_per_token)

        def condition():
            m, lat = pipe.prepare_mask_latents(mask, masked, batch // num_images_per_prompt, pipe.latent_channels,
                                               num_images_per_prompt, height, width, dtype, device, generator)
            return unpack(torch.cat((lat, m), dim=-1).float(), grid)

        cond.deferred = condition
        cond.selection_pixels = masked.float().repeat(batch // masked.shape[0], 1, 1, 1)
        return cond


class FluxControlBackend(FluxConcatBackend):
    """``FluxControlPipeline`` (FLUX.1 Canny/Depth): the control image's latents (64 values per
    token) after the latent; ``control_image`` a picture (encoded by the VAE, sampled from the
    generator before the noise, as the pipeline) or packed latents ``(B, L, 64)`` at the output size."""

    pipeline_name = "FluxControlPipeline"
    condition_features = 64

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_2=None, prompt_embeds=None, pooled_prompt_embeds=None, control_image=None, height=None,
               width=None, generator=None) -> FluxConditioned:
        pipe, name = self.pipe, self.pipeline_name
        grid = (height // self.pixels_per_token, width // self.pixels_per_token)
        packed = isinstance(control_image, torch.Tensor) and control_image.dim() == 3
        if packed:
            want = (grid[0] * grid[1], self.features)
            if tuple(control_image.shape[1:]) != want:
                raise ValueError(f"control_image as packed latents must be (batch, {want[0]}, {want[1]}) at "
                                 f"{height}x{width}, got {tuple(control_image.shape)}")
            count = control_image.shape[0]
        else:
            count = check_image("control_image", control_image, pipeline=name)[0]
        cond = self.text(locals())
        batch = cond.batch
        if count not in (1, batch // num_images_per_prompt):
            raise ValueError(f"got {count} control images for {batch // num_images_per_prompt} prompts; give one, or "
                             "one per prompt")
        check_generators(generator, batch)
        image = pipe.prepare_image(image=control_image, width=width, height=height, batch_size=batch,
                                   num_images_per_prompt=num_images_per_prompt, device=device, dtype=pipe.vae.dtype)
        if packed:
            cond.condition = unpack(image.float(), grid)
            return cond
        vae = pipe.vae.config                     # the pipeline's own encoding of the control image
        latent = pipe.vae.encode(image).latent_dist.sample(generator=generator)
        cond.condition = ((latent - vae.shift_factor) * vae.scaling_factor).float()
        cond.selection_pixels = image.float()
        return cond


class FluxImg2ImgBackend(ImageStart, FluxBackend):
    """``FluxImg2ImgPipeline``: FLUX.1 from an image (:mod:`.img2img`), its defaults (guidance
    7.0, strength 0.6), the image encoded by the pipeline's ``_encode_vae_image``."""
@dataclass
class KontextGuided(FluxGuided, ReferenceGuided):
    """FLUX.1 Kontext's conditioning: FLUX's, and the reference image."""


class FluxKontextBackend(ReferenceBackend, FluxBackend):
    """``FluxKontextPipeline``: FLUX.1's call with the reference image's tokens appended, ids
    ``(1, row, col)``; the output sized by ``max_area``; the reference resized to the nearest
    of Kontext's preferred resolutions unless ``_auto_resize=False``, as the pipeline does."""

    def join_ids(self, ids, stage):
        return torch.cat([ids, *(i.to(ids) for i in stage.ids)])

    def call_size(self, prompt, height, width, kwargs) -> tuple:
        """The pipeline's output size: ``height x width`` (default 1024 x 1024) rescaled to
        ``max_area`` pixels at its aspect ratio, each side floored to a multiple of 16."""
        height = check_positive_int("height", self.default_height if height is None else height)
        width = check_positive_int("width", self.default_width if width is None else width)
        max_area = kwargs.get("max_area")
        max_area = stock_default(self.pipe, "max_area") if max_area is None else max_area
        max_area = check_finite("max_area", max_area)
        if max_area <= 0:
            raise ValueError(f"max_area must be a positive number of pixels, got {max_area:g}")
        aspect_ratio = width / height
        multiple = self.pipe.vae_scale_factor * 2
        width = round((max_area * aspect_ratio) ** 0.5) // multiple * multiple
        height = round((max_area / aspect_ratio) ** 0.5) // multiple * multiple
        if not height or not width:
            raise ValueError(f"max_area {max_area:g} leaves no {multiple}-pixel row or column at aspect ratio "
                             f"{aspect_ratio:g}; give a larger max_area")
        return height, width

    def encode(self, *, image=None, generator=None, max_area=None, _auto_resize=None, **text) -> Guided:
        """FLUX.1's conditioning (:meth:`FluxBackend.encode`) and the reference image, preprocessed
        and encoded as ``FluxKontextPipeline`` does (its ``prepare_latents``), checked before
        the VAE runs."""
        cond = super().encode(**text)
        if image is None:
            return with_references(cond, None, KontextGuided)
        pipe = self.pipe
        auto = stock_default(pipe, "_auto_resize") if _auto_resize is None else _auto_resize
        latent_input = isinstance(image, torch.Tensor) and image.dim() == 4 and image.size(1) == pipe.latent_channels
        if not latent_input:
            image = self._preprocess(image, bool(auto))
        scale = 1 if latent_input else pipe.vae_scale_factor
        rows, cols = image.shape[2] // scale // 2, image.shape[3] // scale // 2
        reference_batch(image.shape[0], cond.batch, type(pipe).__name__)
        check_grids([(rows, cols)], self._first_size, self.reference_mode, "reference image")
        embeds = cond.positive.prompt_embeds
        channels = self.transformer.config.in_channels // 4
        # the pipeline's own encoding, batching, packing and ids; the noise it would draw is the sampler's
        # (a placeholder is passed for it), and the generated image's size only sets ids discarded here
        placeholder = torch.empty(0, device=embeds.device, dtype=embeds.dtype)
        _, latents, _, ids = pipe.prepare_latents(image, cond.batch, channels, 16 * rows, 16 * cols, embeds.dtype,
                                                  embeds.device, generator, placeholder)
        refs = self.references([latents], [(rows, cols)], [ids.float()])
        return with_references(cond, refs, KontextGuided)

    def _preprocess(self, image, auto_resize: bool) -> torch.Tensor:
        """The reference as ``FluxKontextPipeline`` preprocesses it: its size (from the first
        image), the nearest preferred Kontext resolution when ``auto_resize``, floored to
        multiples of 16 pixels, resized and normalised by the pipeline's image processor."""
        from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

        processor = self.pipe.image_processor
        first = image[0] if isinstance(image, list) else image
        try:
            image_height, image_width = processor.get_default_height_width(first)
        except (AttributeError, IndexError, TypeError):
            raise ValueError(f"FluxKontextPipeline takes image= as a PIL image, a numpy array or a (B, 3, H, W) tensor "
                             f"(or a list of them), or its latents (B, {self.pipe.latent_channels}, h, w); got "
                             f"{type(first).__name__} {tuple(getattr(first, 'shape', ()))}") from None
        aspect_ratio = image_width / image_height
        if auto_resize:
            _, image_width, image_height = min((abs(aspect_ratio - w / h), w, h)
                                               for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
        multiple = self.pipe.vae_scale_factor * 2
        image_width, image_height = image_width // multiple * multiple, image_height // multiple * multiple
        if not image_width or not image_height:
            raise ValueError(f"a reference image must be at least {multiple}x{multiple} pixels, got "
                             f"{image_height}x{image_width} after the pipeline's rounding")
        image = processor.resize(image, image_height, image_width)
        return processor.preprocess(image, image_height, image_width)
