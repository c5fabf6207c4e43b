"""Qwen-Image 2.1 text-to-image through diffusers' ``QwenImage21Pipeline`` components.

What differs from Qwen-Image:

- a token is one latent pixel of the 64-channel, 16x VAE (``patch`` 1: 16 pixels a side); the
  pipeline draws its noise as that latent and flattens it (``noise_layout = "patches"``), so
  RALU's tokens are the pipeline's packed latents;
- one single-stream, block-causal sequence ``[text, image]``: the prompt's Qwen3-VL hidden
  states (right-padded; the padding masked as keys) then the image tokens. The text is causal
  and never sees the image; with ``causal_condition`` (the published model) it is modulated
  from ``t = 0``, so its keys and values are the same at every step and, since the text never
  attends to the image, at every token layout: the pipeline caches them after its first step
  (``use_kv_cache``, on by default) and so does RALU, once per run (on its first call), every
  step then running the image tokens alone against that prefix, as the pipeline's later steps
  do. With ``use_kv_cache=False`` (or a model without ``causal_condition``) every call runs the
  whole sequence, as the pipeline does then;
- :func:`forward_tokens` runs the model's own modules and blocks (the stock forward builds the
  sequence and positions from a regular image of a token count divisible by 4);
- positions: three axes. Text token ``k`` sits at ``(k, k, k)``; every image token at frame
  ``T`` (the text's length, padding included) and a row and column centred on the frame as
  Qwen-Image's (:func:`ralu_torch.backends.qwenimage.centred`): a uniform stage takes the
  model's own table (``pos_embed`` of its frame), a mixed stage evaluates the model's
  ``rope_params`` at each token's (fractional) position, per image, through the stock
  processor (:class:`ralu_torch.backends.rotary.PerImage`);
- guidance: none by default (``true_cfg_scale`` 1); true CFG with a negative prompt and
  ``true_cfg_scale > 1`` (a second call, ``neg + scale (pos - neg)``, no rescale);
- condition images (``image=``: the image-conditioned mode, whose images enter the sequence as
  reference tokens) are refused by name (:mod:`.families`), as are Qwen-Image-2.1-Turbo's
  hand-set ``sample_sigmas`` (RALU's stages take uniform steps under a shift);
- decode: the per-channel mean and standard deviation undone, the one-frame video VAE, whose
  images are RGBA (4 channels), as the pipeline returns them.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from ralu_schedule._errors import check_finite

from . import rotary
from .base import BranchConditioning, DiffusersBackend, Guided, check_negative_batch, lora_scaled, stock_timestep
from .qwenimage import EMBEDDINGS, centred
from ..caches import cache_config
from ..tokens import pack


@dataclasses.dataclass
class Prefix:
    """The text's keys and values of one guidance branch, stored by the blocks on the first
    call that needs them (``QwenImage21KVCache``), or ``None`` where every call runs the text."""

    kv: object = None
    ready: bool = False


@dataclasses.dataclass
class QwenImage21Branch(BranchConditioning):
    BATCHED = ("prompt_embeds", "prompt_embeds_mask")

    prompt_embeds: torch.Tensor
    prompt_embeds_mask: torch.Tensor | None      # (B, T) bool; None when nothing is padded
    prefix: Prefix


@dataclasses.dataclass
class QwenImage21Conditioning(Guided):
    """True CFG (``neg + scale (pos - neg)``) when a negative prompt is given with
    ``true_cfg_scale > 1``, else one call; ``attention_kwargs`` the pipeline's (a LoRA ``scale``)."""

    attention_kwargs: dict | None = None


@dataclasses.dataclass
class QwenImage21Positions:
    """A stage's rotary tables, by text length: the text's ``(T, D/2)`` and the image's, one
    ``(L, D/2)`` table shared by the batch or a :class:`~.rotary.PerImage` ``(B, L, D/2)``."""

    tables: dict


def _probe() -> bool:
    from diffusers.models.transformers import transformer_qwenimage21

    return rotary.probe_complex(functools.partial(transformer_qwenimage21.apply_rotary_emb_qwen, use_real=False))


def forward_tokens(transformer, x: torch.Tensor, t: torch.Tensor, branch: QwenImage21Branch, tables: tuple,
                   mode: str | None) -> torch.Tensor:
    """``QwenImage21Transformer2DModel`` on image tokens ``x`` ``(B, L, C)`` at timestep ``t``
    ``(B,)`` (``sigma``, as the pipeline feeds it), the branch's text, and ``tables`` (text,
    image) from :meth:`QwenImage21Backend.prepare`. ``mode``: ``"cached"`` runs the image
    tokens against the branch's stored text prefix, ``"extract"`` runs ``[text, image]`` and
    stores the prefix, ``None`` runs ``[text, image]`` alone. The stock forward's modules and
    block calls, in its order; returns the image tokens' output ``(B, L, C)``."""
    tr = transformer
    B, L, _ = x.shape
    text_table, image_table = tables
    embeds, mask = branch.prompt_embeds, branch.prompt_embeds_mask
    T = embeds.shape[1]
    h = tr.img_in(x)
    timestep = t.to(h.dtype)
    causal = tr.config.causal_condition
    if causal:                                    # one more row at t = 0, which text tokens modulate from
        timestep = torch.cat([timestep, timestep.new_zeros(1)])
    temb = tr.time_text_embed(timestep, h)
    modulation = tr.modulation(temb)
    key_valid = None
    if mask is not None:                          # padded text positions are never keys
        key_valid = torch.cat([mask.bool(), torch.ones(B, L, dtype=torch.bool, device=x.device)], dim=1)
    if mode == "cached":
        joint, rot = h, image_table
        target = torch.ones(L, dtype=torch.bool, device=x.device) if causal else None
        kwargs = dict(attention_mask=None if key_valid is None else key_valid[:, None, None, :], segments=None,
                      key_valid=None, cache_write_slice=None)
    else:
        joint = torch.cat([tr.txt_in(embeds), h], dim=1)
        if isinstance(image_table, rotary.PerImage):
            rot = rotary.PerImage(torch.cat([text_table.expand(B, -1, -1), image_table.table], dim=1))
        else:
            rot = torch.cat([text_table, image_table])
        target = (torch.arange(T + L, device=x.device) >= T) if causal else None
        kwargs = dict(attention_mask=None, segments=[(0, T, True)] if T else [], key_valid=key_valid,
                      cache_write_slice=slice(0, T) if mode == "extract" else None)
    kv = branch.prefix.kv if mode is not None else None
    for i, block in enumerate(tr.transformer_blocks):
        joint = block(hidden_states=joint, modulation=modulation, rotary_emb=rot, target_token_mask=target,
                      layer_cache=None if kv is None else kv.get_layer(i), kv_cache_mode=mode, **kwargs)
    if mode == "extract":
        branch.prefix.ready = True
    # the output layers are per token: on the image tokens only (the pipeline keeps those)
    image = joint[:, joint.shape[1] - L:]
    return tr.proj_out(tr.norm_out(image, temb, None if target is None else target[target.shape[0] - L:]))


class QwenImage21Backend(DiffusersBackend):
    name = "qwen-image-2.1"
    default_guidance_scale = None                 # QwenImage21Pipeline takes no guidance_scale
    default_max_sequence_length = None            # nor a max_sequence_length: the prompt is not padded
    noise_layout = "patches"
    patch = 1
    text_width_field = "context_in_dim"
    text_encoders = ("text_encoder", "processor")   # QwenImage21Pipeline's prompt goes through Qwen3-VL's processor
    embedding_inputs = EMBEDDINGS                   # Qwen-Image's: the embeddings with their masks

    def __init__(self, pipe):
        super().__init__(pipe)
        from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21AttnProcessor

        cfg = self.transformer.config
        if cfg.patch_size != 1:
            raise ValueError(f"the Qwen-Image 2.1 backend needs patch size 1 (the published model's), got "
                             f"{cfg.patch_size}")
        if pipe.config.get("sample_sigmas") is not None:
            raise ValueError("this QwenImage21Pipeline samples on its configured sample_sigmas (Qwen-Image-2.1-Turbo's "
                             "hand-set grid); RALU's stages take uniform steps under the scheduler's shift, so it runs "
                             "pipelines without sample_sigmas (Qwen-Image 2.1)")
        other = {type(b.attn.processor).__name__ for b in self.transformer.transformer_blocks
                 if type(b.attn.processor) is not QwenImage21AttnProcessor}
        if other:
            raise ValueError(f"RALU runs Qwen-Image 2.1 with its default QwenImage21AttnProcessor, which takes the "
                             f"block-causal structure as segments; this transformer uses {', '.join(sorted(other))}")
        self.features = self.latent_channels = cfg.in_channels        # 64: one latent pixel per token
        self.pixels_per_token = pipe.vae_scale_factor                  # 16

    @property
    def default_size(self) -> int:
        return 1024                                                    # QwenImage21Pipeline's output_resolution

    # -- conditioning --------------------------------------------------------------------------
    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_embeds=None, prompt_embeds_mask=None, negative_prompt=None, negative_prompt_embeds=None,
               negative_prompt_embeds_mask=None, true_cfg_scale: float = 1.0,
               use_kv_cache: bool = True) -> QwenImage21Conditioning:
        """As QwenImage21Pipeline: true CFG when a negative prompt is given and ``true_cfg_scale > 1``."""
        for name, value in (("guidance_scale", guidance_scale), ("max_sequence_length", max_sequence_length)):
            if value is not None:
                raise ValueError(f"QwenImage21Pipeline takes no {name} (guidance is true CFG: a negative prompt with "
                                 "true_cfg_scale > 1; the prompt is not padded)")
        if cache_config(self.transformer) is not None:
            raise ValueError("RALU does not run diffusers' caches with Qwen-Image 2.1: its blocks run against the "
                             "text's stored keys and values, which a block cache would skip")
        true_cfg_scale = check_finite("true_cfg_scale", true_cfg_scale)
        if not isinstance(use_kv_cache, bool):
            raise ValueError(f"use_kv_cache must be True or False, got {use_kv_cache!r}")
        has_negative = negative_prompt is not None or negative_prompt_embeds is not None
        if has_negative and true_cfg_scale <= 1:
            raise ValueError(f"a negative prompt on Qwen-Image 2.1 needs true_cfg_scale > 1 (true CFG), got "
                             f"{true_cfg_scale:g}; without it the negative prompt would be ignored")
        if true_cfg_scale > 1 and not has_negative:
            raise ValueError(f"true_cfg_scale {true_cfg_scale:g} on Qwen-Image 2.1 needs a negative prompt (true CFG "
                             "guides away from it); without one it would be ignored")
        cached = use_kv_cache and bool(self.transformer.config.causal_condition)
        enc = functools.partial(self.pipe.encode_prompt, device=device, num_images_per_prompt=num_images_per_prompt)

        def branch(text, embeds, mask):
            embeds, mask, _ = enc(prompt=text, prompt_embeds=embeds, prompt_embeds_mask=mask)
            return QwenImage21Branch(embeds.to(self.dtype), None if mask is None else mask.bool(), Prefix())

        positive = branch(prompt, prompt_embeds, prompt_embeds_mask)
        negative = None
        if has_negative:
            negative = branch(negative_prompt, negative_prompt_embeds, negative_prompt_embeds_mask)
            check_negative_batch(positive.prompt_embeds, negative.prompt_embeds)
        if cached:
            from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

            for b in (positive, negative):
                if b is not None:
                    b.prefix.kv = QwenImage21KVCache(len(self.transformer.transformer_blocks))
        return QwenImage21Conditioning(positive, negative, float(true_cfg_scale),
                                       text_tokens=positive.prompt_embeds.shape[1],
                                       attention_kwargs=joint_attention_kwargs)

    # -- positions and the model ------------------------------------------------------------------
    def prepare(self, tokens, cond: QwenImage21Conditioning) -> QwenImage21Positions:
        """Each branch's text and image rotary tables for a stage's tokens (the image at frame
        ``T``, its text's length): the model's own table where the batch shares a regular
        grid, else per image at each token's position (the coordinate rule, centred)."""
        rope = self.transformer.pos_embed
        pos = tokens.positions()                                          # (B, L, 2)
        frame = tokens.frame
        shared = tokens.uniform and bool((pos == pos[:1]).all())
        if not shared and not rotary.takes_per_image(_probe):
            raise ValueError("this diffusers' Qwen-Image 2.1 rotary function does not take per-image tables, so RALU "
                             "cannot run a mixed-resolution stage with it; use a layout whose transitions all have "
                             "fraction 1")
        tables = {}
        for _, branch in cond.branches():
            T = branch.prompt_embeds.shape[1]
            if T in tables:
                continue
            layout = torch.cat([torch.zeros(T, dtype=torch.bool), torch.ones(frame[0] * frame[1], dtype=torch.bool)])
            stock = rope([(1, *frame)], layout.to(pos.device), device=pos.device)   # the model's table on this frame
            if shared:
                tables[T] = (stock[:T], stock[T:])
                continue
            B, L, _ = pos.shape
            c = centred(pos.reshape(B * L, 2), frame).cpu()
            # on the CPU, as the model computes its own table (then moves it): the same bits on every device
            axis = lambda p, dim: rope.rope_params(p, dim, rope.theta).to(pos.device)  # noqa: E731
            d_frame, d_row, d_col = rope.axes_dim
            image = torch.cat([axis(torch.full_like(c[:, 0], T), d_frame), axis(c[:, 0], d_row), axis(c[:, 1], d_col)],
                              dim=-1)
            tables[T] = (stock[:T], rotary.PerImage(image.view(B, L, -1)))
        return QwenImage21Positions(tables)

    def _prefill(self, branch: QwenImage21Branch, text_table: torch.Tensor) -> None:
        """Store the branch's text keys and values: the text alone through the blocks as the
        pipeline's first step runs it (causal, padding masked, modulated from ``t = 0``)."""
        B = branch.prompt_embeds.shape[0]
        empty = branch.prompt_embeds.new_zeros(B, 0, self.features)
        t = torch.zeros(B, device=empty.device)
        with torch.no_grad():
            forward_tokens(self.transformer, empty, t, branch, (text_table, text_table[:0]), "extract")

    def velocity(self, x: torch.Tensor, positions: QwenImage21Positions, sigma: torch.Tensor,
                 cond: QwenImage21Conditioning) -> torch.Tensor:
        dtype = self.dtype
        xin = x.to(dtype)
        t = stock_timestep(sigma, x.shape[0], dtype)                      # (1000 sigma in the model dtype) / 1000

        def call(branch):
            tables = positions.tables[branch.prompt_embeds.shape[1]]
            if branch.prefix.kv is not None and not branch.prefix.ready:     # the text prefix, once per run
                self._prefill(branch, tables[0])
            return forward_tokens(self.transformer, xin, t, branch, tables, "cached" if branch.prefix.ready else None)

        with lora_scaled(self.transformer, cond.attention_kwargs):
            return cond.run(self.transformer, call)

    # -- latents -------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (RALU's 2x2 form of ``(B, 64, h, w)``) to RGBA images in ``[-1, 1]``, as
        QwenImage21Pipeline decodes: per-channel statistics undone, one frame."""
        cfg = self.vae.config
        B, _, H, W = latents.shape
        z = pack(latents).transpose(1, 2).reshape(B, self.features, 1, H // 2, W // 2).to(self.vae.dtype)
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean).view(shape).to(z.device, z.dtype)
        std = torch.tensor(cfg.latents_std).view(shape).to(z.device, z.dtype)
        return self.vae.decode(z * std + mean, return_dict=False)[0][:, :, 0]

    def cost_spec(self, kv_cache: bool = True):
        from ralu_schedule.cost import QwenImage21Spec

        c = self.transformer.config
        return QwenImage21Spec(layers=c.num_layers, heads=c.num_attention_heads, head_dim=c.attention_head_dim,
                               mlp_ratio=c.mlp_ratio, token_features=c.in_channels, out_features=c.out_channels,
                               context_dim=c.context_in_dim, kv_cache=kv_cache)

    def call_spec(self, cond) -> tuple:
        return self.cost_spec(kv_cache=cond.positive.prefix.kv is not None), cond.text_tokens
