"""FLUX.1 (dev and schnell) through diffusers' ``FluxPipeline`` components.

Positions: ids ``(0, row, col)`` (:mod:`ralu_torch.tokens`' coordinate rule), FLUX's rotary
over text then image ids. Guidance: the distilled guidance embedding, and FluxPipeline's
true CFG (a negative prompt with ``true_cfg_scale > 1``: a second call per step).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from ralu_schedule._errors import check_finite

from . import rotary
from .base import (BranchConditioning, EmbeddingInputs, Guided, RotaryBackend, check_negative_batch, check_same_shape,
                   joint_kwargs, stock_timestep)


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
        self.features = self.transformer.config.in_channels          # 64: 16 channels x 2 x 2
        self.latent_channels = self.features // 4
        self.pixels_per_token = pipe.vae_scale_factor * 2             # 16

    def stock_processors(self) -> tuple:
        from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

        return (FluxAttnProcessor,)

    def ids(self, pos: torch.Tensor, tokens) -> torch.Tensor:
        return image_ids(pos)

    def rotary(self, pos: torch.Tensor, tokens, cond) -> tuple:
        ids = torch.stack([image_ids(p) for p in pos])
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
