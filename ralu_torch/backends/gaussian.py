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

from ralu_schedule import ShiftRule
from ralu_schedule.layout import DEFAULT_BASE_SHIFT

from ..tokens import latent_index, latent_tokens, raster_latent, to_latent, tokens_from_latent


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
        s = torch.as_tensor(sigma, device=x.device).to(torch.float64)   # stays on the device: no sync
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


#: Most float64 values of gathered covariance factors a texture sample holds at once (256 MB).
_GATHER_VALUES = 1 << 25


def _chunks(n: int, size: int):
    """``(lo, hi)`` ranges covering ``range(n)``, ``size`` long but for the last, which is never a
    single item (a batched product of one runs another kernel, whose rounding differs)."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(lo, starts[k + 1] if k + 1 < len(starts) else n) for k, lo in enumerate(starts)]


def _dense_stationary(lam: torch.Tensor) -> torch.Tensor:
    """Dense covariance (N x N, row-major pixels) of a periodic stationary field with spectrum ``lam``."""
    H, W = lam.shape
    acov = torch.fft.ifft2(lam).real
    y = torch.arange(H).repeat_interleave(W)
    x = torch.arange(W).repeat(H)
    return acov[(y[:, None] - y[None, :]) % H, (x[:, None] - x[None, :]) % W]


def _pooling_matrix(H: int, W: int, size: int) -> torch.Tensor:
    y = torch.arange(H).repeat_interleave(W) // size
    x = torch.arange(W).repeat(H) // size
    coarse = y * (W // size) + x
    P = torch.zeros((H // size) * (W // size), H * W, dtype=torch.float64)
    P[coarse, torch.arange(H * W)] = 1.0 / size**2
    return P


@dataclass(frozen=True, kw_only=True)
class TexturePatchField:
    """Data with sharp regions: a smooth field plus a rough texture inside one square region.

    ``x1 = s + D_m r``: ``s`` a stationary field with spectrum exponent ``smooth_exponent``,
    ``r`` an independent rough one (``texture_exponent``, variance ``texture_variance``),
    ``D_m`` the indicator of a ``region x region`` square at one of ``positions`` (top-left
    pixels), chosen uniformly; channels are independent given the region. This is a finite
    Gaussian mixture, so the velocity is still exact: with ``A_m = t^2 Sigma_m + sigma^2 I``,

        E[eps - x1 | x_t] = sum_m w_m(x_t) (sigma I - t Sigma_m) A_m^{-1} x_t,

    ``w_m`` the posterior probability of region ``m``. Dense ``(HW)^2`` covariances: keep
    fields small (32 x 32 is the benchmark's size).
    """

    height: int = 32
    width: int = 32
    channels: int = 3
    smooth_exponent: float = 3.0
    texture_exponent: float = 0.5
    texture_variance: float = 2.0
    region: int = 12
    positions: tuple = ((4, 4), (4, 16), (16, 4), (16, 16))
    k0: float = 1.0 / 32

    def __post_init__(self):
        GaussianField(height=self.height, width=self.width, channels=self.channels, k0=self.k0)  # same checks
        for r, c in self.positions:
            if not (0 <= r and r + self.region <= self.height and 0 <= c and c + self.region <= self.width):
                raise ValueError(f"region at {(r, c)} of side {self.region} leaves the {self.height}x{self.width} field")

    def masks(self) -> torch.Tensor:
        """``(K, H, W)`` indicators of the candidate regions."""
        m = torch.zeros(len(self.positions), self.height, self.width, dtype=torch.float64)
        for k, (r, c) in enumerate(self.positions):
            m[k, r:r + self.region, c:c + self.region] = 1.0
        return m

    def covariances(self, size: int = 1) -> torch.Tensor:
        """``(K, n, n)`` covariance of each mixture component, pooled by ``size``."""
        return _texture_covariances(self, size).clone()

    def spectrum(self, size: int = 1) -> torch.Tensor:
        """The mixture's mean per-mode power (what a stationary summary compares against)."""
        cov = _texture_covariances(self, size).mean(dim=0)
        h, w = self.height // size, self.width // size
        basis = torch.fft.fft2(torch.eye(h * w, dtype=torch.float64).reshape(h * w, h, w)).reshape(h * w, h * w)
        return torch.einsum("ij,ik,jk->k", cov.to(torch.complex128), basis.conj(), basis).real.reshape(h, w) / (h * w)

    def sample(self, n: int, generator=None, size: int = 1) -> torch.Tensor:
        cov = _texture_covariances(self, size)
        K, N, _ = cov.shape
        L = torch.linalg.cholesky(cov + 1e-10 * torch.eye(N, dtype=torch.float64))
        m = torch.randint(K, (n,), generator=generator)
        w = torch.randn(n, self.channels, N, generator=generator, dtype=torch.float64)
        # each sample's factor L[m_b] is gathered for a chunk of samples at a time: gathered for all
        # at once it is n dense N x N matrices (8 GB for the 1024 reference draws at 32 x 32); the
        # chunks run the same batched product, so the values are the same, bit for bit
        x = torch.empty(n, self.channels, N, dtype=torch.float64)
        for lo, hi in _chunks(n, max(2, _GATHER_VALUES // (N * N))):
            x[lo:hi] = torch.einsum("bij,bcj->bci", L[m[lo:hi]], w[lo:hi])
        return x.reshape(n, self.channels, self.height // size, self.width // size)

    def velocity(self, x: torch.Tensor, sigma: float, size: int = 1) -> torch.Tensor:
        cov = _texture_covariances(self, size).to(x.device)
        K, N, _ = cov.shape
        s = torch.as_tensor(sigma, device=x.device).to(torch.float64)
        t = 1.0 - s
        B, C = x.shape[:2]
        flat = x.to(torch.float64).reshape(B * C, N).T                           # (N, B*C)
        A = t * t * cov + s * s * torch.eye(N, dtype=torch.float64, device=x.device)
        L = torch.linalg.cholesky(A)
        y = torch.cholesky_solve(flat.expand(K, N, B * C), L)                     # A_m^{-1} x
        quad = (flat[None] * y).sum(dim=1).reshape(K, B, C).sum(dim=2)           # (K, B)
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(dim=1)   # (K,)
        w = torch.softmax(-0.5 * quad - 0.5 * C * logdet[:, None], dim=0)        # (K, B)
        v = s * y - t * cov @ y                                                   # (K, N, B*C)
        v = (v.reshape(K, N, B, C) * w[:, None, :, None]).sum(dim=0)
        return v.permute(1, 2, 0).reshape(x.shape)


@functools.lru_cache(maxsize=16)
def _texture_covariances(field: TexturePatchField, size: int) -> torch.Tensor:
    smooth = GaussianField(height=field.height, width=field.width, exponent=field.smooth_exponent, k0=field.k0)
    rough = GaussianField(height=field.height, width=field.width, exponent=field.texture_exponent, k0=field.k0)
    S = _dense_stationary(_spectrum(smooth, 1))
    R = field.texture_variance * _dense_stationary(_spectrum(rough, 1))
    covs = []
    for mask in field.masks():
        d = mask.reshape(-1)
        covs.append(S + d[:, None] * R * d[None, :])
    cov = torch.stack(covs)
    if size > 1:
        P = _pooling_matrix(field.height, field.width, size)
        cov = P @ cov @ P.T
    return cov


class GaussianBackend:
    """The sampler contract for a :class:`GaussianField` or :class:`TexturePatchField`
    (no text, no weights)."""

    name = "gaussian"
    noise_layout = "latent"

    def __init__(self, field, base_shift: float = DEFAULT_BASE_SHIFT, device="cpu"):
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

    def prepare(self, tokens, cond=None) -> tuple:
        """The stage's token set, its token sizes and (mixed sets) the painting index."""
        sizes = torch.unique(tokens.size).tolist()
        index = latent_index(tokens, self.features) if len(sizes) > 1 else None
        return tokens, sizes, index

    def velocity(self, x: torch.Tensor, positions: tuple, sigma, cond=None) -> torch.Tensor:
        tokens, sizes, index = positions
        if index is None:                                     # one resolution: exact
            S = sizes[0]
            lat = raster_latent(x, tokens, S)
            return tokens_from_latent(self.field.velocity(lat, sigma, S).float(), tokens, S)
        v_full = self.field.velocity(to_latent(x, tokens, index), sigma, 1).float()
        return latent_tokens(v_full, tokens, sizes)          # pooled back per token size

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        img = latents / 3.0
        if img.shape[1] == 3:
            return img
        return img.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
