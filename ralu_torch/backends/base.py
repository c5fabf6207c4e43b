"""The backend contract, as code, and what every diffusers-pipeline backend shares.

:class:`SamplerBackend` is all that :func:`ralu_torch.sampler.sample` asks of a model: its
device and dtype, the token layout (features per token, latent channels, pixels per token),
``prepare(tokens, conditioning)`` once per stage, ``velocity(tokens, positions, sigma,
conditioning)`` each step, and ``decode``. :class:`PipelineBackend`
adds what :class:`ralu_torch.RALU` needs to run a diffusers pipeline: prompt encoding, the
scheduler's shift rule, the pipeline's own latent format and its defaults. FLUX, SD3 and
the analytic Gaussian backend conform; the tests check it with ``isinstance``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ralu_schedule import ShiftRule


@runtime_checkable
class SamplerBackend(Protocol):
    """What the sampler needs of a model."""

    features: int            # values per token (FLUX and SD3: 16 channels x 2 x 2 = 64)
    latent_channels: int     # channels of the latent the first noise is drawn as
    pixels_per_token: int    # decoded pixels per token side (FLUX and SD3: 16)

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def prepare(self, tokens, cond: Any) -> Any:
        """The model's form of a stage's positions (ids, embeddings, index maps), built once
        per stage from the :class:`~ralu_torch.tokens.TokenSet` so that steps do no bookkeeping."""

    def velocity(self, x: torch.Tensor, positions: Any, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """Float32 velocity ``(B, L, features)`` of tokens ``x`` at prepared ``positions`` and
        ``sigma`` (a float32 scalar tensor on the device). No host synchronisation: a whole
        step must be capturable in a CUDA graph."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents ``(B, C, h, w)`` to images in ``[-1, 1]``."""


@runtime_checkable
class PipelineBackend(SamplerBackend, Protocol):
    """What :class:`ralu_torch.RALU` needs beyond the sampler: a diffusers pipeline's side."""

    name: str
    default_guidance_scale: float
    default_max_sequence_length: int

    def encode(self, *, prompt, num_images_per_prompt, max_sequence_length, guidance_scale,
               joint_attention_kwargs, device, **prompt_kwargs) -> Any:
        """Conditioning for ``velocity``, with a ``batch`` attribute (images per call)."""

    def shift_rule(self) -> ShiftRule:
        """The base shift rule of the pipeline's scheduler (``h0`` at a token count)."""

    def pipeline_latents(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """Final raster-order tokens in the form the pipeline returns for ``output_type="latent"``."""

    def compile(self, options: dict) -> None:
        """Compile the model's blocks in place with ``torch.compile(**options)``."""


class DiffusersBackend:
    """Device, dtype, scheduler shift rule and VAE decode, shared by FLUX and SD3."""

    default_guidance_scale: float
    default_max_sequence_length: int

    def __init__(self, pipe):
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.vae = pipe.vae

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def shift_rule(self) -> ShiftRule:
        """The base shift rule of the pipeline's own scheduler config."""
        return ShiftRule.from_scheduler_config(self.pipe.scheduler.config)

    def blocks(self) -> list:
        """The transformer's repeated blocks, which regional compilation compiles."""
        return list(self.transformer.transformer_blocks)

    def compile(self, options: dict) -> None:
        """Compile every transformer block in place with ``torch.compile`` (dynamic shapes by
        default, so that stage token counts and batch sizes reuse one graph per block)."""
        for block in self.blocks():
            block.compile(**{"dynamic": True, **options})

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents ``(B, C, h, w)`` to images in ``[-1, 1]``, as the pipeline decodes."""
        cfg = self.vae.config
        z = latents / cfg.scaling_factor + cfg.shift_factor
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
