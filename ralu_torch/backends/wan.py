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

import numpy as np
import torch
import torch.nn.functional as F

from ralu_schedule._errors import check_finite

from ..tokens import latent_tokens, pack
from .base import (EMPTY_NEGATIVE, BranchConditioning, DiffusersBackend, EmbeddingInputs, Guided, check_negative_batch,
                   lora_scaled)
from .conditions import check_image
from .img2img import ImageStart

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
                   expand_timesteps: bool = False, image: torch.Tensor | None = None) -> torch.Tensor:
    """``WanTransformer3DModel`` on tokens ``x`` ``(B, L, 4 C_in)`` (RALU's ``(channel, dy, dx)``
    order; an image-to-video model's condition channels after the latent's) with rotary tables
    ``(cos, sin)`` ``(B, L, 1, D)``, text embeddings ``(B, T, width)``, timestep ``t`` ``(B,)`` or
    per token ``(B, L)`` (Wan 2.2 TI2V's first frame at 0) and, for Wan 2.1 I2V, the CLIP image
    embeddings ``image``; returns ``(B, L, 4 C_out)`` in the same order. The stock forward's
    modules in its order; ``expand_timesteps`` (Wan 2.2 TI2V) gives every token the timestep."""
    tr = transformer
    B, L, _ = x.shape
    conv = tr.patch_embedding                         # a (1, 2, 2) convolution with that stride: a linear map
    h = F.linear(x, conv.weight.flatten(1), conv.bias)
    if t.dim() == 2:
        emb_t, seq = t.flatten(), L
    elif expand_timesteps:
        emb_t, seq = t[:, None].expand(B, L).flatten(), L
    else:
        emb_t, seq = t, None
    temb, proj, text, image = tr.condition_embedder(emb_t, text, image, timestep_seq_len=seq)
    if image is not None:
        text = torch.concat([image, text], dim=1)
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
    condition: torch.Tensor | None = None   # image-to-video: the condition laid out on the stage, (B, L, 4 C_cond)
    keep: torch.Tensor | None = None        # Wan 2.2 TI2V: the first-frame mask laid out, (B, L, 4 C), 0 on frame 0


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


class WanBackend(DiffusersBackend):
    name = "wan"
    default_guidance_scale = 5.0
    default_max_sequence_length = 512
    output_form = input_form = "video"
    text_width_field = "text_dim"
    embedding_inputs = EmbeddingInputs({"prompt_embeds": 3, "negative_prompt_embeds": 3},
                                       requires={"negative_prompt_embeds": ("prompt_embeds",)})
    #: the clip's latent frames; ``RALU`` sets it for each call (:meth:`set_frames`)
    frames: int = 1

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
        self.latent_channels = cfg.out_channels or cfg.in_channels    # image-to-video models take more in
        self.features = self.latent_channels * PATCH[1] * PATCH[2]
        self.temporal = pipe.vae_scale_factor_temporal
        self.pixels_per_token = pipe.vae_scale_factor_spatial * PATCH[1]
        ratio = pipe.config.get("boundary_ratio")
        self.boundary = None if ratio is None or len(experts) < 2 else (       # as WanPipeline computes it
            ratio * pipe.scheduler.config.num_train_timesteps)
        self.expand_timesteps = bool(pipe.config.get("expand_timesteps", False))
        self._sigma = None

    # -- clips ----------------------------------------------------------------------------------
    def latent_frames(self, num_frames) -> int:
        """Latent frames of a clip of ``num_frames`` video frames: the VAE keeps the first frame
        and compresses the rest by its temporal factor, so ``num_frames`` must be ``k t + 1``."""
        n, t = num_frames, self.temporal
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (n - 1) % t:
            lower = max(1, (n - 1) // t * t + 1) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
            raise ValueError(f"num_frames must be {t} k + 1 (1, {t + 1}, {2 * t + 1}, ..., 81, ...: the VAE keeps the "
                             f"first frame and compresses the rest {t}x in time), got {num_frames!r}; nearest "
                             f"allowed: {lower} or {lower + t}")
        return (n - 1) // t + 1

    def set_frames(self, latent_frames: int) -> None:
        self.frames = latent_frames

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
        if guided and negative_prompt is None and negative_prompt_embeds is None:
            self.require_text_encoder(EMPTY_NEGATIVE)
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
        r, c = tokens.cells[..., 0], tokens.cells[..., 1]
        frame = torch.div(r, rows, rounding_mode="floor")
        limit = self.transformer.config.rope_max_seq_len
        if max(self.frames, rows // D, tokens.grid[1] // D) > limit:
            raise ValueError(f"a clip of {self.frames} latent frames of {rows}x{tokens.grid[1]} tokens exceeds Wan's "
                             f"rotary table ({limit} positions per axis)")
        cos, sin = rope_tables(self.transformer.rope, frame, (r - frame * rows).float() / D, c.float() / D)
        return WanPositions((cos[:, :, None, :], sin[:, :, None, :]))

    def before_call(self, sigma: float, step=None, steps=None) -> None:
        """The host value of the next call's sigma (from the schedule: no device read), which
        picks the expert as WanPipeline does (``t >= boundary``: the high-noise one)."""
        self._sigma = sigma

    def _expert(self, cond: WanConditioning):
        if self.boundary is None:
            return self.transformer, cond.scale
        if self._sigma is None:
            raise ValueError("a two-expert Wan pipeline needs each call's sigma on the host (the sampler's "
                             "before_call)")
        # WanPipeline's rule in its arithmetic: the scheduler's float32 timestep t = sigma * num_train_timesteps
        # against the boundary as torch compares a float32 tensor with a Python float: in float32 (on the host)
        t = np.float32(self._sigma) * np.float32(self.pipe.scheduler.config.num_train_timesteps)
        high = bool(t >= np.float32(self.boundary))
        return (self.transformer, cond.scale) if high else (self.transformer_2, cond.scale_2)

    @property
    def transformer_2(self):
        return self.experts[1]

    def model_input(self, x: torch.Tensor, positions: WanPositions, sigma: torch.Tensor) -> tuple:
        """The transformer's input tokens and timestep(s) for state ``x`` at ``sigma``."""
        return x, (sigma * 1000).expand(x.shape[0])    # WanPipeline feeds the scheduler's timestep, 1000 sigma

    def velocity(self, x: torch.Tensor, positions: WanPositions, sigma: torch.Tensor, cond: WanConditioning):
        model, scale = self._expert(cond)
        xin, t = self.model_input(x, positions, sigma)
        xin = xin.to(model.dtype)
        image = getattr(cond, "image_embeds", None)
        with lora_scaled(model, cond.attention_kwargs):
            return dataclasses.replace(cond, scale=scale).run(
                model, lambda branch: forward_tokens(model, xin, positions.rotary, branch.prompt_embeds, t,
                                                     self.expand_timesteps, image))

    # -- latents and video ------------------------------------------------------------------------
    def _clip(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T h, w)`` stacked frames -> the clip ``(B, C, T, h, w)`` (a view)."""
        B, C, H, W = latents.shape
        return latents.view(B, C, self.frames, H // self.frames, W)

    def _stacked(self, clip: torch.Tensor) -> torch.Tensor:
        B, C, T, h, w = clip.shape
        return clip.reshape(B, C, T * h, w)

    def first_noise(self, latents):
        """The caller's ``latents=`` in WanPipeline's clip form ``(B, C, T, h, w)`` as the stacked latent.
        A clip of another frame count is refused, not reshaped: stacked, ``(T', h')`` with
        ``T' h' = T h`` would pass for the call's clip."""
        if isinstance(latents, torch.Tensor) and latents.dim() == 5:
            if latents.shape[2] != self.frames:
                raise ValueError(f"latents must be a clip of {self.frames} latent frames (the call's num_frames), got "
                                 f"{tuple(latents.shape)} ({latents.shape[2]} frames)")
            return self._stacked(latents)
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Stacked latents ``(B, C, T h, w)`` to the video ``(B, 3, frames, H, W)`` in ``[-1, 1]``, as
        WanPipeline decodes (its per-channel mean and standard deviation undone first)."""
        clip = self._clip(latents).to(self.vae.dtype)
        mean, std = self.latent_moments(clip)
        return self.vae.decode(clip * std + mean, return_dict=False)[0]

    def latent_moments(self, like: torch.Tensor) -> tuple:
        """The VAE's per-channel latent mean and deviation ``(1, C, 1, 1, 1)``, on ``like``'s device and dtype."""
        cfg = self.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        return tuple(torch.tensor(v, device=like.device, dtype=like.dtype).view(shape)
                     for v in (cfg.latents_mean, cfg.latents_std))

    def postprocess(self, video: torch.Tensor, output_type: str):
        return self.pipe.video_processor.postprocess_video(video, output_type=output_type)

    def pipeline_latents(self, tokens, grid):
        from ..tokens import unpack

        return self._clip(unpack(tokens, grid))

    def from_pipeline_latents(self, latents, grid):
        from ..tokens import pack

        return pack(self._stacked(latents))

    def pipeline_input(self, tokens, grid):
        return self.pipeline_latents(tokens, grid)

    def cost_spec(self):
        from ralu_schedule.cost import WanSpec

        c = self.transformer.config
        return WanSpec(layers=c.num_layers, heads=c.num_attention_heads, head_dim=c.attention_head_dim,
                       ffn=c.ffn_dim, in_channels=c.in_channels, out_channels=c.out_channels, text_dim=c.text_dim,
                       freq_dim=c.freq_dim, expand_timesteps=self.expand_timesteps,
                       pixels_per_token=self.pixels_per_token)


@dataclasses.dataclass
class WanImageConditioning(WanConditioning):
    """A clip conditioned on an image (``WanImageToVideoPipeline``): ``condition``, the stacked
    full-resolution condition latents ``(B, C_cond, T h, w)`` (float32) as the pipeline makes them
    (its mask of the given frames and the latents of the clip they start; with
    ``expand_timesteps`` the first frame's latents over every frame), ``keep`` (``expand_timesteps``
    only) the pipeline's first-frame mask stacked the same way, one channel per latent channel
    (0 on the first frame, 1 elsewhere), ``image_embeds`` Wan 2.1's CLIP image embeddings, and
    ``selection_pixels`` the image at the output size in ``[-1, 1]`` (``select="condition"``)."""

    condition: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    selection_pixels: torch.Tensor | None = None


class WanImageToVideoBackend(WanBackend):
    """``WanImageToVideoPipeline``: Wan 2.1 I2V (its CLIP image encoder; the first-last-frame
    model with ``last_image``), Wan 2.2 I2V A14B (two experts) and Wan 2.2 TI2V-5B
    (``expand_timesteps``).

    Without ``expand_timesteps`` the pipeline concatenates, to every step's latents, a mask of
    the frames given (4 channels: one per video frame a latent frame stands for) and the latents
    of the clip made of the image (and ``last_image``) with black frames between: 16 + 4 + 16
    input channels. A stage's tokens read that condition by :func:`~ralu_torch.tokens.latent_tokens`
    (the mask is constant over each frame, so every stage reads it exactly).

    With ``expand_timesteps`` (Wan 2.2 TI2V) the first latent frame of every model input is the
    image's latents and its tokens get timestep 0 (``(1 - mask) condition + mask latents``, timestep
    ``mask t`` per token, the stock arithmetic on the pipeline's mask and condition laid out by the
    same rule: a token never spans two frames, so the mask it reads is exactly 0 or 1), and the
    first frame of the result is the image's latents. The stock pipeline never reads the first
    frame of its own state; RALU gives those tokens the velocity ``(x - condition) / sigma`` (the
    straight path to the image's latents) instead of the model's output at timestep 0, so that a
    transition's decoded estimate shows the image there, not the noise the stock state carries.
    """

    conditioned = True

    def __init__(self, pipe):
        super().__init__(pipe)
        cfg, z = self.transformer.config, pipe.vae.config.z_dim
        want = z if self.expand_timesteps else self.latent_channels + self.temporal + z
        what = ("the first frame's latents replace the noise (expand_timesteps)" if self.expand_timesteps else
                f"{self.latent_channels} latent + {self.temporal} mask + {z} condition channels")
        for m in self.experts:
            if m.config.in_channels != want:
                raise ValueError(f"WanImageToVideoPipeline gives its transformer {want} input channels ({what}); this "
                                 f"transformer takes {m.config.in_channels}")
        self.image_dim = cfg.image_dim
        embedder = self.transformer.condition_embedder.image_embedder
        self.two_images = embedder is not None and embedder.pos_embed is not None     # Wan 2.1 FLF2V

    def encode(self, *, image=None, last_image=None, image_embeds=None, height=None, width=None, num_frames=None,
               generator=None, **text) -> WanImageConditioning:
        """As WanImageToVideoPipeline: the text as WanPipeline, Wan 2.1's CLIP embeddings of the
        image (and ``last_image``), the condition latents of its ``prepare_latents`` (the noise is
        drawn by the sampler, at the first stage's resolution); every input checked first."""
        pipe, name = self.pipe, "WanImageToVideoPipeline"
        if image_embeds is not None:
            raise ValueError(f"{name} refuses image= with image_embeds= and cannot run without image= (its condition "
                             "latents are made of the image), so image_embeds= cannot be used; the CLIP embeddings "
                             "are computed from image=")
        check_image("image", image, one=True, pipeline=name)
        if last_image is not None:
            if self.expand_timesteps:
                raise ValueError("last_image is not used by Wan 2.2 TI2V (expand_timesteps: the first frame only "
                                 f"conditions the clip); {name} would ignore it")
            if self.image_dim is not None and not self.two_images:
                raise ValueError("last_image needs the first-last-frame model (Wan 2.1 FLF2V, whose image embedder "
                                 "takes two images' CLIP tokens); this Wan 2.1 I2V transformer takes one image's")
            check_image("last_image", last_image, one=True, pipeline=name)
        elif self.two_images:
            raise ValueError("this transformer is Wan 2.1's first-last-frame model (its image embedder takes two "
                             "images' CLIP tokens): give last_image= as well")
        cond = super().encode(**text)
        device = text["device"]
        embeds = None
        if self.image_dim is not None:
            embeds = pipe.encode_image(image if last_image is None else [image, last_image], device)
            embeds = embeds.repeat(cond.batch, 1, 1).to(self.dtype)
        frames = pipe.video_processor.preprocess
        pixels = frames(image, height=height, width=width).to(device, dtype=torch.float32)
        last = None if last_image is None else frames(last_image, height=height, width=width).to(device, torch.float32)
        # the pipeline's own prepare_latents with latents= given draws nothing: RALU draws the noise itself
        out = pipe.prepare_latents(pixels, cond.batch, pipe.vae.config.z_dim, height, width, num_frames, torch.float32,
                                   device, generator, torch.zeros(0, device=device), last)
        keep = None
        if self.expand_timesteps:
            _, first, mask = out
            shape = (cond.batch, first.shape[1], self.frames, *first.shape[-2:])
            condition, keep = self._stacked(first.expand(shape)), self._stacked(mask.expand(shape))
        else:
            condition = self._stacked(out[1])
        fields = {f.name: getattr(cond, f.name) for f in dataclasses.fields(cond)}
        return WanImageConditioning(**fields, condition=condition.float(), keep=keep, image_embeds=embeds,
                                    selection_pixels=pixels)

    def prepare(self, tokens, cond: WanImageConditioning) -> WanPositions:
        """The stage's rotary tables and the condition (and TI2V's first-frame mask) read on its
        tokens by the one rule, :func:`~ralu_torch.tokens.latent_tokens`."""
        pos = super().prepare(tokens, cond)
        sizes = torch.unique(tokens.size).tolist()
        pos.condition = latent_tokens(cond.condition, tokens, sizes)
        if cond.keep is not None:
            pos.keep = latent_tokens(cond.keep, tokens, sizes)
        return pos

    def model_input(self, x, positions: WanPositions, sigma):
        x, t = super().model_input(x, positions, sigma)
        if positions.keep is None:                      # concatenated: mask and condition latents after the latent
            return torch.cat([x, positions.condition], dim=-1), t
        keep = positions.keep                           # TI2V: the first frame replaced, its timestep 0
        return (1 - keep) * positions.condition + keep * x, keep[..., 0] * t[:, None]

    def velocity(self, x, positions: WanPositions, sigma, cond):
        v = super().velocity(x, positions, sigma, cond)
        if positions.keep is None:
            return v
        return torch.where(positions.keep == 0, (x - positions.condition) / sigma, v)

    def finish(self, x: torch.Tensor, cond: WanImageConditioning) -> torch.Tensor:
        """The final raster-order tokens as the pipeline leaves them: with ``expand_timesteps``
        the first frame is the image's latents (``(1 - mask) condition + mask latents``)."""
        if cond.keep is None:
            return x
        keep = pack(cond.keep)
        return (1 - keep) * pack(cond.condition) + keep * x


    def call_tflops(self, tokens: int, cond: WanImageConditioning) -> float:
        """Wan's price of a call, with Wan 2.1 I2V's CLIP image tokens in every block's
        cross-attention (as many as the call's ``image_embeds`` hold, at their width)."""
        spec = self.cost_spec()
        if cond.image_embeds is not None:
            spec = dataclasses.replace(spec, image_tokens=cond.image_embeds.shape[1], image_dim=cond.image_embeds.shape[-1])
        return cond.calls * spec.forward(tokens, cond.text_tokens).total("paper") / 1e12

class WanVideoToVideoBackend(ImageStart, WanBackend):
    """``WanVideoToVideoPipeline``: Wan from a clip (:mod:`.img2img`), strength 0.8 and guidance 5.0
    by default, 480 x 832. The pipeline resizes every frame to the run's size, encodes each clip
    with the VAE's mode (no generator) and normalises it by the VAE's per-channel mean and
    deviation; it does not repeat clips over the batch (one clip, or one per generated clip), and
    cuts its grid with ``int(steps * strength)`` kept steps (``video2video`` rounding)."""

    start_argument = "video"
    strength_rounding = "video2video"
    latents_as_input = False

    def check_form(self, video) -> None:
        import numpy as np
        import PIL.Image

        if isinstance(video, PIL.Image.Image) or (isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim <= 3):
            raise ValueError(f"{self.pipeline_name} starts from a video, got one image; give a list of frames "
                             "(video=[image] for a one-frame clip), a (frames, ...) array or a (batch, frames, ...) one")
        if isinstance(video, list) and not video:
            raise ValueError("video= is an empty list; give the frames to start from")
        frames = [f for clip in (video if isinstance(video, list) else [video])
                  for f in (clip if isinstance(clip, list) else [clip])]
        bad = next((f.mode for f in frames if isinstance(f, PIL.Image.Image) and f.mode != "RGB"), None)
        if bad is not None:
            raise ValueError(f"{self.pipeline_name} encodes RGB frames, got a PIL image of mode {bad!r}; convert each "
                             "frame with frame.convert('RGB')")

    def preprocess(self, video, height, width):
        height = self.default_height if height is None else height
        width = self.default_width if width is None else width
        try:
            pixels = self.pipe.video_processor.preprocess_video(video, height=height, width=width)
        except ValueError as err:
            raise ValueError(f"{self.pipeline_name} cannot read video=: {err}") from None
        frames, t = pixels.shape[2], self.temporal
        if (frames - 1) % t:
            lower = (frames - 1) // t * t + 1
            raise ValueError(f"a video of {frames} frames: {self.pipeline_name} encodes {t} k + 1 frames (its VAE keeps "
                             f"the first and compresses the rest {t}x in time) and would drop the last "
                             f"{frames - lower}; give {lower} or {lower + t} frames")
        return pixels.to(dtype=torch.float32), height, width, frames

    def check_count(self, n: int, batch: int, generator) -> None:
        if n not in (1, batch):
            raise ValueError(f"{n} videos cannot start {batch} generated clips: {self.pipeline_name} takes one video, or "
                             f"one per generated clip ({batch})")
        super().check_count(n, batch, generator)

    @property
    def start_dtype(self) -> torch.dtype:
        return self.vae.dtype

    def vae_latents(self, pixels: torch.Tensor, generator) -> torch.Tensor:
        from diffusers.pipelines.wan.pipeline_wan_video2video import retrieve_latents

        latents = torch.cat([retrieve_latents(self.vae.encode(c[None]), sample_mode="argmax") for c in pixels]).float()
        mean, std = self.latent_moments(latents)
        return (latents - mean) * (1.0 / std)          # as the pipeline: times the reciprocal

    def start_latent(self, latents: torch.Tensor) -> torch.Tensor:
        return self._stacked(latents)
