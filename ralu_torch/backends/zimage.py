"""Z-Image and Z-Image-Turbo through diffusers' ``ZImagePipeline`` components.

Z-Image is a single-stream DiT whose ``forward`` takes a list of per-image latents and caption
features and builds positions from each latent's grid. A mixed token set has no grid, so
:func:`forward_tokens` runs the model's own modules and sequence helpers on tokens, with
rotary tables evaluated at explicit positions. What differs from the other families:

- time runs the other way: the pipeline feeds the model ``1 - sigma`` (``(1000 - t) / 1000``)
  and steps with minus its output;
- patches are ordered ``(dy, dx, channel)`` (RALU's tokens: ``(channel, dy, dx)``): features
  are permuted on the way in and out;
- every sequence is padded to a multiple of 32 with learned pad tokens (image and caption
  separately; the pads take part in attention), and the caption, one variable-length
  tensor per image, comes *after* the image in the joint sequence;
- positions are three-axis ids: the caption's ``(1 + k, 0, 0)``, the image's
  ``(cap_len + 1, row, col)`` with ``cap_len`` the image's padded caption length, so the
  image ids of an image depend on its own caption; the rotary tables are the embedder's
  formula evaluated at each token's (possibly fractional) position;
- guidance: classifier-free guidance when ``guidance_scale > 0``, both halves in one call
  (positive first), ``pos + g (pos - neg)``, with the pipeline's ``cfg_truncation`` (no
  guidance once the model's time ``(1000 - t) / 1000`` exceeds it, compared as the pipeline
  compares it: that float32 value against the option in float64; ``None``: never) and
  ``cfg_normalization`` (documented as a bool: ``True`` caps the guided velocity's norm at the
  positive's, a number at that multiple of it; ``False`` or 0: no cap), both without a host
  synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ralu_schedule._errors import check_finite

from ..caches import model_call
from .base import DiffusersBackend, EmbeddingInputs, batched_slice, lora_scaled
from .img2img import ImageStart, encode_each

PATCH, FRAME_PATCH = 2, 1


def rope_table(embedder, ids: torch.Tensor) -> torch.Tensor:
    """The rotary table of Z-Image's ``RopeEmbedder`` at float ids ``(N, 3)``: its formula
    (angles in float64, then float32, then ``polar``) at any position; at integer ids, its own
    table's entries."""
    parts = []
    for i, dim in enumerate(embedder.axes_dims):
        freqs = 1.0 / (embedder.theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim))
        angles = torch.outer(ids[:, i].to(torch.float64), freqs).float()
        parts.append(torch.polar(torch.ones_like(angles), angles).to(torch.complex64))
    return torch.cat(parts, dim=-1)


@dataclass
class ZImagePositions:
    """A stage's image positions: the rotary table of every item of the call (``(N, L_pad, D/2)``,
    the negative half's items after the positive's) and the caption lengths it was built for."""

    freqs: torch.Tensor
    caption_lengths: tuple
    tokens: object = field(repr=False)


@dataclass
class ZImageConditioning:
    prompt_embeds: list                      # one (T_i, width) tensor per image
    negative_prompt_embeds: list | None      # with guidance
    guidance_scale: float
    cfg_truncation: float | None             # None: no truncation
    cfg_normalization: float                 # 0: no cap
    joint_attention_kwargs: dict | None

    @property
    def batch(self) -> int:
        return len(self.prompt_embeds)

    @property
    def guided(self) -> bool:
        return self.negative_prompt_embeds is not None

    @property
    def calls(self) -> int:
        return 2 if self.guided else 1

    @property
    def text_tokens(self) -> int:
        return max(len(e) for e in self.prompt_embeds)

    @property
    def captions(self) -> list:
        """The caption of every item of a call: positives, then negatives under guidance."""
        return list(self.prompt_embeds) + (list(self.negative_prompt_embeds) if self.guided else [])

    def image(self, b: int) -> "ZImageConditioning":
        return ZImageConditioning(batched_slice(self.prompt_embeds, b), batched_slice(self.negative_prompt_embeds, b),
                                  self.guidance_scale, self.cfg_truncation, self.cfg_normalization,
                                  self.joint_attention_kwargs)

    def callback_tensors(self) -> dict:
        out = {"prompt_embeds": self.prompt_embeds}
        if self.guided:
            out["negative_prompt_embeds"] = self.negative_prompt_embeds
        return out

    def update(self, values: dict) -> None:
        if "prompt_embeds" in values:
            self.prompt_embeds = list(values["prompt_embeds"])
        if "negative_prompt_embeds" in values and self.guided:
            self.negative_prompt_embeds = list(values["negative_prompt_embeds"])


def padded(n: int, multiple: int) -> int:
    return n + (-n) % multiple


def forward_tokens(transformer, x: torch.Tensor, freqs: torch.Tensor, captions: list, t: torch.Tensor) -> torch.Tensor:
    """Z-Image's forward on tokens ``x`` ``(N, L, 4 C)`` in its own ``(dy, dx, c)`` feature order,
    rotary ``freqs`` ``(N, L_pad, D/2)`` for the image tokens and their padding, one caption
    per item and timestep ``t`` ``(N,)`` (``1 - sigma``); returns ``(N, L, 4 C)``. The
    model's modules and sequence helpers, in the stock order (noise refiner, caption embedder
    and refiner, the joint layers on ``[image, caption]``, the final layer)."""
    from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF

    tr = transformer
    key = f"{PATCH}-{FRAME_PATCH}"
    N, L, _ = x.shape
    device = x.device
    adaln = tr.t_embedder(t * tr.t_scale).type_as(x)
    # the image: embedded, padded with the learned pad token, refined
    h = tr.all_x_embedder[key](x.reshape(N * L, -1)).view(N, L, -1)
    pad = padded(L, SEQ_MULTI_OF) - L
    if pad:
        h = torch.cat([h, tr.x_pad_token.to(h.dtype).expand(N, pad, -1)], dim=1)
    for layer in tr.noise_refiner:
        h = layer(h, None, freqs, adaln, None, None, None)
    # the captions, as the stock forward prepares them
    cap, cap_ids, cap_pad = [], [], []
    for feat in captions:
        out, ids, mask, _, _ = tr._pad_with_ids(feat, (padded(len(feat), SEQ_MULTI_OF), 1, 1), (1, 0, 0), device)
        cap.append(out)
        cap_ids.append(ids)
        cap_pad.append(mask)
    cap_lens = [len(c) for c in cap]
    c = tr.cap_embedder(torch.cat(cap, dim=0))
    c, c_freqs, c_mask, _, _ = tr._prepare_sequence(list(c.split(cap_lens, dim=0)), cap_ids, cap_pad,
                                                    tr.cap_pad_token, None, device)
    for layer in tr.context_refiner:
        c = layer(c, c_mask, c_freqs)
    # image then caption, one joint sequence per item
    unified, u_freqs, u_mask, _ = tr._build_unified_sequence(h, freqs, [h.shape[1]] * N, None, c, c_freqs, cap_lens,
                                                             None, None, None, None, None, False, device)
    for layer in tr.layers:
        unified = layer(unified, u_mask, u_freqs, adaln, None, None, None)
    return tr.all_final_layer[key](unified, c=adaln)[:, :L]


class ZImageBackend(DiffusersBackend):
    name = "z-image"
    default_guidance_scale = 5.0
    output_form = input_form = "latent"
    default_max_sequence_length = 512
    block_lists = ("noise_refiner", "context_refiner", "layers")
    text_width_field = "cap_feat_dim"
    embedding_inputs = EmbeddingInputs({"prompt_embeds": "list", "negative_prompt_embeds": "list"})

    def __init__(self, pipe):
        super().__init__(pipe)
        cfg = self.transformer.config
        if PATCH not in cfg.all_patch_size or FRAME_PATCH not in cfg.all_f_patch_size:
            raise ValueError(f"the Z-Image backend needs patch size {PATCH} and frame patch size {FRAME_PATCH} (the "
                             f"pipeline's), got {cfg.all_patch_size} and {cfg.all_f_patch_size}")
        C = cfg.in_channels
        self.latent_channels = C
        self.features = C * PATCH * PATCH
        self.pixels_per_token = pipe.vae_scale_factor * PATCH
        # RALU's (c, dy, dx) order -> Z-Image's (dy, dx, c) and back
        ours = torch.arange(self.features).view(C, PATCH, PATCH)
        self._to_model = ours.permute(1, 2, 0).reshape(-1)
        self._from_model = torch.argsort(self._to_model)

    @property
    def default_size(self) -> int:
        return 1024                                            # ZImagePipeline's default side

    @property
    def latents_dtype(self) -> torch.dtype:
        return torch.float32                                   # ZImagePipeline's latents, whatever the weights


    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_embeds=None, negative_prompt=None, negative_prompt_embeds=None,
               cfg_truncation: float | None = 1.0, cfg_normalization: bool | float = False) -> ZImageConditioning:
        """As ZImagePipeline: classifier-free guidance when ``guidance_scale > 0`` (an empty
        negative prompt unless one is given)."""
        guided = guidance_scale > 0
        if not guided and (negative_prompt is not None or negative_prompt_embeds is not None):
            raise ValueError(f"a negative prompt on Z-Image needs guidance_scale > 0 (classifier-free guidance), got "
                             f"{guidance_scale:g}; without it the negative prompt would be ignored")
        if cfg_truncation is not None:
            cfg_truncation = check_finite("cfg_truncation", cfg_truncation)
        # documented as a bool (ZImagePipeline: True caps at the positive's norm, i.e. 1.0), or a multiple
        cfg_normalization = check_finite("cfg_normalization", float(cfg_normalization) if isinstance(
            cfg_normalization, bool) else cfg_normalization)
        if prompt_embeds is not None and guided and negative_prompt_embeds is None:
            raise ValueError("prompt_embeds with guidance_scale > 0 need negative_prompt_embeds (ZImagePipeline's rule)")
        if prompt_embeds is None or guided and negative_prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            negatives = negative_prompt if negative_prompt is None or isinstance(negative_prompt, list) else (
                [negative_prompt] * len(prompts))
            prompt_embeds, negative_prompt_embeds = self.pipe.encode_prompt(
                prompt=prompts, device=device, do_classifier_free_guidance=guided, negative_prompt=negatives,
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                max_sequence_length=max_sequence_length)
            repeat = lambda e: [x for x in e for _ in range(num_images_per_prompt)]  # noqa: E731
            prompt_embeds = repeat(prompt_embeds)
            negative_prompt_embeds = repeat(negative_prompt_embeds) if guided else None
        if guided and len(negative_prompt_embeds) != len(prompt_embeds):
            raise ValueError(f"negative prompts give {len(negative_prompt_embeds)} embeddings for {len(prompt_embeds)} "
                             "prompts; give one negative prompt per prompt")
        return ZImageConditioning(list(prompt_embeds), list(negative_prompt_embeds) if guided else None,
                                  float(guidance_scale), cfg_truncation, cfg_normalization, joint_attention_kwargs)

    def prepare(self, tokens, cond: ZImageConditioning) -> ZImagePositions:
        """The rotary table of every item's image tokens: ``(cap_len + 1, row, col)`` at the
        coordinate rule's positions, ``cap_len`` the item's padded caption length; padding
        tokens at ``(0, 0, 0)`` as the stock model places them."""
        from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF

        lengths = tuple(len(c) for c in cond.captions)
        pos = tokens.positions()                                          # (B, L, 2)
        limits = self.transformer.rope_embedder.axes_lens
        frame = tokens.frame
        if frame[0] >= limits[1] or frame[1] >= limits[2]:
            raise ValueError(f"a {frame[0]}x{frame[1]} token frame exceeds Z-Image's position table "
                             f"({limits[1]}x{limits[2]} tokens); use a smaller image")
        B, L, _ = pos.shape
        pos = pos.repeat(len(lengths) // B, 1, 1)                         # the negative half sees the same tokens
        frames = torch.tensor([padded(n, SEQ_MULTI_OF) + 1 for n in lengths], dtype=torch.float32,
                              device=pos.device)
        ids = torch.cat([frames[:, None, None].expand(-1, L, 1), pos], dim=-1)
        pad = padded(L, SEQ_MULTI_OF) - L
        if pad:
            ids = torch.cat([ids, ids.new_zeros(len(lengths), pad, 3)], dim=1)
        freqs = rope_table(self.transformer.rope_embedder, ids.reshape(-1, 3)).view(len(lengths), L + pad, -1)
        return ZImagePositions(freqs, lengths, tokens)

    def velocity(self, x: torch.Tensor, positions: ZImagePositions, sigma: torch.Tensor,
                 cond: ZImageConditioning) -> torch.Tensor:
        if tuple(len(c) for c in cond.captions) != positions.caption_lengths:     # a callback changed the captions
            positions = self.prepare(positions.tokens, cond)
        dtype = self.transformer.dtype
        xin = x.to(dtype)[..., self._to_model.to(x.device)]
        t = (1000 - (sigma * 1000).expand(x.shape[0])) / 1000                        # the model's time: 1 - sigma
        if cond.guided:
            xin, t = xin.repeat(2, 1, 1), t.repeat(2)
        with model_call(self.transformer, "cond"), lora_scaled(self.transformer, cond.joint_attention_kwargs):
            out = forward_tokens(self.transformer, xin, positions.freqs, cond.captions, t).float()   # one call
        if cond.guided:
            pos, neg = out.chunk(2)
            out = self._guide(pos, neg, sigma, cond)
        return -out[..., self._from_model.to(x.device)]

    @staticmethod
    def _guide(pos, neg, sigma, cond):
        """ZImagePipeline's guidance, per image, without reading anything back to the host."""
        guided = pos + cond.guidance_scale * (pos - neg)
        if cond.cfg_normalization > 0:
            keep = torch.linalg.vector_norm(pos, dim=(1, 2), keepdim=True) * cond.cfg_normalization
            norm = torch.linalg.vector_norm(guided, dim=(1, 2), keepdim=True)
            guided = torch.where(norm > keep, guided * (keep / norm), guided)
        if cond.cfg_truncation is not None and cond.cfg_truncation <= 1:
            # no guidance once (1000 - t) / 1000 exceeds the truncation, in the pipeline's arithmetic: t = 1000
            # sigma and that time in float32 (its timesteps'), compared in float64 (its .tolist() against a float)
            t_norm = (1000 - sigma * 1000) / 1000
            guided = torch.where(t_norm.double() > cond.cfg_truncation, pos, guided)
        return guided

    def cost_spec(self):
        from ralu_schedule.cost import ZImageSpec

        c = self.transformer.config
        return ZImageSpec(layers=c.n_layers, refiner_layers=c.n_refiner_layers, heads=c.n_heads,
                          head_dim=c.dim // c.n_heads, token_features=self.features, context_dim=c.cap_feat_dim)


class ZImageImg2ImgBackend(ImageStart, ZImageBackend):
    """``ZImageImg2ImgPipeline``: Z-Image from an image (:mod:`.img2img`), guidance 5.0 and strength
    0.6 by default. The pipeline does not resize the image: it runs at the image's own size (rounded
    down to a multiple of 16 by its processor), which is also the default size."""

    def preprocess(self, image, height, width):
        pixels = self.pipe.image_processor.preprocess(image).to(dtype=torch.float32)
        h, w = pixels.shape[-2:]
        if (height is not None and height != h) or (width is not None and width != w):
            raise ValueError(f"{self.pipeline_name} runs at its image's size, {w}x{h} (width x height) here, and does not "
                             f"resize it; got height {height} and width {width}: leave them out or give the image's")
        return pixels, int(h), int(w), None

    def vae_latents(self, pixels: torch.Tensor, generator) -> torch.Tensor:
        from diffusers.pipelines.z_image.pipeline_z_image_img2img import retrieve_latents

        return self.to_model_space(encode_each(self.vae, pixels, generator, retrieve_latents))
