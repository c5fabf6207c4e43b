"""An analytic backend: stationary Gaussian random fields whose flow-matching velocity is
known exactly, run through the same sampler as FLUX and SD3.

Data ``x1`` are ``C``-channel fields on a periodic ``H x W`` pixel grid, channels
independent, each with the power spectrum ``lambda(k) proportional to (|k|^2 + k0^2)^(-alpha/2)``
(``alpha = 2`` is the 1/f^2 spectrum of natural images), normalised to unit variance per
pixel. The FFT diagonalises a stationary covariance, so the exact velocity
``E[eps - x1 | x_t]`` acts mode by mode (with ``sigma = 1 - t``)::

    v_k = g_k(sigma) x_k,     g_k(sigma) = (sigma - (1 - sigma) lambda_k) / ((1 - sigma)^2 lambda_k + sigma^2)

Low-resolution data are the full-resolution field average-pooled by the token size ``S``;
their spectrum ``lambda_S`` is computed exactly (the field's autocovariance smoothed by the
pooling window, subsampled). Tokens are 2x2 pixel patches, as FLUX packs its latents.

Mixed token sets have no exact velocity. The rule used: paint the tokens onto the
full-resolution grid by nearest upsampling (``ralu_torch.tokens.to_latent``), take the exact
full-resolution velocity there, and give every token the average of that velocity over
the pixels it covers. On a token set of one size the exact velocity at that resolution is
used. ``decode`` is the identity up to the fixed scale 1/3 (so +-3 standard deviations fill
the image range), which lets the sampler's edge selection run unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ralu_schedule import ShiftRule

from ..tokens import pack, to_latent


@dataclass(frozen=True, kw_only=True)
class GaussianField:
    """The data distribution: ``channels`` independent stationary fields on ``height x width`` pixels."""

    height: int = 64
    width: int = 64
    channels: int = 3
    exponent: float = 2.0     # alpha: power ~ |k|^-alpha
    k0: float = 1.0 / 64      # low-frequency cut-off, cycles per pixel

    def __post_init__(self):
        if self.height % 2 or self.width % 2 or self.height < 4 or self.width < 4:
            raise ValueError(f"height and width must be even and >= 4, got {self.height}x{self.width}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.k0 <= 0:
            raise ValueError(f"k0 must be > 0, got {self.k0}")

    def spectrum(self, size: int = 1) -> torch.Tensor:
        """Per-mode variance ``lambda`` (float64, ``H/size x W/size``) of the field pooled by ``size``."""
        return _spectrum(self, size).clone()

    def sample(self, n: int, generator=None, size: int = 1) -> torch.Tensor:
        """``n`` exact draws ``(n, C, H/size, W/size)`` of the (pooled) field, float64."""
        lam = _spectrum(self, size)
        w = torch.randn(n, self.channels, *lam.shape, generator=generator, dtype=torch.float64)
        return torch.fft.ifft2(torch.fft.fft2(w) * lam.sqrt()).real

    def velocity(self, x: torch.Tensor, sigma: float, size: int = 1) -> torch.Tensor:
        """Exact ``E[eps - x1 | x_sigma]`` for fields ``x`` (..., H/size, W/size) at ``sigma``."""
        lam = _spectrum(self, size).to(x.device)
        s = float(sigma)
        g = (s - (1.0 - s) * lam) / ((1.0 - s) ** 2 * lam + s * s)
        return torch.fft.ifft2(torch.fft.fft2(x.to(torch.float64)) * g).real


@functools.lru_cache(maxsize=64)
def _spectrum(field: GaussianField, size: int) -> torch.Tensor:
    H, W = field.height, field.width
    ky = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(W, dtype=torch.float64)[None, :]
    lam = (ky**2 + kx**2 + field.k0**2) ** (-field.exponent / 2)
    lam = lam / lam.mean()                        # unit variance per pixel
    if size == 1:
        return lam
    if H % size or W % size:
        raise ValueError(f"a {H}x{W} field cannot be pooled by {size}")
    box = torch.zeros(H, W, dtype=torch.float64)
    box[:size, :size] = 1.0 / size**2
    smoothed = torch.fft.ifft2(lam * torch.fft.fft2(box).abs() ** 2).real     # autocovariance of the pooled field
    return torch.fft.fft2(smoothed[::size, ::size]).real.clamp(min=0.0)


class GaussianBackend:
    """The sampler contract for a :class:`GaussianField` (no text, no weights)."""

    name = "gaussian"

    def __init__(self, field: GaussianField, base_shift: float = 3.0, device="cpu"):
        self.field = field
        self.latent_channels = field.channels
        self.features = field.channels * 4
        self.pixels_per_token = 2            # decode is the identity: a token is 2x2 pixels
        self.base_shift = base_shift
        self._device = torch.device(device)

    @property
    def device(self):
        return self._device

    @property
    def dtype(self):
        return torch.float32

    @property
    def grid(self) -> tuple:
        return self.field.height // 2, self.field.width // 2

    def shift_rule(self) -> ShiftRule:
        return ShiftRule(dynamic=False, shift=self.base_shift)

    def velocity(self, x: torch.Tensor, tokens, sigma, cond=None) -> torch.Tensor:
        sizes = torch.unique(tokens.size).tolist()
        if len(sizes) == 1:                                   # one resolution: exact
            S = sizes[0]
            lat = _raster_latent(x, tokens, S)
            return _to_tokens(self.field.velocity(lat, float(sigma), S).float(), tokens, S)
        v_full = self.field.velocity(to_latent(x, tokens), float(sigma), 1).float()
        out = torch.empty_like(x)
        for S in sizes:                                       # pool the velocity back per token size
            mask = tokens.size == S
            pooled = F.avg_pool2d(v_full, S) if S > 1 else v_full
            out[mask] = _to_tokens(pooled, tokens, S)[mask]
        return out

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        img = latents / 3.0
        if img.shape[1] == 3:
            return img
        return img.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)


def _raster_latent(x, tokens, S):
    """Latent of a one-size token set (any order) at its own resolution."""
    B, L, Fdim = x.shape
    gw = tokens.grid[1] // S
    idx = (tokens.cells[..., 0] // S) * gw + tokens.cells[..., 1] // S
    raster = torch.empty_like(x).scatter_(1, idx[..., None].expand(-1, -1, Fdim), x)
    from ..tokens import unpack

    return unpack(raster, (tokens.grid[0] // S, gw))


def _to_tokens(lat, tokens, S):
    """Values of the tokens of size ``S`` read from a latent at resolution ``1/S``."""
    packed = pack(lat)
    gw = tokens.grid[1] // S
    idx = ((tokens.cells[..., 0] // S) * gw + tokens.cells[..., 1] // S).clamp(max=packed.shape[1] - 1)
    return packed.gather(1, idx[..., None].expand(-1, -1, packed.shape[-1]))
