"""How much the selection policies agree, on images that ship with the test dependencies.

Natural images: the photograph and the illustration in matplotlib's sample data (no
download). Synthetic ones: a spiral, uniform noise, smoothed noise, flat shapes, and the
decode of a random latent by a random-weight VAE. All are ``(B, 3, H, W)`` in ``[-1, 1]``,
the range of a decoded estimate; sides are multiples of 16 pixels (one token).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..selection import selection_policy
from ..tokens import TokenSet


def _sample_image(name: str) -> torch.Tensor:
    import matplotlib
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", name)
    rgb = np.array(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1.0


def natural_images() -> dict:
    """Crops of matplotlib's sample photograph and illustration, and the photo darkened
    below mid-grey (as an underexposed estimate would be)."""
    photo = _sample_image("grace_hopper.jpg")[..., :512, :512]
    crops = torch.cat([photo[..., :256, :256], photo[..., 256:, 256:], photo[..., 128:384, 128:384]])
    return {"photo": photo, "photo-crops": crops, "illustration": _sample_image("Minduka_Present_Blue_Pack.png"),
            "dark-photo": photo * 0.5 - 0.5}


def synthetic_images(size: int = 128, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    c = size / 2
    spiral = torch.sin(((yy - c) ** 2 + (xx - c) ** 2).sqrt() / 3 + 3 * torch.atan2(yy - c, xx - c))
    shapes = torch.full((3, size, size), -0.6)
    shapes[:, size // 8:size // 2, size // 8:size // 2] = 0.8
    shapes[0, ((yy - 0.7 * size) ** 2 + (xx - 0.6 * size) ** 2) < (size / 5) ** 2] = 0.9
    noise = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    smooth = F.avg_pool2d(torch.rand(2, 3, size + 4, size + 4, generator=g) * 4 - 1, 5, stride=1).clamp(-1, 1)
    return {"spiral": spiral.expand(1, 3, size, size).contiguous(), "shapes": shapes[None], "noise": noise,
            "smooth-noise": smooth, "random-vae-decode": _random_decode(size, seed)}


def _random_decode(size: int, seed: int) -> torch.Tensor:
    from diffusers import AutoencoderKL

    from ..testing import TINY_VAE

    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE)
    z = torch.randn(1, 16, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        img = vae.decode(z).sample
    return (img / img.abs().amax()).clamp(-1, 1)


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of the tokens selected in ``a`` that ``b`` selects too (both ``(B, L)`` masks)."""
    return float((a & b).sum() / a.sum().clamp(min=1))


def agreement(images: torch.Tensor, fraction: float, pixels_per_token: int = 16, seed: int = 0) -> float:
    """Overlap of the ``"edges"`` and ``"authors"`` selections on decoded estimates ``images``."""
    B, _, H, W = images.shape
    tokens = TokenSet.regular(B, (2 * H // pixels_per_token, 2 * W // pixels_per_token), 2)
    picks = [selection_policy(name, pixels_per_token)(images, tokens, fraction, torch.Generator().manual_seed(seed))
             for name in ("edges", "authors")]
    return overlap(*picks)
