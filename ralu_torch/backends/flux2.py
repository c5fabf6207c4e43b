"""FLUX.2 [dev] and [klein] through diffusers' ``Flux2Pipeline`` and ``Flux2KleinPipeline``.

What differs from FLUX.1:

- latents: a 32-channel VAE whose latent is patchified 2x2 into 128 channels and normalised by
  the VAE's BatchNorm statistics; the pipeline draws its noise as that patchified latent
  ``(B, 128, h, w)`` and flattens it (``noise_layout = "patches"``); its tokens have FLUX.1's
  feature order, so RALU's tokens are the pipeline's tokens;
- positions: four-axis ids ``(t, row, col, l)``: image tokens ``(0, row, col, 0)`` at the
  coordinate rule's positions, text tokens ``(0, 0, 0, l)``; the rotary module embeds text and
  image ids separately and concatenates them (text first);
- guidance: [dev] embeds ``guidance_scale``; [klein] base guides with a second call on an
  empty (or given) negative prompt when ``guidance_scale > 1``; distilled [klein] does neither;
- the timestep schedule: ``compute_empirical_mu`` of the token count and the step count
  (``mu_rule = "flux2"``);
- reference images (``image=``, both pipelines): each VAE-encoded once, appended after the
  generated tokens with ids ``(10 + 10 i, row, col, 0)`` for reference ``i``
  (:mod:`.references`: at full resolution, or at each stage's with the coordinate rule); the
  output takes the first reference's size unless ``height``/``width`` say otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from . import rotary
from .base import (EMPTY_NEGATIVE, BranchConditioning, EmbeddingInputs, Guided, RotaryBackend, check_negative_batch,
                   joint_kwargs, stock_timestep)
from .references import ReferenceBackend, check_grids, stage_reference_ids, with_references
from ..tokens import pack, unpack


@dataclass
class Flux2Inputs(BranchConditioning):
    BATCHED = ("prompt_embeds", "guidance")

    prompt_embeds: torch.Tensor
    text_ids: torch.Tensor                 # (B, T, 4) as the pipeline builds them
    guidance: torch.Tensor | None
    joint_attention_kwargs: dict | None


def image_ids(pos: torch.Tensor) -> torch.Tensor:
    """FLUX.2's ``(N, 4)`` image ids ``(0, row, col, 0)`` of ``(N, 2)`` float positions."""
    zero = torch.zeros_like(pos[:, :1])
    return torch.cat([zero, pos, zero], dim=1).to(torch.float32)


def _probe() -> bool:
    from diffusers.models.transformers import transformer_flux2

    return rotary.probe_real(functools.partial(transformer_flux2.apply_rotary_emb, sequence_dim=1))


class Flux2Backend(ReferenceBackend, RotaryBackend):
    name = "flux2"
    default_max_sequence_length = 512
    noise_layout = "patches"
    mu_rule = "flux2"
    rotary_probe = _probe
    block_lists = ("transformer_blocks", "single_transformer_blocks")
    embedding_inputs = EmbeddingInputs({"prompt_embeds": 3, "negative_prompt_embeds": 3})

    def __init__(self, pipe):
        super().__init__(pipe)
        self.features = self.transformer.config.in_channels          # 128: 32 channels x 2 x 2
        self.latent_channels = self.features // 4
        self.pixels_per_token = pipe.vae_scale_factor * 2             # 16
        from diffusers import Flux2KleinPipeline

        self.klein = isinstance(pipe, Flux2KleinPipeline)
        self.distilled = self.klein and bool(pipe.config.is_distilled)
        self.default_guidance_scale = 4.0

    def stock_processors(self) -> tuple:
        from diffusers.models.transformers.transformer_flux2 import Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor

        return (Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor)

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_embeds=None, negative_prompt_embeds=None, text_encoder_out_layers=None,
               caption_upsample_temperature=None, image=None, generator=None) -> Guided:
        """As the pipeline: [dev] embeds ``guidance_scale``; [klein] base adds a call on the
        negative prompt (empty unless ``negative_prompt_embeds``) when ``guidance_scale > 1``;
        reference images (``image=``) are checked and preprocessed, then VAE-encoded by the
        pipeline's ``prepare_image_latents``."""
        images = self._reference_images(image)
        if caption_upsample_temperature:
            if self.klein:
                raise ValueError("caption_upsample_temperature is Flux2Pipeline's; Flux2KleinPipeline does not "
                                 "rewrite prompts")
            prompt = self.pipe.upsample_prompt(prompt, images=image, temperature=caption_upsample_temperature,
                                               device=device)
        layers = {} if text_encoder_out_layers is None else {"text_encoder_out_layers": text_encoder_out_layers}
        enc = functools.partial(self.pipe.encode_prompt, device=device, num_images_per_prompt=num_images_per_prompt,
                                max_sequence_length=max_sequence_length, **layers)
        embeds, text_ids = enc(prompt=prompt, prompt_embeds=prompt_embeds)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([embeds.shape[0]], guidance_scale, device=device, dtype=torch.float32)
        guided = self.klein and not self.distilled and guidance_scale > 1
        if negative_prompt_embeds is not None and not guided:
            why = ("distilled FLUX.2 [klein] does not guide" if self.klein and self.distilled
                   else f"{type(self.pipe).__name__} does not guide with a negative prompt" if not self.klein
                   else f"guidance needs guidance_scale > 1, got {guidance_scale:g}")
            raise ValueError(f"negative_prompt_embeds would be ignored: {why}")
        positive = Flux2Inputs(embeds, text_ids, guidance, joint_attention_kwargs)
        negative = None
        if guided:
            if negative_prompt_embeds is None:
                self.require_text_encoder(EMPTY_NEGATIVE)
            empty = "" if not isinstance(prompt, list) else [""] * len(prompt)
            n_embeds, n_ids = enc(prompt=empty, prompt_embeds=negative_prompt_embeds)
            check_negative_batch(embeds, n_embeds)
            negative = Flux2Inputs(n_embeds, n_ids, None, joint_attention_kwargs)
        cond = Guided(positive, negative, float(guidance_scale), text_tokens=embeds.shape[1])
        if images is None:
            return with_references(cond, None)
        grids = [(im.shape[2] // self.pixels_per_token, im.shape[3] // self.pixels_per_token) for im in images]
        latents, ids = self.pipe.prepare_image_latents(images, cond.batch, generator, device, self.vae.dtype)
        sizes = [r * c for r, c in grids]
        return with_references(cond, self.references(list(latents.split(sizes, dim=1)), grids,
                                                     [i.float() for i in ids[0].split(sizes)]))

    def _reference_images(self, image) -> list | None:
        """The reference images as the pipelines preprocess them: each a PIL image the pipeline's
        ``check_image_input`` accepts, scaled down to 1024 x 1024 pixels of area if larger,
        cropped to multiples of 16 pixels; refused before any model runs if not."""
        if image is None:
            return None
        pipe = self.pipe
        images = image if isinstance(image, list) else [image]
        if not images:
            raise ValueError("image= must be a PIL image or a non-empty list of them")
        out = []
        for k, img in enumerate(images):
            try:
                pipe.image_processor.check_image_input(img)
            except ValueError as err:
                raise ValueError(f"{type(pipe).__name__} cannot take reference image {k + 1}: {err}") from None
            w, h = img.size
            if w * h > 1024 * 1024:
                img = pipe.image_processor._resize_to_target_area(img, 1024 * 1024)
                w, h = img.size
            multiple = pipe.vae_scale_factor * 2
            w, h = w // multiple * multiple, h // multiple * multiple
            out.append(pipe.image_processor.preprocess(img, height=h, width=w, resize_mode="crop"))
        check_grids([(im.shape[2] // self.pixels_per_token, im.shape[3] // self.pixels_per_token) for im in out],
                    self._first_size, self.reference_mode, "reference image")
        return out

    def call_size(self, prompt, height, width, kwargs) -> tuple:
        """The FLUX.2 pipelines make an image of the first reference's (preprocessed) size
        unless ``height``/``width`` are given."""
        if kwargs.get("image") is None or (height is not None and width is not None):
            return height, width
        first = self._reference_images(kwargs["image"])[0]
        return (first.shape[2] if height is None else height), (first.shape[3] if width is None else width)

    def join_ids(self, ids, stage):
        return torch.cat([ids, *(i.to(ids) for i in stage.ids)])

    def ids(self, pos: torch.Tensor, tokens) -> torch.Tensor:
        return image_ids(pos)

    def rotary(self, pos: torch.Tensor, tokens, cond) -> tuple:
        """Per image: the text's table, then the image's, as the transformer concatenates them."""
        B = pos.shape[0]
        embed = self.transformer.pos_embed
        ids = stage_reference_ids(image_ids(pos.reshape(-1, 2)).view(B, -1, 4), tokens, cond)   # the references too
        txt_cos, txt_sin = embed(cond.positive.text_ids[0].float())
        img_cos, img_sin = embed(ids.reshape(-1, 4))
        per_image = lambda t, i: torch.cat([t.expand(B, -1, -1), i.view(B, ids.shape[1], -1)], dim=1)  # noqa: E731
        return rotary.PerImage(per_image(txt_cos, img_cos)), rotary.PerImage(per_image(txt_sin, img_sin))

    def forward(self, x, ids, sigma, branch: Flux2Inputs, rotary=None) -> torch.Tensor:
        dtype = branch.prompt_embeds.dtype
        return self.transformer(hidden_states=x.to(self.transformer.dtype),
                                timestep=stock_timestep(sigma, x.shape[0], dtype), guidance=branch.guidance,
                                encoder_hidden_states=branch.prompt_embeds, txt_ids=branch.text_ids, img_ids=ids,
                                joint_attention_kwargs=joint_kwargs(branch.joint_attention_kwargs, rotary),
                                return_dict=False)[0]

    def _denormalise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (patchified latents) with the VAE's BatchNorm statistics undone."""
        bn = self.vae.bn
        std = torch.sqrt(bn.running_var + self.vae.config.batch_norm_eps).to(tokens.device, tokens.dtype)
        return tokens * std + bn.running_mean.to(tokens.device, tokens.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, C, h, w)`` to images: the BatchNorm statistics undone on the
        patchified latent, as the FLUX.2 pipelines decode."""
        z = unpack(self._denormalise(pack(latents)), (latents.shape[2] // 2, latents.shape[3] // 2))
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]

    def cost_spec(self):
        from ralu_schedule.cost import Flux2Spec

        c = self.transformer.config
        return Flux2Spec(double=c.num_layers, single=c.num_single_layers, heads=c.num_attention_heads,
                         head_dim=c.attention_head_dim, mlp_ratio=c.mlp_ratio, token_features=c.in_channels,
                         context_dim=c.joint_attention_dim, guidance_embeds=c.guidance_embeds)

    def pipeline_latents(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """What the pipeline returns for ``output_type="latent"``: Flux2Pipeline its packed
        tokens, Flux2KleinPipeline the VAE's latent ``(B, C, 2 rows, 2 cols)`` (normalisation undone)."""
        return unpack(self._denormalise(tokens), grid) if self.klein else tokens

    def from_pipeline_latents(self, latents: torch.Tensor, grid: tuple) -> torch.Tensor:
        if not self.klein:
            return latents
        bn = self.vae.bn
        std = torch.sqrt(bn.running_var + self.vae.config.batch_norm_eps).to(latents.device, latents.dtype)
        return (pack(latents) - bn.running_mean.to(latents.device, latents.dtype)) / std

    def pipeline_input(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """The FLUX.2 pipelines take ``latents=`` as the patchified latent ``(B, 4 C, rows, cols)``."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

