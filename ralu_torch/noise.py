"""Noise for the sampler, drawn from the caller's generators.

``draw`` follows diffusers' ``randn_tensor``: with a list of generators every image draws
its own noise from its own generator, so a batch run with ``[g0, g1]`` draws exactly what
two single runs with ``g0`` and ``g1`` draw.

``reinjection_noise`` makes ``z ~ N(0, I - c U U^T)`` in O(values): for children,
``z = w - beta * U(U^T w)`` with ``beta = (1 - sqrt(1 - n c)) / n`` (because ``U^T U = n I``,
its covariance is ``I - (2 beta - n beta^2) U U^T = I - c U U^T``); for tokens left at their
resolution (``U = I``), ``z = sqrt(1 - c) w``, or ``w`` with the authors' ``kept_noise="unit"``.
"""

from __future__ import annotations

import math

import torch
from diffusers.utils.torch_utils import randn_tensor

from ralu_schedule import block_noise_beta

from .options import KEPT_NOISE
from .tokens import pool_children, upsample_values


def check_generators(generator, batch: int) -> None:
    """A list of generators has one per image."""
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch} images; "
                         "pass one generator or one per image")


def draw(shape: tuple, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` (batch first), per-image when ``generator`` is a list."""
    check_generators(generator, shape[0])
    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)


def kept_scale(c: float, kept_noise: str = "exact") -> float:
    """The factor on ``w`` for a token left at its resolution by a transition: ``sqrt(1 - c)``
    (the exact variance ``1 - c``), or 1 with the authors' ``kept_noise="unit"``."""
    if kept_noise not in KEPT_NOISE:
        raise ValueError(f"kept_noise must be one of {', '.join(KEPT_NOISE)}, got {kept_noise!r}")
    return math.sqrt(1.0 - c) if kept_noise == "exact" else 1.0


def reinjection_noise(w: torch.Tensor, parent, slot, source, n_parents: int, c: float, factor: int,
                      kept_noise: str = "exact") -> torch.Tensor:
    """Turn i.i.d. normals ``w`` (B, L, F) on the new token set into re-injection noise."""
    if kept_noise not in KEPT_NOISE:
        raise ValueError(f"kept_noise must be one of {', '.join(KEPT_NOISE)}, got {kept_noise!r}")
    beta = block_noise_beta(factor * factor, c)
    z = upsample_values(pool_children(w, parent, slot, source, n_parents), parent, slot, source)
    z.mul_(-beta).add_(w)                                         # children: w - beta U(U^T w), in place
    kept = kept_scale(c, kept_noise)
    child = (slot >= 0)[..., None]
    torch.where(child, z, w, out=z)                               # kept tokens: w, with no result-sized temporary,
    if kept != 1.0:                                               # scaled by sqrt(1 - c) through a (B, L, 1) factor
        z.mul_(torch.where(child, 1.0, kept).to(z.dtype))
    return z
