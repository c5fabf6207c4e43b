"""LTX-2 text-to-video with its joint audio stream, through diffusers' ``LTX2Pipeline`` components.

A clip is a latent ``(B, C, T, h, w)``; LTX-2's transformer takes one token per latent pixel
of each latent frame (patch ``1 x 1 x 1``, 128 channels), which ``LTX2Pipeline`` packs itself,
frame by frame and row by row. RALU's tokens are ``2 x 2`` latent pixels (``4 C`` values,
ordered ``(channel, dy, dx)``, the layout every family shares) with the latent frames stacked
on the rows as for Wan: the token grid is ``(T rows, cols)`` with ``rows = h / 2``, the first
noise is drawn in the stacked latent ``(B, C, T h, w)`` (the clip's memory, so it is the noise
``LTX2Pipeline`` draws) and a coarse token never spans two frames. Each RALU token is handed to
the model as the four tokens of its latent pixels (:attr:`LTX2Backend.model_tokens_per_token`),
sorted by their top-left full-resolution latent pixel: on a regular grid that is the
pipeline's own order.

Positions. LTX-2's rotary code takes each token's ``[start, end)`` bounds in pixels and seconds
(``video_coords``, ``(B, 3, N, 2)``, one set per image: a mixed stage needs nothing but its
own bounds) and rotates by their midpoints. A token of ``S x S`` full-resolution latent pixels
in a stage whose coarsest tokens are ``D`` gets the spatial bounds of the region it covers on
the stage's grid (the coordinate rule ``cells / D``) times the VAE's spatial factor:
``[y0 / D, (y0 + S) / D) x 32``, so a coarse stage is the stock grid of a ``1/D``-size clip
and a child has the bounds of its part of its parent. The time axis is never downsampled:
every token's temporal bounds are the model's own ``prepare_video_coords`` entry for its latent
frame (the causal first frame's shift and clamp, divided by the conditioning frame rate
``frame_rate / motion_speed``). The model's own rotary module turns the bounds into tables
inside its stock ``forward``, which RALU calls as the pipeline does.

Guidance, as ``LTX2Pipeline.__call__`` runs it, with its defaults: up to three transformer
calls a step, each denoising video and audio together: the classifier-free pair in one call
of batch ``2 B`` (negative first) when ``guidance_scale > 1`` or ``audio_guidance_scale > 1``,
a spatio-temporal guidance call on the positive prompt with ``spatio_temporal_guidance_blocks``
perturbed when ``stg_scale > 0`` or ``audio_stg_scale > 0``, and a call with the audio-video
cross-attention off when ``modality_scale > 1`` or ``audio_modality_scale > 1``. Each output
becomes a clean estimate ``x - sigma v``, the deltas ``(g - 1)(pos - neg)``,
``stg (pos - perturbed)`` and ``(m - 1)(pos - isolated)`` are added to the positive estimate,
rescaled by ``guidance_rescale`` (diffusers' ``rescale_noise_cfg``: per image, over all its
tokens) and turned back into a velocity; audio likewise with its own scales.

Audio. The audio stream's tokens stay as the pipeline makes them: the same count (set by the
clip's duration), the same positions, drawn right after the video noise, packed by the
pipeline. They ride along as the sampler's :class:`~ralu_torch.sampler.SideStream`: every
call sees both modalities at one noise level, as every stock call does; a transition re-noises
them to the next stage's start as it re-noises the video tokens it keeps. ``output`` carries
the vocoder's waveforms (``audio``), or the denormalised audio latents for ``output_type="latent"``.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch

from ralu_schedule._errors import check_finite

from ..caches import model_call
from ..sampler import SideStream
from ..tokens import pack, unpack
from .base import DiffusersBackend, EmbeddingInputs, check_negative_batch
from .clips import ClipBackend

#: RALU's token side in latent pixels (LTX-2's own tokens are single latent pixels)
PATCH = 2
#: the guidance arguments LTX2Pipeline takes, whose defaults are read from its signature
GUIDANCE = ("stg_scale", "modality_scale", "guidance_rescale", "audio_guidance_scale", "audio_stg_scale",
            "audio_modality_scale", "audio_guidance_rescale", "spatio_temporal_guidance_blocks", "use_cross_timestep",
            "frame_rate", "motion_speed")
_STOCK = object()


def stock_defaults(pipe) -> dict:
    """``LTX2Pipeline.__call__``'s keyword defaults (read, not restated)."""
    return {k: p.default for k, p in inspect.signature(type(pipe).__call__).parameters.items()
            if p.default is not inspect.Parameter.empty}


@dataclasses.dataclass
class LTX2Positions:
    """A stage's model tokens: ``order`` (B, 4L), the index into RALU's values (token, dy, dx) of
    each model token in the order it is handed to the model, and ``coords`` (B, 3, 4L, 2) their
    bounds (time in seconds, height and width in pixels) in that order."""

    order: torch.Tensor
    coords: torch.Tensor


@dataclasses.dataclass
class LTX2Conditioning:
    """What LTX2Pipeline computes before its loop: the connectors' video and audio text embeddings
    and mask (``[negative, positive]`` stacked when classifier-free guidance is on), the audio
    positions, the guidance scales (the pipeline's defaults and its ``or`` fallbacks applied), and
    the audio stream (``side``)."""

    video_embeds: torch.Tensor
    audio_embeds: torch.Tensor
    mask: torch.Tensor
    audio_coords: torch.Tensor
    side: SideStream
    batch: int
    guidance_scale: float
    audio_guidance_scale: float
    stg_scale: float
    audio_stg_scale: float
    modality_scale: float
    audio_modality_scale: float
    guidance_rescale: float
    audio_guidance_rescale: float
    stg_blocks: list
    use_cross_timestep: bool
    fps: float
    audio_frames: int
    text_tokens: int
    attention_kwargs: dict | None = None

    @property
    def cfg(self) -> bool:
        return self.guidance_scale > 1.0 or self.audio_guidance_scale > 1.0

    @property
    def stg(self) -> bool:
        return self.stg_scale > 0.0 or self.audio_stg_scale > 0.0

    @property
    def isolated(self) -> bool:
        return self.modality_scale > 1.0 or self.audio_modality_scale > 1.0

    @property
    def calls(self) -> int:
        """Transformer forwards per image per step (the classifier-free pair counts two)."""
        return (2 if self.cfg else 1) + self.stg + self.isolated

    def positive(self, t):
        """The positive half of a tensor stacked ``[negative, positive]`` (the pipeline's ``chunk(2)[1]``)."""
        return t.chunk(2, dim=0)[1] if self.cfg else t

    def callback_tensors(self) -> dict:
        return {}

    def update(self, values: dict) -> None:
        pass


class LTX2Backend(DiffusersBackend):
    name = "ltx2"
    output_form = input_form = "video"
    #: model tokens per RALU token: the scheduler's shift reads the pipeline's token count
    model_tokens_per_token = PATCH * PATCH
    embedding_inputs = EmbeddingInputs(
        {"prompt_embeds": 3, "prompt_attention_mask": 2, "negative_prompt_embeds": 3,
         "negative_prompt_attention_mask": 2},
        requires={"prompt_embeds": ("prompt_attention_mask",),
                  "negative_prompt_embeds": ("negative_prompt_attention_mask", "prompt_embeds")},
        masks={"prompt_attention_mask": "prompt_embeds", "negative_prompt_attention_mask": "negative_prompt_embeds"})
    #: the clip's latent frames; ``RALU`` sets it for each call (:meth:`set_frames`)
    frames: int = 1

    def __init__(self, pipe):
        super().__init__(pipe)
        cfg = self.transformer.config
        if (cfg.patch_size, cfg.patch_size_t) != (1, 1):
            raise ValueError(f"the LTX-2 backend needs the transformer's patch size 1 x 1 x 1 (LTX2Pipeline packs one "
                             f"token per latent pixel), got {cfg.patch_size_t} x {cfg.patch_size} x {cfg.patch_size}")
        self.latent_channels = cfg.in_channels
        self.features = self.latent_channels * PATCH * PATCH
        self.temporal = pipe.vae_temporal_compression_ratio
        self.pixels_per_token = pipe.vae_spatial_compression_ratio * PATCH
        self.stock = stock_defaults(pipe)
        self.default_guidance_scale = float(self.stock["guidance_scale"])
        self.default_max_sequence_length = int(self.stock["max_sequence_length"])

    # -- clips ----------------------------------------------------------------------------------
    @property
    def default_height(self) -> int:
        return int(self.stock["height"])

    @property
    def default_width(self) -> int:
        return int(self.stock["width"])

    @property
    def default_num_frames(self) -> int:
        """LTX2Pipeline's fixed default (121) for checkpoints without a ``duration_head``."""
        if getattr(self.pipe, "duration_head", None) is not None:
            raise ValueError("this LTX2Pipeline predicts a clip's length with its duration_head when num_frames is "
                             "not given; RALU plans its stages for a known clip: pass num_frames")
        return 121

    def latent_frames(self, num_frames) -> int:
        """Latent frames of ``num_frames`` video frames as LTX2Pipeline counts them, ``(n - 1) // t + 1``
        (any ``n >= 1``; the VAE decodes ``t (frames - 1) + 1`` of them, the audio lasts ``n / frame_rate``)."""
        n = num_frames
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"num_frames must be an integer >= 1 (LTX2Pipeline makes (num_frames - 1) // "
                             f"{self.temporal} + 1 latent frames), got {num_frames!r}")
        return (n - 1) // self.temporal + 1

    def set_frames(self, latent_frames: int) -> None:
        self.frames = latent_frames

    def embedding_widths(self) -> dict:
        """The Gemma hidden states the connectors read: ``caption_channels x text_proj_in_factor``."""
        c = self.pipe.connectors.config
        width = c.caption_channels * c.text_proj_in_factor
        return {"prompt_embeds": width, "negative_prompt_embeds": width}

    # -- conditioning ----------------------------------------------------------------------------
    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, height, width, num_frames, negative_prompt=None, prompt_embeds=None, prompt_attention_mask=None,
               negative_prompt_embeds=None, negative_prompt_attention_mask=None, enable_prompt_enhancement=False,
               **guidance) -> LTX2Conditioning:
        """As LTX2Pipeline before its loop: its checks, its guidance defaults (``audio_*`` falling back
        to the video values by ``or``), the prompt encoded (or the embeddings given) and run through
        the connectors on ``[negative, positive]``, the audio length ``round(num_frames / frame_rate x
        latents per second)`` and its positions."""
        pipe = self.pipe
        if enable_prompt_enhancement:
            raise ValueError("RALU does not run LTX2Pipeline's prompt enhancement (a language model writes a new "
                             "prompt, sampled with a seed of its own); call pipe.enhance_prompt(...) and pass the "
                             "prompt it returns")
        unknown = sorted(set(guidance) - set(GUIDANCE))
        if unknown:
            raise TypeError(f"encode() got an unexpected keyword argument '{unknown[0]}'")
        g = {k: guidance.get(k, self.stock[k]) for k in GUIDANCE}
        check_finite("guidance_scale", guidance_scale)
        for k in GUIDANCE:
            if k not in ("spatio_temporal_guidance_blocks", "use_cross_timestep") and g[k] is not None:
                check_finite(k, g[k])
        audio_g = g["audio_guidance_scale"] or guidance_scale        # the pipeline's own fallbacks
        audio_stg = g["audio_stg_scale"] or g["stg_scale"]
        audio_m = g["audio_modality_scale"] or g["modality_scale"]
        audio_r = g["audio_guidance_rescale"] or g["guidance_rescale"]
        from diffusers.pipelines.ltx2.utils import conditioning_frame_rate

        fps = conditioning_frame_rate(g["frame_rate"], g["motion_speed"])
        pipe.check_inputs(prompt=prompt, height=height, width=width, prompt_embeds=prompt_embeds,
                          negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
                          negative_prompt_attention_mask=negative_prompt_attention_mask,
                          spatio_temporal_guidance_blocks=g["spatio_temporal_guidance_blocks"],
                          stg_scale=g["stg_scale"], audio_stg_scale=audio_stg, num_frames=num_frames)
        cfg = guidance_scale > 1.0 or audio_g > 1.0
        if prompt_embeds is not None and negative_prompt_embeds is None and cfg and pipe.text_encoder is None:
            raise ValueError("prompt_embeds with classifier-free guidance (guidance_scale or audio_guidance_scale > 1) "
                             "need negative_prompt_embeds (this pipeline has no text encoder for the empty negative "
                             "prompt)")
        if isinstance(negative_prompt, str) and isinstance(prompt, list):
            negative_prompt = [negative_prompt] * len(prompt)
        embeds, mask, n_embeds, n_mask = pipe.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
            num_videos_per_prompt=num_images_per_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask, max_sequence_length=max_sequence_length,
            device=device)
        batch = embeds.shape[0]
        if cfg:
            check_negative_batch(embeds, n_embeds)
            embeds, mask = torch.cat([n_embeds, embeds], dim=0), torch.cat([n_mask, mask], dim=0)
        side = getattr(pipe, "tokenizer", None)
        padding = getattr(side, "padding_side", "left") if side is not None else "left"
        video_embeds, audio_embeds, connector_mask = pipe.connectors(embeds, mask, padding_side=padding)
        # the audio: its length from the clip's duration, its noise drawn and packed as the pipeline's
        seconds = num_frames / g["frame_rate"]
        per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
        audio_frames = round(seconds * per_second)
        a = pipe.audio_vae.config
        shape = (batch, a.latent_channels, audio_frames, a.mel_bins // pipe.audio_vae_mel_compression_ratio)
        audio_coords = self.transformer.audio_rope.prepare_audio_coords(batch, audio_frames, device)
        return LTX2Conditioning(
            video_embeds=video_embeds, audio_embeds=audio_embeds, mask=connector_mask, audio_coords=audio_coords,
            side=SideStream(shape, type(pipe)._pack_audio_latents), batch=batch,
            guidance_scale=float(guidance_scale), audio_guidance_scale=float(audio_g),
            stg_scale=float(g["stg_scale"]), audio_stg_scale=float(audio_stg),
            modality_scale=float(g["modality_scale"]), audio_modality_scale=float(audio_m),
            guidance_rescale=float(g["guidance_rescale"]), audio_guidance_rescale=float(audio_r),
            stg_blocks=g["spatio_temporal_guidance_blocks"], use_cross_timestep=bool(g["use_cross_timestep"]),
            fps=fps, audio_frames=audio_frames,
            text_tokens=video_embeds.shape[1], attention_kwargs=joint_attention_kwargs)

    # -- positions and the model ------------------------------------------------------------------
    def prepare(self, tokens, cond: LTX2Conditioning) -> LTX2Positions:
        """The model tokens of a stage's token set, in order, and their bounds (module docstring)."""
        B, L = tokens.size.shape
        device = tokens.cells.device
        D = tokens.coarsest
        S = tokens.size[..., None]                                             # (B, L, 1)
        sub = torch.arange(PATCH * PATCH, device=device)
        dy, dx = sub // PATCH, sub % PATCH                                     # (dy, dx) of each model token
        y = PATCH * tokens.cells[..., :1] + dy * S                             # (B, L, 4) top-left latent pixel
        x = PATCH * tokens.cells[..., 1:] + dx * S
        rows = PATCH * tokens.grid[0] // self.frames                           # latent rows per frame
        frame = torch.div(y, rows, rounding_mode="floor")
        y = y - frame * rows
        order = torch.argsort(((frame * rows + y) * (PATCH * tokens.grid[1]) + x).reshape(B, -1), dim=1)
        take = lambda t: t.reshape(B, -1).gather(1, order)  # noqa: E731
        frame, y, x, S = take(frame), take(y).float(), take(x).float(), take(S.expand(-1, -1, PATCH * PATCH)).float()
        rope = self.transformer.rope
        t = rope.prepare_video_coords(1, self.frames, 1, 1, device, fps=cond.fps)[0, 0, :, :]   # (frames, 2)
        _, sy, sx = rope.scale_factors
        coords = torch.stack([t[frame],
                              torch.stack([y / D * sy, (y + S) / D * sy], dim=-1),
                              torch.stack([x / D * sx, (x + S) / D * sx], dim=-1)], dim=1)    # (B, 3, 4L, 2)
        return LTX2Positions(order, coords)

    def _call(self, name, video, audio, embeds, audio_embeds, mask, t, coords, audio_coords, cond, **extra):
        with model_call(self.transformer, name):
            v, a = self.transformer(
                hidden_states=video, audio_hidden_states=audio, encoder_hidden_states=embeds,
                audio_encoder_hidden_states=audio_embeds, timestep=t, sigma=t, encoder_attention_mask=mask,
                audio_encoder_attention_mask=mask, fps=cond.fps, audio_num_frames=cond.audio_frames,
                video_coords=coords, audio_coords=audio_coords, perturbation_mask=None,
                use_cross_timestep=cond.use_cross_timestep, attention_kwargs=cond.attention_kwargs, return_dict=False,
                **extra)
        return v.float(), a.float()

    def velocity(self, x: torch.Tensor, positions: LTX2Positions, sigma: torch.Tensor, cond: LTX2Conditioning):
        """LTX2Pipeline's step on RALU's tokens: its calls, its guidance in clean-estimate space, its
        rescale; the audio stream's velocity is left in ``cond.side``."""
        from diffusers.pipelines.ltx2.pipeline_ltx2 import rescale_noise_cfg

        B, L, _ = x.shape
        C = self.latent_channels
        dtype = self.transformer.dtype
        index = positions.order[..., None].expand(-1, -1, C)
        video = x.view(B, L, C, PATCH, PATCH).permute(0, 1, 3, 4, 2).reshape(B, -1, C).gather(1, index)
        audio = cond.side.state
        t = (sigma * 1000).expand(B)                        # the scheduler's timestep, 1000 sigma
        both = lambda v: torch.cat([v, v]) if cond.cfg else v   # noqa: E731
        v_pos, a_pos = self._call("cond_uncond", both(video).to(dtype), both(audio).to(dtype), cond.video_embeds,
                                  cond.audio_embeds, cond.mask, both(t), both(positions.coords),
                                  both(cond.audio_coords), cond, isolate_modalities=False,
                                  spatio_temporal_guidance_blocks=None)
        x0 = lambda state, v: state - v * sigma  # noqa: E731
        video_delta = audio_delta = 0
        if cond.cfg:
            (v_neg, v_pos), (a_neg, a_pos) = v_pos.chunk(2), a_pos.chunk(2)
            pos, apos = x0(video, v_pos), x0(audio, a_pos)
            video_delta = (cond.guidance_scale - 1) * (pos - x0(video, v_neg))
            audio_delta = (cond.audio_guidance_scale - 1) * (apos - x0(audio, a_neg))
        else:
            pos, apos = x0(video, v_pos), x0(audio, a_pos)
        single = (video.to(dtype), audio.to(dtype), cond.positive(cond.video_embeds), cond.positive(cond.audio_embeds),
                  cond.positive(cond.mask), t, positions.coords, cond.audio_coords, cond)
        stg = mod = (0, 0)
        if cond.stg:
            v, a = self._call("uncond_stg", *single, isolate_modalities=False,
                              spatio_temporal_guidance_blocks=cond.stg_blocks)
            stg = (cond.stg_scale * (pos - x0(video, v)), cond.audio_stg_scale * (apos - x0(audio, a)))
        if cond.isolated:
            v, a = self._call("uncond_modality", *single, isolate_modalities=True, spatio_temporal_guidance_blocks=None)
            mod = ((cond.modality_scale - 1) * (pos - x0(video, v)),
                   (cond.audio_modality_scale - 1) * (apos - x0(audio, a)))
        guided = pos + video_delta + stg[0] + mod[0]
        audio_guided = apos + audio_delta + stg[1] + mod[1]
        if cond.guidance_rescale > 0:
            guided = rescale_noise_cfg(guided, pos, guidance_rescale=cond.guidance_rescale)
        if cond.audio_guidance_rescale > 0:
            audio_guided = rescale_noise_cfg(audio_guided, apos, guidance_rescale=cond.audio_guidance_rescale)
        cond.side.velocity = (audio - audio_guided) / sigma
        v = (video - guided) / sigma                          # model order -> RALU's (token, dy, dx) -> (c, dy, dx)
        v = torch.empty_like(v).scatter_(1, index, v)
        return v.view(B, L, PATCH, PATCH, C).permute(0, 1, 4, 2, 3).reshape(B, L, -1)

    def call_tflops(self, tokens: int, cond: LTX2Conditioning) -> float:
        """Every call of a step at ``tokens`` RALU tokens (four model tokens each) and the audio's tokens."""
        spec = self.cost_spec()
        f = spec.forward(tokens, cond.text_tokens, audio_tokens=cond.audio_frames)
        total = (2 if cond.cfg else 1) * f.total("paper")
        if cond.stg:
            total += spec.forward(tokens, cond.text_tokens, audio_tokens=cond.audio_frames,
                                  perturbed=len(set(cond.stg_blocks or ()) & set(range(spec.layers)))).total("paper")
        if cond.isolated:
            total += spec.forward(tokens, cond.text_tokens, audio_tokens=cond.audio_frames,
                                  isolated=True).total("paper")
        return total / 1e12

    def cost_spec(self):
        from ralu_schedule.cost import LTX2Spec

        c = self.transformer.config
        return LTX2Spec.from_config(c, pixels_per_token=self.pixels_per_token)

    def vae_spec(self):
        """The cost model's description of this pipeline's video VAE decoder (from its config)."""
        from ralu_schedule.cost import LTX2VAEDecoderSpec

        v = self.vae.config
        layers = tuple(v.decoder_layers_per_block)
        scaling = v.decoder_spatio_temporal_scaling               # a bool stands for every up block
        scaling = (scaling,) * (len(layers) - 1) if isinstance(scaling, bool) else tuple(scaling)
        return LTX2VAEDecoderSpec(latent_channels=v.latent_channels, channels=tuple(v.decoder_block_out_channels),
                                  layers=layers, scaling=scaling, upsample=tuple(v.upsample_type),
                                  factors=tuple(v.upsample_factor), patch_size=v.patch_size,
                                  out_channels=v.out_channels)

    # -- latents, video and audio -------------------------------------------------------------------
    _clip = ClipBackend._clip            # the stacked frames and the clip, as the other video families
    _stacked = ClipBackend._stacked

    def first_noise(self, latents):
        if latents is not None:
            raise ValueError("RALU does not take latents= with LTX2Pipeline: the pipeline reads them as clean "
                             "latents it normalises and re-noises by noise_scale (its two-stage refinement), beside "
                             "audio_latents, where RALU starts from noise it draws at the first stage's resolution")
        return None

    def _denormalised(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        return type(self.pipe)._denormalize_latents(self._clip(latents), vae.latents_mean, vae.latents_std,
                                                    vae.config.scaling_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Stacked latents ``(B, C, T h, w)`` to the video ``(B, 3, frames, H, W)`` in ``[-1, 1]``, as
        LTX2Pipeline decodes at its defaults (a timestep-conditioned VAE at decode_timestep 0)."""
        z = self._denormalised(latents).to(self.vae.dtype)
        temb = None if not self.vae.config.timestep_conditioning else torch.zeros(z.shape[0], device=z.device,
                                                                                  dtype=z.dtype)
        return self.vae.decode(z, temb, return_dict=False)[0]

    def postprocess(self, video: torch.Tensor, output_type: str):
        return self.pipe.video_processor.postprocess_video(video, output_type=output_type)

    def pipeline_latents(self, tokens, grid):
        """The denormalised clip ``(B, C, T, h, w)``, as LTX2Pipeline returns it for ``output_type="latent"``."""
        return self._denormalised(unpack(tokens, grid))

    def from_pipeline_latents(self, latents, grid):
        vae = self.vae
        z = type(self.pipe)._normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        return pack(self._stacked(z))

    def pipeline_input(self, tokens, grid):
        raise ValueError("LTX2Pipeline takes latents= as clean latents it re-noises by noise_scale, with "
                         "audio_latents beside them; a stage-by-stage stock run of a RALU pyramid is not offered "
                         "for LTX-2")

    def side_output(self, side: SideStream, output_type: str):
        """The audio as LTX2Pipeline returns it: denormalised latents ``(B, C, L, M)`` for
        ``output_type="latent"``, else the vocoder's waveforms ``(B, channels, samples)``."""
        pipe, avae = self.pipe, self.pipe.audio_vae
        a = type(pipe)._denormalize_audio_latents(side.state, avae.latents_mean, avae.latents_std)
        a = type(pipe)._unpack_audio_latents(a, side.shape[2], num_mel_bins=side.shape[3])
        if output_type == "latent":
            return a
        return pipe.vocoder(avae.decode(a.to(avae.dtype), return_dict=False)[0])

    @property
    def audio_sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.output_sampling_rate)
