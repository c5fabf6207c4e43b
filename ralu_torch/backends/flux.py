"""FLUX.1 (dev and schnell) through diffusers' ``FluxPipeline`` components."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ralu_schedule._errors import check_finite

from . import flux_rotary
from .base import DiffusersBackend


@dataclass
class FluxConditioning:
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    text_ids: torch.Tensor
    guidance: torch.Tensor | None
    joint_attention_kwargs: dict | None
    negative: "FluxConditioning | None" = None    # true CFG (FluxPipeline's true_cfg_scale > 1)
    true_cfg_scale: float = 1.0

    @property
    def batch(self) -> int:
        return self.prompt_embeds.shape[0]

    def image(self, b: int) -> "FluxConditioning":
        """The conditioning of image ``b`` alone (for token sets that differ per image)."""
        sl = slice(b, b + 1)
        return FluxConditioning(self.prompt_embeds[sl], self.pooled_prompt_embeds[sl], self.text_ids,
                                None if self.guidance is None else self.guidance[sl], self.joint_attention_kwargs,
                                None if self.negative is None else self.negative.image(b), self.true_cfg_scale)


@dataclass
class FluxPositions:
    """A stage's positions: ``img_ids`` ``(L, 3)`` (shared, or the first image's when
    ``rotary`` holds every image's table), or ``(B, L, 3)`` with ``per_image_calls``."""

    img_ids: torch.Tensor
    rotary: flux_rotary.PerImageRotary | None
    per_image_calls: bool


def _ids(pos: torch.Tensor) -> torch.Tensor:
    """FLUX's ``(N, 3)`` image ids ``(0, row, col)`` of ``(N, 2)`` float positions."""
    return torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1).to(torch.float32)


class FluxBackend(DiffusersBackend):
    name = "flux"
    default_guidance_scale = 3.5
    default_max_sequence_length = 512

    def __init__(self, pipe):
        super().__init__(pipe)
        self.features = self.transformer.config.in_channels          # 64: 16 channels x 2 x 2
        self.latent_channels = self.features // 4
        self.pixels_per_token = pipe.vae_scale_factor * 2             # 16

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_2=None, prompt_embeds=None, pooled_prompt_embeds=None, negative_prompt=None,
               negative_prompt_2=None, negative_prompt_embeds=None, negative_pooled_prompt_embeds=None,
               true_cfg_scale: float = 1.0) -> FluxConditioning:
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
        negative = None
        has_negative = negative_prompt is not None or negative_prompt_embeds is not None
        true_cfg_scale = check_finite("true_cfg_scale", true_cfg_scale)
        if has_negative and true_cfg_scale <= 1:
            raise ValueError(f"a negative prompt on FLUX needs true_cfg_scale > 1 (FluxPipeline's true CFG), got "
                             f"{true_cfg_scale:g}; without it the negative prompt would be ignored")
        if true_cfg_scale > 1 and has_negative:
            n_embeds, n_pooled, n_ids = enc(prompt=negative_prompt, prompt_2=negative_prompt_2,
                                            prompt_embeds=negative_prompt_embeds,
                                            pooled_prompt_embeds=negative_pooled_prompt_embeds)
            if n_embeds.shape[0] != embeds.shape[0]:
                raise ValueError(f"negative prompts give {n_embeds.shape[0]} embeddings for {embeds.shape[0]} prompts; "
                                 "give one negative prompt per prompt, or one for all")
            negative = FluxConditioning(n_embeds, n_pooled, n_ids, guidance, joint_attention_kwargs)
        return FluxConditioning(embeds, pooled, text_ids, guidance, joint_attention_kwargs, negative,
                                float(true_cfg_scale))

    def blocks(self) -> list:
        return list(self.transformer.transformer_blocks) + list(self.transformer.single_transformer_blocks)

    def compile(self, options: dict) -> None:
        flux_rotary.install(self.transformer)     # the processors the mixed stage uses, traced from the start
        super().compile(options)

    def prepare(self, tokens, cond: FluxConditioning) -> FluxPositions:
        """Position ids of a stage's token set, built once (host work happens here, not per step).

        Equal token sets across the batch give FLUX's stock ``(L, 3)`` ids. Token sets that
        differ per image also get one rotary table per image, applied by the attention
        processors that :mod:`~ralu_torch.backends.flux_rotary` installs, so the whole batch
        still runs in one call. If the transformer uses an attention processor those
        adapters cannot wrap, the stage runs one call per image.
        """
        pos = tokens.positions()
        ids = torch.stack([_ids(p) for p in pos])                       # (B, L, 3)
        if bool((pos == pos[:1]).all()):
            return FluxPositions(ids[0], None, False)
        if flux_rotary.install(self.transformer):
            rotary = flux_rotary.per_image_rotary(self.transformer.pos_embed, cond.text_ids.float(), ids)
            return FluxPositions(ids[0], rotary, False)
        return FluxPositions(ids, None, True)

    def velocity(self, x: torch.Tensor, positions: FluxPositions, sigma: torch.Tensor,
                 cond: FluxConditioning) -> torch.Tensor:
        """``x`` (B, L, 64) float32 tokens at prepared ``positions``, ``sigma`` a float32 scalar."""
        if positions.per_image_calls:
            return torch.cat([self.velocity(x[b:b + 1], FluxPositions(positions.img_ids[b], None, False), sigma,
                                            cond.image(b)) for b in range(x.shape[0])])
        v = self._forward(x, positions.img_ids, sigma, cond, positions.rotary)
        if cond.negative is not None:            # FluxPipeline's true CFG: neg + s (pos - neg)
            neg = self._forward(x, positions.img_ids, sigma, cond.negative, positions.rotary)
            v = neg + cond.true_cfg_scale * (v - neg)
        return v

    def _forward(self, x, img_ids, sigma, cond, rotary=None):
        dtype = cond.prompt_embeds.dtype
        kwargs = cond.joint_attention_kwargs
        if rotary is not None:                       # per-image tables for the wrapped processors
            kwargs = {**(kwargs or {}), "ralu_rotary": rotary}
        timestep = (sigma * 1000).expand(x.shape[0]).to(dtype) / 1000   # as FluxPipeline rounds it
        v = self.transformer(hidden_states=x.to(dtype), timestep=timestep, guidance=cond.guidance,
                             pooled_projections=cond.pooled_prompt_embeds, encoder_hidden_states=cond.prompt_embeds,
                             txt_ids=cond.text_ids, img_ids=img_ids, joint_attention_kwargs=kwargs,
                             return_dict=False)[0]
        return v.float()

    def cost_spec(self):
        """The cost model's description of this transformer (from its config)."""
        from ralu_schedule.cost import TransformerSpec

        c = self.transformer.config
        return TransformerSpec(family="flux", double=c.num_layers, single=c.num_single_layers,
                               heads=c.num_attention_heads, head_dim=c.attention_head_dim, token_features=c.in_channels,
                               context_dim=c.joint_attention_dim, pooled_dim=c.pooled_projection_dim,
                               guidance_embeds=c.guidance_embeds)

    def pipeline_latents(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """FluxPipeline returns packed tokens for ``output_type="latent"``."""
        return tokens

