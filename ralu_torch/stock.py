"""RALU's pyramid variant with stock pipelines and k-diffusion-style samplers.

A *pyramid* layout upsamples every token at each transition (all fractions 1), so every
stage runs on one regular latent grid and a stock sampler can run it. Three pieces:

- :func:`ralu_torch.solvers.stage_scheduler`: a diffusers scheduler that runs stage ``k``
  exactly (no re-shifting, the stage's own terminal sigma);
- :func:`upsample_latents`: the transition between stages, ``x_s = a U(x_e) + b z`` with
  ``z ~ N(0, I - c U U^T)``, on ``(B, C, H, W)`` latents; with the same generator it draws
  exactly the noise RALU's sampler draws, so the stock route reproduces RALU's run;
  :func:`next_stage_latents` does the same on what a pipeline of any supported family
  returns, giving what its next stage takes as ``latents=``;
- :func:`flow_denoiser`: a flow-matching velocity model as a k-diffusion denoiser.

Flow to k-diffusion. k-diffusion samplers call ``model(x, sigma)`` and expect the denoised
estimate. For a flow model ``x = (1 - sigma) x0 + sigma noise`` with velocity
``v = noise - x0``, the estimate is ``x - sigma v``; pass the flow sigmas as they are (no
rescaling of ``x``). Then k-diffusion's ``to_d`` gives ``(x - denoised) / sigma = v`` and its
Euler and Heun steps are exactly flow-matching Euler and Heun. Samplers built for the
variance-exploding form (DPM-Solver++ and the like) treat these sigmas as VE sigmas: an
approximation, as node-based UIs that run flow models this way also make.
"""

from __future__ import annotations

import torch

from ralu_schedule import Transition, token_grid

from .noise import draw
from .sampler import _checked, apply_transition
from .tokens import TokenSet, check_mode, pack, unpack, upsample_mode


def upsample_latents(latents: torch.Tensor, transition: Transition, *, generator=None, upsample: str = "latent",
                     kept_noise: str = "exact", noise_sampler=None) -> torch.Tensor:
    """Apply a pyramid transition to ``(B, C, H, W)`` latents at the end of a stage: returns
    ``(B, C, f H, f W)`` latents at the next stage's restart time (``f = transition.factor``).

    ``transition``: ``schedule.transitions[k]`` of a :class:`ralu_schedule.Schedule` whose
    fractions are all 1. ``generator``, ``upsample``, ``kept_noise`` and ``noise_sampler`` as
    in :class:`ralu_torch.RALU`; the result is float32-computed and returned in the
    latents' dtype. FLUX's packed latents: :func:`ralu_torch.tokens.unpack` them first
    and :func:`~ralu_torch.tokens.pack` the result.
    """
    if not isinstance(transition, Transition):
        raise ValueError(f"transition must be a ralu_schedule.Transition (schedule.transitions[k]), "
                         f"got {type(transition).__name__}")
    if transition.fraction < 1.0:
        raise ValueError(f"this transition upsamples a fraction {transition.fraction:g} of the tokens, which needs "
                         "RALU's token selection and a mixed-resolution stage that stock samplers cannot run; "
                         "upsample_latents takes pyramid transitions (fraction 1) only")
    if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or latents.shape[2] % 2 or latents.shape[3] % 2:
        raise ValueError("latents must be a (batch, channels, height, width) tensor with even height and width, "
                         f"got {tuple(getattr(latents, 'shape', ()))}")
    check_mode(upsample)
    f = transition.factor
    B, _, H, W = latents.shape
    grid = (H // 2 * f, W // 2 * f)                      # the next stage's token grid
    tokens = TokenSet.regular(B, grid, f, device=latents.device)
    mask = torch.ones(B, tokens.length, dtype=torch.bool, device=latents.device)
    x, _ = apply_transition(pack(latents.float()), tokens, mask, transition, generator,
                            noise=_checked(noise_sampler or draw), upsample=upsample, kept_noise=kept_noise)
    return unpack(x, grid).to(latents.dtype)


def next_stage_latents(pipe, latents: torch.Tensor, transition: Transition, *, height: int, width: int,
                       generator=None, upsample: str = "latent", kept_noise: str = "exact",
                       noise_sampler=None) -> torch.Tensor:
    """:func:`upsample_latents` on what ``pipe`` (any pipeline ``RALU`` runs) returned for
    ``output_type="latent"`` at ``height x width``: returns the next stage's ``latents=``, in
    the form that pipeline takes them (FLUX.1, Chroma and Qwen-Image packed tokens, SD3 and
    Z-Image 4-D latents, FLUX.2 its patchified latent, Wan its 5-D clip; FLUX.2 [klein]'s
    denormalised output normalised again)::

        out = pipe(..., height=h, width=w, num_inference_steps=n0, output_type="latent").images
        x = next_stage_latents(pipe, out, schedule.transitions[0], height=h, width=w, generator=g)
        out = pipe(..., height=2 * h, width=2 * w, latents=x, ...)
    """
    from .backends import backend_for

    be = backend_for(pipe)
    grid = token_grid(height, width, pixels_per_token=be.pixels_per_token)
    if hasattr(be, "set_frames") and latents.dim() == 5:          # a clip: its latent frames stacked on the rows
        be.set_frames(latents.shape[2])
        grid = (latents.shape[2] * grid[0], grid[1])
    tokens = be.from_pipeline_latents(latents, grid).float()
    upsample = upsample_mode(upsample, getattr(be, "patch", 2))   # a token of one latent pixel: copied whole
    x = upsample_latents(unpack(tokens, grid), transition, generator=generator, upsample=upsample,
                         kept_noise=kept_noise, noise_sampler=noise_sampler)
    f = transition.factor
    return be.pipeline_input(pack(x), (grid[0] * f, grid[1] * f)).to(latents.dtype)


def flow_denoiser(velocity):
    """Wrap ``velocity(x, sigma, **kwargs) -> v`` (flow matching) as a k-diffusion denoiser
    ``model(x, sigma, **kwargs) -> x - sigma v`` (see the module docstring); ``sigma`` may be
    a number or one value per image, as k-diffusion samplers pass it."""
    if not callable(velocity):
        raise ValueError(f"velocity must be a callable (x, sigma) -> v, got {type(velocity).__name__}")

    def denoiser(x, sigma, **kwargs):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        v = velocity(x, s, **kwargs)
        return x - s.reshape(-1, *([1] * (x.dim() - 1))) * v if s.dim() else x - s * v

    return denoiser
