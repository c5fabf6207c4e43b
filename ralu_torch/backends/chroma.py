"""Chroma (FLUX.1-schnell based) through diffusers' ``ChromaPipeline`` components.

What differs from FLUX.1: no pooled embedding and no guidance embedding (the modulation comes
from the model's own distilled guidance layer); classifier-free guidance by a second call
with the negative prompt when ``guidance_scale > 1``; and an attention mask over the text
*and image* tokens, which ChromaPipeline builds as the prompt's mask followed by ones for the
image tokens: here it is rebuilt for each stage's token count. Positions, packing and the
rotary tables are FLUX.1's (:mod:`.flux`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (EMPTY_NEGATIVE, BranchConditioning, EmbeddingInputs, Guided, check_negative_batch, joint_kwargs,
                   stock_timestep)
from .flux import FluxLayout
from .img2img import ImageStart


@dataclass
class ChromaInputs(BranchConditioning):
    """One Chroma call's text inputs: the prompt mask ``(B, T)`` or None."""

    BATCHED = ("prompt_embeds", "attention_mask")

    prompt_embeds: torch.Tensor
    text_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    joint_attention_kwargs: dict | None

    def mask(self, image_tokens: int) -> torch.Tensor | None:
        """ChromaPipeline's mask for ``image_tokens`` image tokens: the text mask, then ones."""
        if self.attention_mask is None:
            return None
        m = self.attention_mask
        return torch.cat([m, torch.ones(m.shape[0], image_tokens, device=m.device, dtype=torch.bool)], dim=1)


class ChromaBackend(FluxLayout):
    name = "chroma"
    default_guidance_scale = 5.0
    # ChromaPipeline refuses embeddings without their mask (it masks the T5 padding)
    embedding_inputs = EmbeddingInputs({"prompt_embeds": 3, "prompt_attention_mask": 2, "negative_prompt_embeds": 3,
                                        "negative_prompt_attention_mask": 2},
                                       requires={"prompt_embeds": ("prompt_attention_mask",),
                                                 "negative_prompt_embeds": ("negative_prompt_attention_mask",)},
                                       masks={"prompt_attention_mask": "prompt_embeds",
                                              "negative_prompt_attention_mask": "negative_prompt_embeds"},
                                       bool_masks=True)

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_embeds=None, prompt_attention_mask=None, negative_prompt=None,
               negative_prompt_embeds=None, negative_prompt_attention_mask=None) -> Guided:
        """As ChromaPipeline: guidance by a second call with the negative prompt (``""`` when none
        is given) when ``guidance_scale > 1``."""
        guided = guidance_scale > 1
        if not guided and (negative_prompt is not None or negative_prompt_embeds is not None):
            raise ValueError(f"a negative prompt on Chroma needs guidance_scale > 1 (classifier-free guidance), got "
                             f"{guidance_scale:g}; without it the negative prompt would be ignored")
        if guided and negative_prompt is None and negative_prompt_embeds is None:
            self.require_text_encoder(EMPTY_NEGATIVE)
        lora_scale = (joint_attention_kwargs or {}).get("scale")
        embeds, text_ids, mask, n_embeds, n_ids, n_mask = self.pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask, do_classifier_free_guidance=guided,
            device=device, num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length,
            lora_scale=lora_scale)
        positive = ChromaInputs(embeds, text_ids, mask, joint_attention_kwargs)
        negative = None
        if guided:
            check_negative_batch(embeds, n_embeds)
            negative = ChromaInputs(n_embeds, n_ids, n_mask, joint_attention_kwargs)
        return Guided(positive, negative, float(guidance_scale), text_tokens=embeds.shape[1])

    def forward(self, x, ids, sigma, branch: ChromaInputs, rotary=None) -> torch.Tensor:
        dtype = branch.prompt_embeds.dtype
        return self.transformer(hidden_states=x.to(dtype), timestep=stock_timestep(sigma, x.shape[0], dtype),
                                encoder_hidden_states=branch.prompt_embeds, txt_ids=branch.text_ids, img_ids=ids,
                                attention_mask=self.attention_mask(branch, x.shape[1]),
                                joint_attention_kwargs=joint_kwargs(branch.joint_attention_kwargs, rotary),
                                return_dict=False)[0]

    def attention_mask(self, branch: ChromaInputs, image_tokens: int):
        """The mask the pipeline passes for ``image_tokens`` image tokens (ChromaPipeline's: boolean)."""
        return branch.mask(image_tokens)

    def cost_spec(self):
        from ralu_schedule.cost import ChromaSpec

        c = self.transformer.config
        return ChromaSpec(double=c.num_layers, single=c.num_single_layers, heads=c.num_attention_heads,
                          head_dim=c.attention_head_dim, token_features=c.in_channels, context_dim=c.joint_attention_dim,
                          approximator_channels=c.approximator_num_channels,
                          approximator_hidden=c.approximator_hidden_dim, approximator_layers=c.approximator_layers)


class ChromaImg2ImgBackend(ImageStart, ChromaBackend):
    """``ChromaImg2ImgPipeline``: Chroma from an image (:mod:`.img2img`), its defaults (guidance
    5.0, strength 0.9), the image encoded by the pipeline's ``_encode_vae_image``. Its attention
    mask is the pipeline's own ``_prepare_attention_mask``, which (unlike ChromaPipeline's) casts
    the mask to the latents' dtype: a 0/1 float mask, which attention adds to its scores instead
    of masking (docs/conditioned.md); RALU passes what the pipeline passes."""

    def attention_mask(self, branch: ChromaInputs, image_tokens: int):
        m = branch.attention_mask
        if m is None:
            return None
        return self.pipe._prepare_attention_mask(m.shape[0], image_tokens, branch.prompt_embeds.dtype, m)
