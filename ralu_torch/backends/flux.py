"""FLUX.1 (dev and schnell) through diffusers' ``FluxPipeline`` components."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import DiffusersBackend


@dataclass
class FluxConditioning:
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    text_ids: torch.Tensor
    guidance: torch.Tensor | None
    joint_attention_kwargs: dict | None

    @property
    def batch(self) -> int:
        return self.prompt_embeds.shape[0]

    def image(self, b: int) -> "FluxConditioning":
        """The conditioning of image ``b`` alone (for token sets that differ per image)."""
        sl = slice(b, b + 1)
        return FluxConditioning(self.prompt_embeds[sl], self.pooled_prompt_embeds[sl], self.text_ids,
                                None if self.guidance is None else self.guidance[sl], self.joint_attention_kwargs)


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
               device, prompt_2=None, prompt_embeds=None, pooled_prompt_embeds=None) -> FluxConditioning:
        lora_scale = (joint_attention_kwargs or {}).get("scale")
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=prompt_2, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            device=device, num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length,
            lora_scale=lora_scale)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([embeds.shape[0]], guidance_scale, device=device, dtype=torch.float32)
        return FluxConditioning(embeds, pooled, text_ids, guidance, joint_attention_kwargs)

    def velocity(self, x: torch.Tensor, tokens, sigma: torch.Tensor, cond: FluxConditioning) -> torch.Tensor:
        """``x`` (B, L, 64) float32 tokens on ``tokens``, ``sigma`` a float32 scalar."""
        positions = tokens.positions()
        if bool((positions == positions[:1]).all()):
            return self._forward(x, positions[0], sigma, cond)
        # token sets differ per image (top-r selection): FLUX takes one set of ids per call
        return torch.cat([self._forward(x[b:b + 1], positions[b], sigma, cond.image(b))
                          for b in range(x.shape[0])])

    def _forward(self, x, pos, sigma, cond):
        dtype = cond.prompt_embeds.dtype
        ids = torch.zeros(pos.shape[0], 3, device=x.device, dtype=torch.float32)
        ids[:, 1:] = pos.to(device=x.device, dtype=torch.float32)
        timestep = (sigma * 1000).expand(x.shape[0]).to(dtype) / 1000   # as FluxPipeline rounds it
        v = self.transformer(hidden_states=x.to(dtype), timestep=timestep, guidance=cond.guidance,
                             pooled_projections=cond.pooled_prompt_embeds, encoder_hidden_states=cond.prompt_embeds,
                             txt_ids=cond.text_ids, img_ids=ids, joint_attention_kwargs=cond.joint_attention_kwargs,
                             return_dict=False)[0]
        return v.float()

    def pipeline_latents(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """FluxPipeline returns packed tokens for ``output_type="latent"``."""
        return tokens

