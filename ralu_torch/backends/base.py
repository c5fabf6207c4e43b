"""What every diffusers-pipeline backend shares: the pipeline's device, dtype, scheduler
shift rule and VAE decode."""

from __future__ import annotations

import torch

from ralu_schedule import ShiftRule


class DiffusersBackend:
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

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents ``(B, C, h, w)`` to images in ``[-1, 1]``, as the pipeline decodes."""
        cfg = self.vae.config
        z = latents / cfg.scaling_factor + cfg.shift_factor
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
