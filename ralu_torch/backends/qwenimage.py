"""Qwen-Image through diffusers' ``QwenImagePipeline`` components.

What differs from FLUX.1:

- positions: the transformer builds its rotary table from an image *shape* (``img_shapes``),
  centred (``scale_rope``): on a frame of ``rows x cols`` tokens, row ``r`` sits at
  ``r - (rows - rows // 2)``, column ``c`` at ``c - (cols - cols // 2)``, frame index 0, and
  the text continues from ``max(rows // 2, cols // 2)``. A uniform stage passes its frame as
  the shape (the stock tables, exactly); a mixed stage evaluates the model's own
  ``rope_params`` at each token's position by the same rule on the coarsest frame (children at
  fractional positions) and hands the table to the stock processors per image
  (:mod:`.rotary`), with the text's table from the model's rotary module for that frame;
- guidance: true CFG with a negative prompt and ``true_cfg_scale > 1`` (a second call), the
  guided velocity rescaled per token to the conditional velocity's norm;
- latents: Qwen-Image's VAE (a causal video VAE run on one frame) with per-channel mean and
  standard deviation; the timestep schedule ends at ``shift_terminal`` 0.02.

Qwen-Image-Edit (``QwenImageEditPipeline``, and ``QwenImageEditPlusPipeline`` for 2509's
several images) appends each reference image's tokens to the image stream with one more
``img_shapes`` entry (frame index ``i + 1``, centred on the reference's own frame;
:mod:`.references`: at full resolution, or at each stage's); its text encoder, Qwen2.5-VL,
also sees the image. The output takes the (last) reference's size unless ``height``/``width``
say otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from . import rotary
from .img2img import ImageStart
from .base import (BranchConditioning, EmbeddingInputs, Guided, RotaryBackend, check_negative_batch, joint_kwargs,
                   stock_timestep)
from .references import ReferenceBackend, check_grids, reference_batch, with_references
from ralu_schedule._errors import check_finite


@dataclass
class QwenInputs(BranchConditioning):
    BATCHED = ("prompt_embeds", "prompt_embeds_mask", "guidance")

    prompt_embeds: torch.Tensor
    prompt_embeds_mask: torch.Tensor | None
    guidance: torch.Tensor | None
    attention_kwargs: dict | None


@dataclass
class QwenRotary:
    """A mixed stage's rotary tables: the image's per image, the text's long enough for every branch."""

    image: rotary.PerImage
    text: torch.Tensor

    def for_text(self, text_tokens: int) -> tuple:
        return self.image, self.text[:text_tokens]


def centred(pos: torch.Tensor, frame: tuple) -> torch.Tensor:
    """Qwen-Image's ``scale_rope`` coordinates of ``(..., 2)`` positions on a ``rows x cols`` frame."""
    rows, cols = frame
    offset = torch.tensor([rows - rows // 2, cols - cols // 2], dtype=pos.dtype, device=pos.device)
    return pos - offset


def _probe() -> bool:
    from diffusers.models.transformers import transformer_qwenimage

    return rotary.probe_complex(functools.partial(transformer_qwenimage.apply_rotary_emb_qwen, use_real=False))


class QwenImageBackend(RotaryBackend):
    name = "qwen-image"
    default_guidance_scale = None
    default_max_sequence_length = 512
    max_sequence_length_limit = 1024
    rotary_probe = _probe
    embedding_inputs = EmbeddingInputs({"prompt_embeds": 3, "prompt_embeds_mask": 2, "negative_prompt_embeds": 3,
                                        "negative_prompt_embeds_mask": 2},
                                       masks={"prompt_embeds_mask": "prompt_embeds",
                                              "negative_prompt_embeds_mask": "negative_prompt_embeds"})

    def __init__(self, pipe):
        super().__init__(pipe)
        cfg = self.transformer.config
        for key in ("zero_cond_t", "use_layer3d_rope", "use_additional_t_cond"):
            if cfg.get(key, False):
                raise ValueError(f"this QwenImageTransformer2DModel has {key}=True, the configuration of an editing or "
                                 "layered model; RALU runs Qwen-Image's text-to-image transformer")
        self.features = cfg.in_channels                              # 64: 16 channels x 2 x 2
        self.latent_channels = self.features // 4
        self.pixels_per_token = pipe.vae_scale_factor * 2             # 16

    def stock_processors(self) -> tuple:
        from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

        return (QwenDoubleStreamAttnProcessor2_0,)

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_embeds=None, prompt_embeds_mask=None, negative_prompt=None, negative_prompt_embeds=None,
               negative_prompt_embeds_mask=None, true_cfg_scale: float = 4.0, **encoder) -> Guided:
        """As QwenImagePipeline: true CFG when a negative prompt is given and ``true_cfg_scale > 1``.
        ``encoder``: what the pipeline's ``encode_prompt`` also takes (Qwen-Image-Edit: ``image``)."""
        true_cfg_scale = check_finite("true_cfg_scale", true_cfg_scale)
        has_negative = negative_prompt is not None or negative_prompt_embeds is not None
        if has_negative and true_cfg_scale <= 1:
            raise ValueError(f"a negative prompt on Qwen-Image needs true_cfg_scale > 1 (true CFG), got "
                             f"{true_cfg_scale:g}; without it the negative prompt would be ignored")
        enc = functools.partial(self.pipe.encode_prompt, device=device, num_images_per_prompt=num_images_per_prompt,
                                max_sequence_length=max_sequence_length, **encoder)
        embeds, mask = enc(prompt=prompt, prompt_embeds=prompt_embeds, prompt_embeds_mask=prompt_embeds_mask)
        guidance = None
        if self.transformer.config.guidance_embeds:
            if guidance_scale is None:
                raise ValueError("this Qwen-Image transformer is guidance-distilled: give guidance_scale")
            guidance = torch.full([embeds.shape[0]], guidance_scale, device=device, dtype=torch.float32)
        positive = QwenInputs(embeds, mask, guidance, joint_attention_kwargs)
        negative = None
        if has_negative:
            n_embeds, n_mask = enc(prompt=negative_prompt, prompt_embeds=negative_prompt_embeds,
                                   prompt_embeds_mask=negative_prompt_embeds_mask)
            check_negative_batch(embeds, n_embeds)
            negative = QwenInputs(n_embeds, n_mask, guidance, joint_attention_kwargs)
        return Guided(positive, negative, float(true_cfg_scale), rescale=True, text_tokens=embeds.shape[1])

    def stock_positions(self, tokens) -> bool:
        """The stock forward places only a regular grid (one token size, raster order)."""
        return tokens.uniform

    def ids(self, pos: torch.Tensor, tokens) -> list:
        """The frames ``(rows, cols)`` the stock forward builds its tables from (``img_shapes``):
        the generated image's (and, joined in a reference pipeline, each reference's)."""
        return [tokens.frame]

    def rotary(self, pos: torch.Tensor, tokens, cond) -> QwenRotary:
        """The generated tokens' table at their own positions; the references' (if any) and the
        text's as the model's rotary module makes them for the stage's shapes."""
        rope = self.transformer.pos_embed
        B, L, _ = pos.shape
        c = centred(pos.reshape(B * L, 2), tokens.frame)
        # on the CPU, as the model computes its own table (then moves it): the same bits on every device
        axis = lambda p, dim: rope.rope_params(p.cpu(), dim, rope.theta).to(pos.device)  # noqa: E731
        d_frame, d_row, d_col = rope.axes_dim
        table = torch.cat([axis(torch.zeros_like(c[:, 0]), d_frame), axis(c[:, 0], d_row), axis(c[:, 1], d_col)], -1)
        longest = max(branch.prompt_embeds.shape[1] for _, branch in cond.branches())
        refs = getattr(cond, "references", None)
        frames = [tokens.frame, *(refs.at(tokens).ids if refs is not None else [])]
        shapes, text = rope([[(1, *f) for f in frames]], device=pos.device, max_txt_seq_len=longest)   # one image's
        stock_refs = shapes[tokens.frame[0] * tokens.frame[1]:]          # the references' own tables
        table = torch.cat([table.view(B, L, -1), stock_refs.expand(B, -1, -1)], dim=1)
        return QwenRotary(rotary.PerImage(table), text)

    def forward(self, x, ids, sigma, branch: QwenInputs, rotary=None) -> torch.Tensor:
        dtype = branch.prompt_embeds.dtype
        if rotary is not None:
            rotary = rotary.for_text(branch.prompt_embeds.shape[1])
        return self.transformer(hidden_states=x.to(dtype), timestep=stock_timestep(sigma, x.shape[0], dtype),
                                guidance=branch.guidance, encoder_hidden_states_mask=branch.prompt_embeds_mask,
                                encoder_hidden_states=branch.prompt_embeds,
                                img_shapes=[[(1, *f) for f in ids]] * x.shape[0],
                                attention_kwargs=joint_kwargs(branch.attention_kwargs, rotary), return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, 16, h, w)`` to images, as QwenImagePipeline decodes: per-channel mean
        and standard deviation undone, the one-frame video VAE."""
        cfg = self.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean).view(shape).to(latents.device, self.vae.dtype)
        inv_std = 1.0 / torch.tensor(cfg.latents_std).view(shape).to(latents.device, self.vae.dtype)
        z = latents.to(self.vae.dtype)[:, :, None] / inv_std + mean
        return self.vae.decode(z, return_dict=False)[0][:, :, 0]

    def cost_spec(self):
        from ralu_schedule.cost import QwenImageSpec

        c = self.transformer.config
        return QwenImageSpec(layers=c.num_layers, heads=c.num_attention_heads, head_dim=c.attention_head_dim,
                             token_features=c.in_channels, context_dim=c.joint_attention_dim)


class QwenImageImg2ImgBackend(ImageStart, QwenImageBackend):
    """``QwenImageImg2ImgPipeline``: Qwen-Image from an image (:mod:`.img2img`), strength 0.6 and
    true CFG at 4.0 by default; the image encoded as one frame by the pipeline's ``_encode_vae_image``."""

    def vae_latents(self, pixels: torch.Tensor, generator) -> torch.Tensor:
        return self.pipe._encode_vae_image(image=pixels[:, :, None], generator=generator)[:, :, 0]
class QwenImageEditBackend(ReferenceBackend, QwenImageBackend):
    """``QwenImageEditPipeline`` (Qwen-Image-Edit) and ``QwenImageEditPlusPipeline`` (2509: one
    or more reference images, one prompt): the references' tokens follow the generated
    image's, one ``img_shapes`` entry each; Qwen2.5-VL encodes the prompt with the image (the
    reference itself for Edit; each at 384 x 384 pixels of area for Edit Plus). Each image is
    sized as the pipeline sizes it (``calculate_dimensions``: about 1024 x 1024 pixels at its
    aspect ratio, sides multiples of 32)."""

    def join_ids(self, ids, stage):
        return [*ids, *stage.ids]

    @property
    def plus(self) -> bool:
        from diffusers import QwenImageEditPlusPipeline

        return isinstance(self.pipe, QwenImageEditPlusPipeline)

    def _images(self, image) -> list:
        """The reference images, each a PIL image (the pipelines read ``image.size``)."""
        import PIL.Image

        name = type(self.pipe).__name__
        if image is None:
            raise ValueError(f"{name} needs image= (the image to edit): it sizes its output and its references by it")
        images = image if isinstance(image, list) else [image]
        bad = next((im for im in images if not isinstance(im, PIL.Image.Image)), None)
        if not images or bad is not None:
            raise ValueError(f"{name} takes image= as a PIL image or a list of them (it reads each image's size), "
                             f"got {type(bad if images else image).__name__}")
        return images

    def _dimensions(self, img, area: str) -> tuple:
        """``(width, height)`` of ``img`` scaled to the pipeline's ``area`` (``"vae"``: about 1024 x
        1024 pixels, Edit Plus's ``VAE_IMAGE_SIZE``; ``"condition"``: what Edit Plus shows the text
        encoder, ``CONDITION_IMAGE_SIZE``), by the pipeline module's own ``calculate_dimensions``."""
        import importlib

        module = importlib.import_module(type(self.pipe).__module__)
        pixels = getattr(module, "CONDITION_IMAGE_SIZE" if area == "condition" else "VAE_IMAGE_SIZE", 1024 * 1024)
        return tuple(module.calculate_dimensions(pixels, img.size[0] / img.size[1])[:2])

    def call_size(self, prompt, height, width, kwargs) -> tuple:
        """The pipeline's output size: ``height``/``width`` where given, else the (last, for Edit
        Plus; first, for Edit) image's at about 1024 x 1024 pixels; floored to multiples of 16.
        Edit Plus takes one prompt per call (its own rule), refused here before any model runs."""
        images = self._images(kwargs.get("image"))
        embeds = kwargs.get("prompt_embeds")
        prompts = len(prompt) if isinstance(prompt, list) else len(embeds) if isinstance(embeds, torch.Tensor) else 1
        if self.plus and prompts > 1:
            raise ValueError(f"{type(self.pipe).__name__} takes one prompt per call (its own rule), got {prompts}; "
                             "give one prompt, and num_images_per_prompt for more images")
        calc_width, calc_height = self._dimensions(images[-1] if self.plus else images[0], "vae")
        multiple = self.pipe.vae_scale_factor * 2
        height = calc_height if height is None else height
        width = calc_width if width is None else width
        if not all(isinstance(v, int) and v > 0 for v in (height, width)):
            return height, width                       # refused with the sizes' rule by the caller
        return height // multiple * multiple, width // multiple * multiple

    def encode(self, *, image=None, generator=None, **text) -> Guided:
        """The prompt encoded with the image by Qwen2.5-VL (or the embeddings given), and the
        references encoded by the pipeline's ``prepare_latents``, as the pipeline does."""
        pipe, name = self.pipe, type(self.pipe).__name__
        images = self._images(image)
        multiple = pipe.vae_scale_factor * 2
        if self.plus:
            vae_sizes = [self._dimensions(im, "vae") for im in images]
            prompt_image = [pipe.image_processor.resize(im, *self._dimensions(im, "condition")[::-1]) for im in images]
            vae_images = [pipe.image_processor.preprocess(im, h, w).unsqueeze(2)
                          for im, (w, h) in zip(images, vae_sizes)]
        else:
            w, h = self._dimensions(images[0], "vae")
            vae_sizes = [(w, h)]
            prompt_image = pipe.image_processor.resize(image, h, w)
            vae_images = pipe.image_processor.preprocess(prompt_image, h, w).unsqueeze(2)
        grids = [(h // multiple, w // multiple) for w, h in vae_sizes]
        check_grids(grids, self._first_size, self.reference_mode, "reference image")
        if not self.plus:
            embeds, prompt = text.get("prompt_embeds"), text["prompt"]
            prompts = len(embeds) if embeds is not None else len(prompt) if isinstance(prompt, list) else 1
            reference_batch(vae_images.shape[0], prompts * text["num_images_per_prompt"], name)
        cond = super().encode(image=prompt_image, **text)
        embeds = cond.positive.prompt_embeds
        channels = self.transformer.config.in_channels // 4
        # the pipeline's own encoding, normalisation, batching and packing; the noise it would draw is the
        # sampler's (a placeholder is passed for it), and the size only shapes that noise
        placeholder = torch.empty(0, device=embeds.device, dtype=embeds.dtype)
        _, latents = pipe.prepare_latents(vae_images, cond.batch, channels, multiple, multiple, embeds.dtype,
                                          embeds.device, generator, placeholder)
        sizes = [r * c for r, c in grids]
        return with_references(cond, self.references(list(latents.split(sizes, dim=1)), grids, [None] * len(grids)))
