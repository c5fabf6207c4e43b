"""Wan 2.1 and 2.2 text-to-video through diffusers' ``WanPipeline`` components.

A video is a clip of latent frames ``(B, C, T, h, w)``; Wan patches it by ``(1, 2, 2)``, so a
token is a ``2 x 2`` patch of one latent frame and the stock sequence runs frame by frame,
row by row. RALU stacks the latent frames along the row axis: the token grid is
``(T * rows, cols)`` with ``rows = h / 2``, whose raster order *is* Wan's token order. A
coarse token of side ``D`` then covers ``D x D`` patches of one frame (the per-frame rows are
a multiple of ``D``), so downsampling acts on rows and columns only, every latent frame is
kept, and the token bookkeeping, the upsampling map ``U``, the re-injection noise and the
kept-token variance work per frame with no code of their own. The stacked latent
``(B, C, T h, w)`` is the clip's memory viewed without a copy, so the first noise drawn in
it is the noise ``WanPipeline`` draws.

What differs from the image families:

- positions are three-axis: a token's frame is its own integer index, its row and column
  follow the coordinate rule within the frame (``cells / D``); :func:`rope_tables` evaluates
  ``WanRotaryPosEmbed``'s formula there (at integer positions: its own table's entries), and
  the stock attention processor broadcasts ``(B, L, 1, D)`` tables per image, so a mixed
  stage is one transformer call per branch;
- :func:`forward_tokens` runs the model's own modules on tokens (patch embedding as the
  linear map it is, condition embedder, blocks, output norm and projection), since the stock
  forward builds positions from a regular latent's shape;
- patches come out ordered ``(dy, dx, channel)`` (RALU's tokens: ``(channel, dy, dx)``);
- Wan 2.2 A14B has two experts: ``transformer`` for high noise and ``transformer_2`` below
  ``boundary_ratio``, with ``guidance_scale_2``. RALU's transitions move the noise level back
  up, so a later stage can return to the high-noise expert: the choice is made per model call
  from the call's sigma (read on the host from the schedule, see :meth:`WanBackend.before_call`),
  never per stage;
- the clean estimate of the whole clip is decoded once per partial transition; the selection
  policies score a token by the frames its latent frame stands for (:mod:`ralu_torch.selection`).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ralu_schedule._errors import check_finite

from .base import BranchConditioning, DiffusersBackend, EmbeddingInputs, Guided, check_negative_batch, lora_scaled
from .clips import ClipBackend

PATCH = (1, 2, 2)
#: ``WanRotaryPosEmbed``'s theta (the model builds it with the default and keeps no copy)
ROPE_THETA = 10000.0


def rope_tables(rope, frame: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> tuple:
    """``(cos, sin)``, each ``(*shape, D)``, of Wan's rotary embedding at float positions:
    its formula (angles in float64, then float32) on the frame, row and column axes."""
    cos, sin = [], []
    for pos, dim in ((frame, rope.t_dim), (row, rope.h_dim), (col, rope.w_dim)):
        freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim))
        angles = pos.to(torch.float64)[..., None] * freqs
        cos.append(angles.cos().repeat_interleave(2, dim=-1).float())
        sin.append(angles.sin().repeat_interleave(2, dim=-1).float())
    return torch.cat(cos, dim=-1), torch.cat(sin, dim=-1)


def forward_tokens(transformer, x: torch.Tensor, rotary: tuple, text: torch.Tensor, t: torch.Tensor,
                   expand_timesteps: bool = False) -> torch.Tensor:
    """``WanTransformer3DModel`` on tokens ``x`` ``(B, L, 4 C)`` (RALU's ``(channel, dy, dx)``
    order) with rotary tables ``(cos, sin)`` ``(B, L, 1, D)``, text embeddings ``(B, T, width)``
    and timestep ``t`` ``(B,)``; returns ``(B, L, 4 C)`` in the same order. The stock forward's
    modules in its order; ``expand_timesteps`` (Wan 2.2 TI2V) gives every token the timestep."""
    tr = transformer
    B, L, _ = x.shape
    conv = tr.patch_embedding                         # a (1, 2, 2) convolution with that stride: a linear map
    h = F.linear(x, conv.weight.flatten(1), conv.bias)
    if expand_timesteps:
        emb_t, seq = t[:, None].expand(B, L).flatten(), L
    else:
        emb_t, seq = t, None
    temb, proj, text, _ = tr.condition_embedder(emb_t, text, None, timestep_seq_len=seq)
    proj = proj.unflatten(2 if seq is not None else 1, (6, -1))
    for block in tr.blocks:
        h = block(h, text, proj, rotary)
    if temb.ndim == 3:
        shift, scale = (tr.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        shift, scale = shift.squeeze(2), scale.squeeze(2)
    else:
        shift, scale = (tr.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
    h = (tr.norm_out(h.float()) * (1 + scale) + shift).type_as(h)
    out = tr.proj_out(h)                              # (B, L, (dy, dx, C))
    return out.view(B, L, PATCH[1], PATCH[2], -1).permute(0, 1, 4, 2, 3).reshape(B, L, -1)


@dataclasses.dataclass
class WanPositions:
    rotary: tuple          # (cos, sin), each (B, L, 1, D)


@dataclasses.dataclass
class WanBranch(BranchConditioning):
    BATCHED = ("prompt_embeds",)
    prompt_embeds: torch.Tensor


@dataclasses.dataclass
class WanConditioning(Guided):
    """Guided conditioning of a clip: classifier-free guidance (``neg + scale (pos - neg)``, two
    calls a step) when ``guidance_scale > 1``, as WanPipeline; ``scale_2`` is the low-noise
    expert's scale (Wan 2.2), ``attention_kwargs`` the pipeline's (a LoRA ``scale``)."""

    scale_2: float | None = None
    attention_kwargs: dict | None = None


class WanBackend(ClipBackend, DiffusersBackend):
    name = "wan"
    default_guidance_scale = 5.0
    default_max_sequence_length = 512
    text_width_field = "text_dim"
    embedding_inputs = EmbeddingInputs({"prompt_embeds": 3, "negative_prompt_embeds": 3},
                                       requires={"negative_prompt_embeds": ("prompt_embeds",)})

    def __init__(self, pipe):
        super().__init__(pipe)
        experts = [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
        if pipe.transformer is None:
            raise ValueError("RALU runs WanPipeline with its transformer (the high-noise expert) loaded; this "
                             "pipeline has only transformer_2")
        for m in experts:
            if tuple(m.config.patch_size) != PATCH:
                raise ValueError(f"the Wan backend needs patch size {PATCH} (WanPipeline's), got "
                                 f"{tuple(m.config.patch_size)}")
        self.experts = experts
        cfg = self.transformer.config
        self.latent_channels = cfg.in_channels
        self.features = cfg.in_channels * PATCH[1] * PATCH[2]
        self.temporal = pipe.vae_scale_factor_temporal
        self.pixels_per_token = pipe.vae_scale_factor_spatial * PATCH[1]
        ratio = pipe.config.get("boundary_ratio")
        self.boundary = None if ratio is None or len(experts) < 2 else (
            float(ratio) * pipe.scheduler.config.num_train_timesteps)
        self.expand_timesteps = bool(pipe.config.get("expand_timesteps", False))
        self._sigma = None

    @property
    def default_height(self) -> int:
        return 480                                    # WanPipeline's defaults

    @property
    def default_width(self) -> int:
        return 832

    default_num_frames = 81

    def blocks(self) -> list:
        return [b for m in self.experts for b in m.blocks]

    # -- conditioning --------------------------------------------------------------------------
    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_embeds=None, negative_prompt=None, negative_prompt_embeds=None,
               guidance_scale_2=None) -> WanConditioning:
        """As WanPipeline: classifier-free guidance when ``guidance_scale > 1`` (the empty
        negative prompt unless one is given); ``guidance_scale_2`` only with two experts."""
        if guidance_scale_2 is not None:
            check_finite("guidance_scale_2", guidance_scale_2)
            if self.boundary is None:
                raise ValueError("guidance_scale_2 is the low-noise expert's scale; this WanPipeline has one "
                                 "transformer (no transformer_2 and boundary_ratio)")
        guided = guidance_scale > 1.0
        if not guided and (negative_prompt is not None or negative_prompt_embeds is not None):
            raise ValueError(f"a negative prompt on Wan needs guidance_scale > 1 (classifier-free guidance), got "
                             f"{guidance_scale:g}; without it the negative prompt would be ignored")
        if guided and prompt_embeds is not None and negative_prompt_embeds is None and self.pipe.text_encoder is None:
            raise ValueError("prompt_embeds with guidance_scale > 1 need negative_prompt_embeds (this pipeline has no "
                             "text encoder for the empty negative prompt)")
        if prompt_embeds is None or (guided and negative_prompt_embeds is None):
            if isinstance(negative_prompt, str) and isinstance(prompt, list):
                negative_prompt = [negative_prompt] * len(prompt)
            prompt_embeds, negative_prompt_embeds = self.pipe.encode_prompt(
                prompt=prompt if prompt_embeds is None else None, negative_prompt=negative_prompt,
                do_classifier_free_guidance=guided, num_videos_per_prompt=num_images_per_prompt,
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                max_sequence_length=max_sequence_length, device=device)
        dtype = self.dtype
        positive = WanBranch(prompt_embeds.to(dtype))
        negative = None
        if guided:
            check_negative_batch(prompt_embeds, negative_prompt_embeds)
            negative = WanBranch(negative_prompt_embeds.to(dtype))
        scale_2 = None if self.boundary is None else float(guidance_scale if guidance_scale_2 is None
                                                           else guidance_scale_2)
        return WanConditioning(positive, negative, float(guidance_scale), text_tokens=prompt_embeds.shape[1],
                               scale_2=scale_2, attention_kwargs=joint_attention_kwargs)

    # -- positions and the model ------------------------------------------------------------------
    def prepare(self, tokens, cond) -> WanPositions:
        """Rotary tables of a stage's tokens: frame index, then row and column within the frame
        at the coordinate rule (``cells / D``)."""
        rows = tokens.grid[0] // self.frames                              # token rows per latent frame
        D = tokens.coarsest
        limit = self.transformer.config.rope_max_seq_len
        if max(self.frames, rows // D, tokens.grid[1] // D) > limit:
            raise ValueError(f"a clip of {self.frames} latent frames of {rows}x{tokens.grid[1]} tokens exceeds Wan's "
                             f"rotary table ({limit} positions per axis)")
        cos, sin = rope_tables(self.transformer.rope, *self.clip_positions(tokens))
        return WanPositions((cos[:, :, None, :], sin[:, :, None, :]))

    def before_call(self, sigma: float) -> None:
        """The host value of the next call's sigma (from the schedule: no device read), which
        picks the expert as WanPipeline does (``t >= boundary``: the high-noise one)."""
        self._sigma = sigma

    def _expert(self, cond: WanConditioning):
        if self.boundary is None:
            return self.transformer, cond.scale
        if self._sigma is None:
            raise ValueError("a two-expert Wan pipeline needs each call's sigma on the host (the sampler's "
                             "before_call)")
        high = self._sigma * self.pipe.scheduler.config.num_train_timesteps >= self.boundary
        return (self.transformer, cond.scale) if high else (self.transformer_2, cond.scale_2)

    @property
    def transformer_2(self):
        return self.experts[1]

    def velocity(self, x: torch.Tensor, positions: WanPositions, sigma: torch.Tensor, cond: WanConditioning):
        model, scale = self._expert(cond)
        dtype = model.dtype
        xin = x.to(dtype)
        t = (sigma * 1000).expand(x.shape[0])          # WanPipeline feeds the scheduler's timestep, 1000 sigma
        with lora_scaled(model, cond.attention_kwargs):
            return dataclasses.replace(cond, scale=scale).run(
                model, lambda branch: forward_tokens(model, xin, positions.rotary, branch.prompt_embeds, t,
                                                     self.expand_timesteps))

    # -- latents and video ------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Stacked latents ``(B, C, T h, w)`` to the video ``(B, 3, frames, H, W)`` in ``[-1, 1]``, as
        WanPipeline decodes (its per-channel mean and standard deviation undone first)."""
        cfg = self.vae.config
        clip = self._clip(latents).to(self.vae.dtype)
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, device=clip.device, dtype=clip.dtype).view(shape)
        std = torch.tensor(cfg.latents_std, device=clip.device, dtype=clip.dtype).view(shape)
        return self.vae.decode(clip * std + mean, return_dict=False)[0]

    def cost_spec(self):
        from ralu_schedule.cost import WanSpec

        c = self.transformer.config
        return WanSpec(layers=c.num_layers, heads=c.num_attention_heads, head_dim=c.attention_head_dim,
                       ffn=c.ffn_dim, in_channels=c.in_channels, out_channels=c.out_channels, text_dim=c.text_dim,
                       freq_dim=c.freq_dim, expand_timesteps=self.expand_timesteps,
                       pixels_per_token=self.pixels_per_token)
