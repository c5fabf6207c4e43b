"""Stable Diffusion 3 / 3.5 through diffusers' ``StableDiffusion3Pipeline`` components.

SD3's transformer patchifies a 4-D latent itself and adds a fixed 2-D sin-cos position
embedding cropped from the centre of a ``pos_embed_max_size`` table. A mixed token set has
no 4-D latent, so :func:`forward_tokens` runs the same modules on patch tokens, with the
embedding evaluated at explicit, possibly fractional, table coordinates.

Coordinates: a token's position ``(row, col)`` (``ralu_torch.tokens``: top-left cell over
the coarsest token size) lives on a ``frame`` of ``rows x cols`` coarse tokens; the stock
model would centre that frame in the table, so the table coordinate is
``((P - rows) // 2 + row, (P - cols) // 2 + col)``. On a regular grid this is exactly the
stock crop; children of an upsampled token sit half a table step from their parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ralu_schedule._errors import brief, check_finite

from ..caches import model_call
from .base import EMPTY_NEGATIVE, DiffusersBackend, EmbeddingInputs, check_same_shape, lora_scaled
from .img2img import ImageStart, encode_each


def sincos_table_embedding(rows: torch.Tensor, cols: torch.Tensor, dim: int, table_size: int,
                           base_size: int) -> torch.Tensor:
    """SD3's 2-D sin-cos embedding at table coordinates ``(rows, cols)`` (any shape, floats).

    The stock table entry ``(r, c)`` encodes ``c * base_size / P`` in its first half and
    ``r * base_size / P`` in its second; integer coordinates give the table's entries.
    """
    scale = torch.tensor(table_size / base_size, dtype=torch.float32)
    half = dim // 2
    wide = torch.float32 if rows.device.type == "mps" else torch.float64   # as diffusers: no float64 on MPS
    omega = torch.arange(half // 2, dtype=wide, device=rows.device) / (half / 2.0)
    omega = 1.0 / 10000**omega

    def one_d(p):
        out = (p.to(torch.float32) / scale.to(p.device)).to(wide).reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    emb = torch.cat([one_d(cols), one_d(rows)], dim=1).float()
    return emb.view(*rows.shape, dim)


def table_coordinates(tokens, table_size: int):
    """Table coordinates ``(rows, cols)`` of a token set under the centred-crop rule."""
    pos = tokens.positions()
    fr, fc = tokens.frame
    if fr > table_size or fc > table_size:
        raise ValueError(f"a {fr}x{fc} token frame exceeds the model's {table_size}x{table_size} position table")
    return pos[..., 0] + (table_size - fr) // 2, pos[..., 1] + (table_size - fc) // 2


def forward_tokens(transformer, x: torch.Tensor, pos_embed: torch.Tensor, encoder_hidden_states, pooled_projections,
                   timestep, joint_attention_kwargs=None, skip_layers=None) -> torch.Tensor:
    """The transformer on patch tokens ``x`` (B, L, C*p*p), ordered ``(c, dy, dx)``; returns
    velocity tokens in the same order. ``pos_embed`` is (B or 1, L, D). ``skip_layers``
    skips those block indices, as the stock ``forward`` does."""
    pe = transformer.pos_embed
    w = pe.proj.weight
    h = F.linear(x.to(w.dtype), w.reshape(w.shape[0], -1), pe.proj.bias)   # the patch conv, as a linear map
    if pe.layer_norm:
        h = pe.norm(h)
    h = h + pos_embed.to(h.dtype)
    temb = transformer.time_text_embed(timestep, pooled_projections)
    enc = transformer.context_embedder(encoder_hidden_states)
    for index, block in enumerate(transformer.transformer_blocks):
        if skip_layers is not None and index in skip_layers:
            continue
        enc, h = block(hidden_states=h, encoder_hidden_states=enc, temb=temb,
                       joint_attention_kwargs=joint_attention_kwargs)
    h = transformer.proj_out(transformer.norm_out(h, temb))
    p, C = transformer.config.patch_size, transformer.out_channels
    B, L, _ = h.shape
    return h.view(B, L, p, p, C).permute(0, 1, 4, 2, 3).reshape(B, L, C * p * p)


@dataclass
class SkipLayerGuidance:
    """StableDiffusion3Pipeline's skip-layer guidance: under classifier-free guidance, at the steps
    ``i`` with ``steps * start < i < steps * stop`` (its window, in its arithmetic), one more call
    on the prompt's embeddings (those encoded, not a callback's) with ``layers`` skipped, and
    ``v += scale (v_text - v_skip)``."""

    layers: tuple
    scale: float
    start: float
    stop: float
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor

    def on(self, step, steps) -> bool:
        return step is not None and steps is not None and step > steps * self.start and step < steps * self.stop


@dataclass
class SD3Conditioning:
    prompt_embeds: torch.Tensor           # (2B or B, T, D): [uncond; cond] with guidance
    pooled_prompt_embeds: torch.Tensor
    guidance_scale: float
    joint_attention_kwargs: dict | None
    skip: SkipLayerGuidance | None = None

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def batch(self) -> int:
        n = self.prompt_embeds.shape[0]
        return n // 2 if self.guided else n

    @property
    def calls(self) -> int:
        """Forwards per image and step: 2 under guidance (one call on the doubled batch)."""
        return 2 if self.guided else 1

    @property
    def text_tokens(self) -> int:
        return self.prompt_embeds.shape[1]

    def callback_tensors(self) -> dict:
        return {"prompt_embeds": self.prompt_embeds, "pooled_prompt_embeds": self.pooled_prompt_embeds}

    def update(self, values: dict) -> None:
        for key in ("prompt_embeds", "pooled_prompt_embeds"):
            if key in values:
                setattr(self, key, values[key])


class SD3Backend(DiffusersBackend):
    name = "sd3"
    default_guidance_scale = 7.0
    output_form = input_form = "latent"
    default_max_sequence_length = 256
    max_sequence_length_limit = 512
    text_encoders = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")   # T5 is optional (zeros)
    embedding_inputs = EmbeddingInputs(
        {"prompt_embeds": 3, "pooled_prompt_embeds": 2, "negative_prompt_embeds": 3, "negative_pooled_prompt_embeds": 2},
        requires={"prompt_embeds": ("pooled_prompt_embeds",),
                  "negative_prompt_embeds": ("negative_pooled_prompt_embeds",)})

    def __init__(self, pipe):
        super().__init__(pipe)
        cfg = self.transformer.config
        if cfg.patch_size != 2:
            raise ValueError(f"the SD3 backend needs patch_size 2, got {cfg.patch_size}")
        self.latent_channels = cfg.in_channels
        self.features = cfg.in_channels * cfg.patch_size**2
        self.pixels_per_token = pipe.vae_scale_factor * cfg.patch_size
        self.table_size = cfg.pos_embed_max_size
        self.base_size = cfg.sample_size // cfg.patch_size
        self._step = (None, None)                      # the next call's (index, the run's steps): before_call

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_2=None, prompt_3=None, negative_prompt=None, negative_prompt_2=None,
               negative_prompt_3=None, prompt_embeds=None, negative_prompt_embeds=None, pooled_prompt_embeds=None,
               negative_pooled_prompt_embeds=None, clip_skip=None, skip_guidance_layers=None,
               skip_layer_guidance_scale=2.8, skip_layer_guidance_stop=0.2,
               skip_layer_guidance_start=0.01) -> SD3Conditioning:
        check_same_shape(type(self.pipe).__name__, prompt_embeds, negative_prompt_embeds)
        guided = guidance_scale > 1.0
        if guided and negative_prompt_embeds is None and negative_prompt is None:
            self.require_text_encoder(EMPTY_NEGATIVE)
        lora_scale = (joint_attention_kwargs or {}).get("scale")
        pe, npe, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=prompt_2, prompt_3=prompt_3, device=device,
            num_images_per_prompt=num_images_per_prompt, do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt, negative_prompt_2=negative_prompt_2, negative_prompt_3=negative_prompt_3,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            clip_skip=clip_skip, max_sequence_length=max_sequence_length, lora_scale=lora_scale)
        skip = None
        if skip_guidance_layers is not None:
            layers = skip_guidance_layers
            if not isinstance(layers, (list, tuple)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise ValueError(f"skip_guidance_layers must be a list of block indices, got {brief(layers)}")
            skip = SkipLayerGuidance(tuple(layers), check_finite("skip_layer_guidance_scale", skip_layer_guidance_scale),
                                     check_finite("skip_layer_guidance_start", skip_layer_guidance_start),
                                     check_finite("skip_layer_guidance_stop", skip_layer_guidance_stop), pe, pooled)
        if guided:  # unconditional first, as StableDiffusion3Pipeline batches them
            pe, pooled = torch.cat([npe, pe]), torch.cat([npooled, pooled])
        return SD3Conditioning(pe, pooled, float(guidance_scale), joint_attention_kwargs, skip)

    def position_embedding(self, tokens) -> torch.Tensor:
        rows, cols = table_coordinates(tokens, self.table_size)
        return sincos_table_embedding(rows, cols, self.transformer.inner_dim, self.table_size, self.base_size)

    def prepare(self, tokens, cond: SD3Conditioning) -> torch.Tensor:
        """The stage's sin-cos position embedding (float32, computed in float64 where the device
        allows), once per stage, duplicated for the unconditional half under guidance."""
        pos = self.position_embedding(tokens)
        return torch.cat([pos, pos]) if cond.guided else pos

    def before_call(self, sigma: float, step=None, steps=None) -> None:
        """The next call's place in the run (host values), for the skip-layer guidance window."""
        self._step = (step, steps)

    def velocity(self, x: torch.Tensor, positions: torch.Tensor, sigma: torch.Tensor,
                 cond: SD3Conditioning) -> torch.Tensor:
        dtype = cond.prompt_embeds.dtype
        B = x.shape[0]
        xin = x.to(dtype)
        if cond.guided:
            xin = torch.cat([xin, xin])
        elif positions.shape[0] == 2 * B:                # guidance cut off mid-stage (a callback)
            positions = positions[B:]
        timestep = (sigma * 1000).expand(xin.shape[0]).to(dtype)   # SD3 takes t in [0, 1000]
        skip = cond.skip if cond.guided and cond.skip is not None and cond.skip.on(*self._step) else None
        with model_call(self.transformer, "cond"), lora_scaled(self.transformer, cond.joint_attention_kwargs) as jak:
            v = forward_tokens(self.transformer, xin, positions, cond.prompt_embeds, cond.pooled_prompt_embeds,
                               timestep, jak)          # one call, as StableDiffusion3Pipeline names it
            if skip is not None:                       # the prompt's half again, those blocks skipped
                v_skip = forward_tokens(self.transformer, x.to(dtype), positions[B:], skip.prompt_embeds,
                                        skip.pooled_prompt_embeds, timestep[B:], jak, skip_layers=skip.layers)
        if cond.guided:
            uncond, text = v.chunk(2)
            v = uncond + cond.guidance_scale * (text - uncond)
            if skip is not None:
                v = v + (text - v_skip) * skip.scale
        return v.float()

    def cost_spec(self):
        """The cost model's description of this transformer (from its config)."""
        from ralu_schedule.cost import TransformerSpec

        c = self.transformer.config
        return TransformerSpec(family="sd3", double=c.num_layers, heads=c.num_attention_heads,
                               head_dim=c.attention_head_dim, token_features=self.features,
                               context_dim=c.joint_attention_dim, pooled_dim=c.pooled_projection_dim,
                               dual_attention_layers=tuple(c.dual_attention_layers or ()))


class SD3Img2ImgBackend(ImageStart, SD3Backend):
    """``StableDiffusion3Img2ImgPipeline``: SD3 from an image (:mod:`.img2img`), guidance 7.0 and
    strength 0.6 by default. With a list of generators the pipeline encodes image ``i`` with
    generator ``i`` for every generated image, so it needs as many images."""

    generators_per_image = True

    def vae_latents(self, pixels: torch.Tensor, generator) -> torch.Tensor:
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img import retrieve_latents

        return self.to_model_space(encode_each(self.vae, pixels, generator, retrieve_latents))
