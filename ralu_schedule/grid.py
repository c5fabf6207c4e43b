"""The token grid of an image: the one rule that turns pixels into tokens.

FLUX and SD3 use a VAE that downsamples by 8 and tokens of ``2 x 2`` latent pixels, so a
token covers ``16 x 16`` image pixels. A layout whose first stage runs ``D`` times coarser
per axis needs both image sides to be multiples of ``16 D`` pixels. The sampler, the cost
model and both command lines call :func:`token_grid`; nothing else restates the rule.
"""

from __future__ import annotations

import numbers

#: Latent pixels per token side (FLUX packs 2x2 latent pixels; SD3 patchifies with patch size 2).
PATCH_SIZE = 2
#: Image pixels per latent pixel (the 16-channel VAE of FLUX and SD3).
VAE_FACTOR = 8
#: Image pixels per token side.
PIXELS_PER_TOKEN = VAE_FACTOR * PATCH_SIZE


def token_grid(height, width, *, pixels_per_token: int = PIXELS_PER_TOKEN, downsampling: int = 1,
               what: str = "this schedule") -> tuple:
    """``(rows, cols)`` of full-resolution tokens of a ``height x width`` image.

    Both sides must be positive integer multiples of ``pixels_per_token * downsampling``
    pixels; otherwise ``ValueError`` names the unit, where it comes from, and what was given.
    """
    unit = pixels_per_token * downsampling
    ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 and v % unit == 0
             for v in (height, width))
    if not ok:
        raise ValueError(f"height and width must be positive multiples of {unit} pixels for {what} "
                         f"({pixels_per_token} pixels per token x downsampling {downsampling}), "
                         f"got {height}x{width}")
    return int(height) // pixels_per_token, int(width) // pixels_per_token
