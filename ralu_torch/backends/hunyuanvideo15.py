"""HunyuanVideo 1.5 text-to-video through diffusers' ``HunyuanVideo15Pipeline`` components.

A clip is ``(B, 32, T, h, w)`` latent frames of the 16x spatial, 4x temporal VAE; the transformer
patches by ``(1, 1, 1)``, so a token is one latent pixel (``patch`` 1, 16 pixels a side) and
the pipeline's noise is that latent (``noise_layout = "patches"``). Latent frames are stacked on
the token rows, as for Wan (:mod:`.clips`). What differs:

- the model reads 65 channels per token: the latent, then the image-to-video condition latent
  and its mask, both zero in text-to-video (``prepare_cond_latents_and_mask``); the patch
  embedding is the linear map its 1x1x1 convolution is, applied to the latent's 32 channels
  (the zero ones add nothing);
- the conditioning sequence: the Qwen2.5-VL prompt (1000 tokens, padded and masked) through the
  model's token refiner (timestep-dependent), the ByT5 glyph tokens (256) and the 729 image
  tokens of the image-conditioned mode (zero in text-to-video: the type embedding alone, masked),
  each with its type embedding, rearranged per clip as the stock forward does (valid image,
  ByT5, prompt tokens first, then the masked ones, masked text zeroed): the order is an index
  built once per call from the masks (:func:`text_layout`), so a step makes no host read;
- :func:`forward_tokens` runs the model's own modules and blocks on tokens (the stock forward
  builds positions from a regular clip and rearranges the text with boolean indexing);
- positions: three axes (frame, row, column) of ``get_1d_rotary_pos_embed`` at each token's
  position (the latent frame's index, row and column within the frame by the coordinate rule):
  the stock table at integer positions; a batch whose clips hold different token sets passes
  per-clip tables (:class:`~.rotary.PerImage`) to the stock processor;
- guidance: the pipeline's guider, ``ClassifierFreeGuidance``: two calls a step, ``uncond +
  scale (cond - uncond)`` (``cond + scale (cond - uncond)`` with ``use_original_formulation``)
  and its ``guidance_rescale``, unless its scale makes it a no-op (1; the CFG-distilled
  checkpoints) or it is disabled; other guiders and step windows (``start``, ``stop``) are
  refused by name;
- timesteps: ``1000 sigma`` in the model dtype; the scheduler's fixed ``shift`` (5 at 480p, 9
  at 720p);
- decode: ``latents / scaling_factor`` through the VAE, the whole clip at once.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from ralu_schedule._errors import check_finite

from . import rotary
from .base import BranchConditioning, DiffusersBackend, EmbeddingInputs, Guided, check_negative_batch, lora_scaled
from .clips import ClipBackend
from ..caches import cache_config

def text_layout(mask: torch.Tensor, mask_2: torch.Tensor, image_tokens: int) -> tuple:
    """The stock forward's per-clip order of its conditioning ``[prompt (T1), ByT5 (T2), image
    (T3)]``: valid ByT5 then valid prompt tokens, then the image tokens (masked in text-to-video),
    the masked ByT5 and prompt tokens. Returns ``(index, keep, valid)``, each ``(B, T1 + T2 +
    T3)``: the source position of each place, whether its value is kept (masked text is zeroed,
    the masked image tokens are not) and whether it is attended to."""
    mask, mask_2 = mask.bool(), mask_2.bool()
    B, T1 = mask.shape
    T2 = mask_2.shape[1]
    image = torch.arange(T1 + T2, T1 + T2 + image_tokens, device=mask.device)
    index, keep, valid = [], [], []
    for m, m2 in zip(mask, mask_2):
        prompt, byt5 = torch.arange(T1, device=mask.device), torch.arange(T1, T1 + T2, device=mask.device)
        order = torch.cat([byt5[m2], prompt[m], image, byt5[~m2], prompt[~m]])
        n_valid = int(m.sum()) + int(m2.sum())
        index.append(order)
        keep.append(torch.arange(len(order), device=mask.device) < n_valid + image_tokens)
        valid.append(torch.arange(len(order), device=mask.device) < n_valid)
    return torch.stack(index), torch.stack(keep), torch.stack(valid)


@dataclasses.dataclass
class HunyuanVideo15Branch(BranchConditioning):
    BATCHED = ("prompt_embeds", "prompt_embeds_mask", "prompt_embeds_2", "layout_index", "layout_keep",
               "layout_valid")

    prompt_embeds: torch.Tensor          # (B, 1000, 3584) Qwen2.5-VL
    prompt_embeds_mask: torch.Tensor     # (B, 1000), the model dtype (as the pipeline passes it)
    prompt_embeds_2: torch.Tensor        # (B, 256, 1472) ByT5
    layout_index: torch.Tensor
    layout_keep: torch.Tensor
    layout_valid: torch.Tensor
    image_tokens: int                    # the image-conditioned mode's (SigLIP's 27 x 27 = 729), zero here


@dataclasses.dataclass
class HunyuanVideo15Conditioning(Guided):
    """The guider's classifier-free guidance: ``neg + scale (pos - neg)`` (``original``:
    ``pos + scale (pos - neg)``), then ``guidance_rescale`` toward the conditional velocity's
    standard deviation (diffusers' ``rescale_noise_cfg``)."""

    original: bool = False
    guidance_rescale: float = 0.0
    attention_kwargs: dict | None = None

    def combine(self, outputs: list) -> torch.Tensor:
        if self.negative is None:
            return outputs[0]
        pos, neg = outputs
        guided = (pos if self.original else neg) + self.scale * (pos - neg)
        if self.guidance_rescale > 0:
            from diffusers.guiders.guider_utils import rescale_noise_cfg

            guided = rescale_noise_cfg(guided, pos, self.guidance_rescale)
        return guided


@dataclasses.dataclass
class HunyuanVideo15Positions:
    rotary: tuple                        # (cos, sin): (L, D) shared by the batch, or PerImage (B, L, D)


def _probe() -> bool:
    from diffusers.models.embeddings import apply_rotary_emb

    return rotary.probe_real(functools.partial(apply_rotary_emb, sequence_dim=1))


def rope_tables(rope, frame: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> tuple:
    """``(cos, sin)``, each ``(N, D)``, of HunyuanVideo 1.5's rotary embedding at float positions
    ``(N,)`` per axis: the model's own ``get_1d_rotary_pos_embed`` per axis, as its rotary module
    calls it on the integer grid."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    parts = [get_1d_rotary_pos_embed(dim, pos, rope.theta, use_real=True)
             for dim, pos in zip(rope.rope_dim, (frame, row, col))]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def forward_tokens(transformer, x: torch.Tensor, rotary_tables: tuple, branch: HunyuanVideo15Branch,
                   t: torch.Tensor) -> torch.Tensor:
    """``HunyuanVideo15Transformer3DModel`` (text-to-video) on tokens ``x`` ``(B, L, 32)`` with
    rotary tables ``(cos, sin)``, a branch's conditioning and timestep ``t`` ``(B,)``
    (``1000 sigma``); returns ``(B, L, 32)``. The stock forward's modules in its order."""
    tr = transformer
    B, L, C = x.shape
    conv = tr.x_embedder.proj                                  # a 1x1x1 convolution: a linear map
    h = F.linear(x, conv.weight.flatten(1)[:, :C], conv.bias)  # the zero condition channels add nothing
    temb = tr.time_embed(t)
    mask = branch.prompt_embeds_mask
    text = tr.context_embedder(branch.prompt_embeds, t, mask)
    kind = lambda n, k: tr.cond_type_embed(torch.full((B, n), k, dtype=torch.long, device=x.device))  # noqa: E731
    text = text + kind(text.shape[1], 0)
    glyphs = tr.context_embedder_2(branch.prompt_embeds_2)
    glyphs = glyphs + kind(glyphs.shape[1], 1)
    image = kind(branch.image_tokens, 2)                      # zero image embeddings, times 0, plus their type
    joined = torch.cat([text, glyphs, image.to(text.dtype)], dim=1)
    joined = joined.gather(1, branch.layout_index[..., None].expand(-1, -1, joined.shape[-1]))
    enc = torch.where(branch.layout_keep[..., None], joined, torch.zeros_like(joined))
    for block in tr.transformer_blocks:
        h, enc = block(h, enc, temb, branch.layout_valid, rotary_tables)
    return tr.proj_out(tr.norm_out(h, temb))


class HunyuanVideo15Backend(ClipBackend, DiffusersBackend):
    name = "hunyuanvideo1.5"
    default_guidance_scale = None                              # the guider holds it
    default_max_sequence_length = None                         # the prompt is padded to 1000 tokens, fixed
    noise_layout = "patches"
    patch = 1
    default_num_frames = 121                                   # HunyuanVideo15Pipeline's num_frames
    text_width_field = "text_embed_dim"
    text_encoders = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")   # Qwen2.5-VL and ByT5
    block_lists = ("transformer_blocks",)
    embedding_inputs = EmbeddingInputs(
        {"prompt_embeds": 3, "prompt_embeds_mask": 2, "prompt_embeds_2": 3, "prompt_embeds_mask_2": 2,
         "negative_prompt_embeds": 3, "negative_prompt_embeds_mask": 2, "negative_prompt_embeds_2": 3,
         "negative_prompt_embeds_mask_2": 2},
        requires={"prompt_embeds": ("prompt_embeds_mask",), "prompt_embeds_2": ("prompt_embeds_mask_2",),
                  "negative_prompt_embeds": ("negative_prompt_embeds_mask",),
                  "negative_prompt_embeds_2": ("negative_prompt_embeds_mask_2",)},
        masks={"prompt_embeds_mask": "prompt_embeds", "prompt_embeds_mask_2": "prompt_embeds_2",
               "negative_prompt_embeds_mask": "negative_prompt_embeds",
               "negative_prompt_embeds_mask_2": "negative_prompt_embeds_2"})

    def __init__(self, pipe):
        super().__init__(pipe)
        cfg = self.transformer.config
        if (cfg.patch_size, cfg.patch_size_t) != (1, 1):
            raise ValueError(f"the HunyuanVideo 1.5 backend needs patch sizes 1 and 1 (the published models'), got "
                             f"{cfg.patch_size} and {cfg.patch_size_t}")
        if cfg.in_channels != 2 * cfg.out_channels + 1:
            raise ValueError(f"this HunyuanVideo15Transformer3DModel reads {cfg.in_channels} channels; RALU runs the "
                             f"published layout: the latent, a condition latent and a mask ({2 * cfg.out_channels + 1})")
        self.features = self.latent_channels = cfg.out_channels                 # 32: one latent pixel per token
        self.temporal = pipe.vae_scale_factor_temporal
        self.pixels_per_token = pipe.vae_scale_factor_spatial                   # 16

    @property
    def default_height(self) -> int:
        return self._default_size()[0]

    @property
    def default_width(self) -> int:
        return self._default_size()[1]

    def _default_size(self) -> tuple:
        """The pipeline's own size (16:9 at its ``target_size``: 480x848 at 480p, 720x1280 at
        720p) brought down to the 32-pixel grid a 2x-coarser first stage needs (480x832, 704x1280)."""
        pipe = self.pipe
        h, w = pipe.video_processor.calculate_default_height_width(pipe.default_aspect_ratio[1],
                                                                   pipe.default_aspect_ratio[0], pipe.target_size)
        step = 2 * self.pixels_per_token
        return h // step * step, w // step * step

    def embedding_widths(self) -> dict:
        c = self.transformer.config
        return {"prompt_embeds": c.text_embed_dim, "negative_prompt_embeds": c.text_embed_dim,
                "prompt_embeds_2": c.text_embed_2_dim, "negative_prompt_embeds_2": c.text_embed_2_dim}

    # -- conditioning --------------------------------------------------------------------------
    def _guider(self) -> tuple:
        """``(guided, scale, original, rescale)`` of the pipeline's guider, or a refusal."""
        from diffusers.guiders import ClassifierFreeGuidance

        guider = self.pipe.guider
        if type(guider) is not ClassifierFreeGuidance:
            raise ValueError(f"RALU runs HunyuanVideo15Pipeline with its ClassifierFreeGuidance guider; this pipeline's "
                             f"is {type(guider).__name__}")
        if guider._start != 0.0 or guider._stop != 1.0:
            raise ValueError(f"the guider guides only from step fraction {guider._start:g} to {guider._stop:g}; RALU's "
                             "stages restart the noise level, where a window of step fractions has no single meaning: "
                             "give the guider start 0 and stop 1")
        scale = check_finite("the guider's guidance_scale", guider.guidance_scale)
        check_finite("the guider's guidance_rescale", guider.guidance_rescale)
        original = bool(guider.use_original_formulation)
        guided = guider._enabled and not math.isclose(scale, 0.0 if original else 1.0)   # as its num_conditions
        return guided, scale, original, float(guider.guidance_rescale)

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale, joint_attention_kwargs,
               device, prompt_embeds=None, prompt_embeds_mask=None, prompt_embeds_2=None, prompt_embeds_mask_2=None,
               negative_prompt=None, negative_prompt_embeds=None, negative_prompt_embeds_mask=None,
               negative_prompt_embeds_2=None, negative_prompt_embeds_mask_2=None) -> HunyuanVideo15Conditioning:
        """As HunyuanVideo15Pipeline: the prompt through Qwen2.5-VL and ByT5 (or the embeddings
        given), and the negative prompt (empty unless given) when the guider guides."""
        if guidance_scale is not None:
            raise ValueError("HunyuanVideo15Pipeline takes its guidance from its guider (pipe.guider: "
                             "ClassifierFreeGuidance(guidance_scale=...)), not from guidance_scale")
        if max_sequence_length is not None:
            raise ValueError("HunyuanVideo15Pipeline takes no max_sequence_length (its prompt is padded to 1000 tokens)")
        if cache_config(self.transformer) is not None:
            raise ValueError("RALU does not run diffusers' caches with HunyuanVideo 1.5 yet")
        guided, scale, original, rescale = self._guider()
        has_negative = any(v is not None for v in (negative_prompt, negative_prompt_embeds, negative_prompt_embeds_2))
        if has_negative and not guided:
            raise ValueError(f"a negative prompt on HunyuanVideo 1.5 needs its guider's classifier-free guidance; this "
                             f"guider does not guide (guidance_scale {scale:g}{'' if self.pipe.guider._enabled else ', disabled'}), "
                             "so the negative prompt would be ignored")
        pipe = self.pipe
        if guided and negative_prompt_embeds is None and pipe.text_encoder is None:
            raise ValueError("this HunyuanVideo15Pipeline has no text encoder for the empty negative prompt its guider's "
                             "classifier-free guidance needs: give negative_prompt_embeds (with its mask and "
                             "negative_prompt_embeds_2)")
        pipe.check_inputs(prompt=prompt, height=0, width=0, negative_prompt=negative_prompt,
                          prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                          prompt_embeds_mask=prompt_embeds_mask, negative_prompt_embeds_mask=negative_prompt_embeds_mask,
                          prompt_embeds_2=prompt_embeds_2, prompt_embeds_mask_2=prompt_embeds_mask_2,
                          negative_prompt_embeds_2=negative_prompt_embeds_2,
                          negative_prompt_embeds_mask_2=negative_prompt_embeds_mask_2)
        batch = len(prompt) if isinstance(prompt, list) else 1 if prompt is not None else prompt_embeds.shape[0]
        enc = functools.partial(pipe.encode_prompt, device=device, dtype=self.dtype, batch_size=batch,
                                num_videos_per_prompt=num_images_per_prompt)

        def branch(**kwargs):
            embeds, mask, embeds_2, mask_2 = enc(**kwargs)
            n = pipe.vision_num_semantic_tokens
            return HunyuanVideo15Branch(embeds, mask, embeds_2, *text_layout(mask, mask_2, n), n)

        positive = branch(prompt=prompt, prompt_embeds=prompt_embeds, prompt_embeds_mask=prompt_embeds_mask,
                          prompt_embeds_2=prompt_embeds_2, prompt_embeds_mask_2=prompt_embeds_mask_2)
        negative = None
        if guided:
            negative = branch(prompt=negative_prompt, prompt_embeds=negative_prompt_embeds,
                              prompt_embeds_mask=negative_prompt_embeds_mask, prompt_embeds_2=negative_prompt_embeds_2,
                              prompt_embeds_mask_2=negative_prompt_embeds_mask_2)
            check_negative_batch(positive.prompt_embeds, negative.prompt_embeds)
        text = positive.layout_index.shape[1]
        return HunyuanVideo15Conditioning(positive, negative, float(scale), text_tokens=text, original=original,
                                          guidance_rescale=rescale, attention_kwargs=joint_attention_kwargs)

    # -- positions and the model ------------------------------------------------------------------
    def prepare(self, tokens, cond) -> HunyuanVideo15Positions:
        """Rotary tables of a stage's tokens: frame index, then row and column within the frame
        at the coordinate rule; one table when the batch shares its token set."""
        frame, row, col = self.clip_positions(tokens)                       # (B, L) each
        rope = self.transformer.rope
        pos = torch.stack([frame, row, col], dim=-1)
        if bool((pos == pos[:1]).all()):
            return HunyuanVideo15Positions(rope_tables(rope, frame[0], row[0], col[0]))
        if not rotary.takes_per_image(_probe):
            raise ValueError("this diffusers' rotary function does not take per-clip tables, so RALU cannot run a "
                             "mixed-resolution stage of HunyuanVideo 1.5 with it; use a layout whose transitions all "
                             "have fraction 1")
        B, L = frame.shape
        cos, sin = rope_tables(rope, frame.reshape(-1), row.reshape(-1), col.reshape(-1))
        return HunyuanVideo15Positions((rotary.PerImage(cos.view(B, L, -1)), rotary.PerImage(sin.view(B, L, -1))))

    def velocity(self, x: torch.Tensor, positions: HunyuanVideo15Positions, sigma: torch.Tensor,
                 cond: HunyuanVideo15Conditioning) -> torch.Tensor:
        dtype = self.dtype
        xin = x.to(dtype)
        t = (sigma * 1000).expand(x.shape[0]).to(dtype)                    # the scheduler's timestep, model dtype
        with lora_scaled(self.transformer, cond.attention_kwargs):
            return cond.run(self.transformer, lambda branch: forward_tokens(self.transformer, xin, positions.rotary,
                                                                             branch, t))

    # -- latents and video ------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Stacked latents (RALU's 2x2 form) to the video ``(B, 3, frames, H, W)`` in ``[-1, 1]``,
        as HunyuanVideo15Pipeline decodes (``latents / scaling_factor``), one clip at a time as the
        VAE's slicing does: its attention block takes no batch of several clips (diffusers 0.42.1
        builds a ``(B, N, N)`` mask for ``(B, 1, N, C)`` queries)."""
        clip = self._clip(self._real(latents)).to(self.vae.dtype) / self.vae.config.scaling_factor
        return torch.cat([self.vae.decode(z, return_dict=False)[0] for z in clip.split(1)])

    def cost_spec(self, byt5_tokens: int = 256):
        from ralu_schedule.cost import HunyuanVideo15Spec

        c = self.transformer.config
        return HunyuanVideo15Spec(byt5_tokens=byt5_tokens, image_cond_tokens=self.pipe.vision_num_semantic_tokens,
                                  layers=c.num_layers, refiner_layers=c.num_refiner_layers, heads=c.num_attention_heads,
                                  head_dim=c.attention_head_dim, mlp_ratio=c.mlp_ratio, in_channels=c.in_channels,
                                  out_channels=c.out_channels, text_dim=c.text_embed_dim, byt5_dim=c.text_embed_2_dim,
                                  image_dim=c.image_embed_dim, pixels_per_token=self.pixels_per_token)

    def call_spec(self, cond) -> tuple:
        return self.cost_spec(byt5_tokens=cond.positive.prompt_embeds_2.shape[1]), cond.text_tokens
