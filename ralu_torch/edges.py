"""Edge detectors for the selection of tokens to upsample, on the model's device.

- :func:`edge_map`: kornia's Canny on a grey image in ``[0, 1]`` made from the decoded
  estimate in ``[-1, 1]`` (the default selection, ``"edges"``);
- :func:`authors_edge_map`: the edge detector of the authors' code, reproduced in torch
  with integer arithmetic so it gives OpenCV's ``cv2.Canny`` bit for bit without OpenCV
  (the ``"authors"`` selection).
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

#: OpenCV's fixed-point RGB -> grey weights for 8-bit images (``COLOR_RGB2GRAY``), shift 15.
_GREY_WEIGHTS = (9798, 19235, 3735)
#: ``round(tan(22.5 deg) * 2^15)``: OpenCV's Canny direction test in fixed point.
_TAN22 = 13573
#: The authors' Canny thresholds on the L1 gradient of an 8-bit image.
AUTHORS_THRESHOLDS = (100, 200)


#: Hysteresis rounds of the default edge map: weak edges join a strong one through at most
#: this many pixels. Bounded, so edge detection never waits for the host (kornia's own
#: hysteresis loops until nothing changes, checking the device every round).
HYSTERESIS_ROUNDS = 64


def edge_map(images: torch.Tensor, thresholds=(0.1, 0.2), rounds: int | None = HYSTERESIS_ROUNDS) -> tuple:
    """Canny (kornia, on the device of ``images``) of RGB(A) images in ``[-1, 1]``: the gradient
    magnitude and the binary edges, each ``(B, 1, H, W)``. Hysteresis runs ``rounds``
    dilation rounds (:func:`hysteresis`; ``None``: until nothing changes, as kornia does)."""
    # the colour channels (an RGBA decoder's alpha, Qwen-Image 2.1's, is not part of the picture's edges)
    rgb = images[:, :3].float().add(1.0).div_(2.0).clamp_(0.0, 1.0)    # one copy, then in place
    gray = kornia.color.rgb_to_grayscale(rgb)
    del rgb
    parts = [[t[..., keep, :] for t in kornia.filters.canny(gray[..., lo:hi, :], low_threshold=thresholds[0],
                                                             high_threshold=thresholds[1], hysteresis=False)]
             for lo, hi, keep in _bands(gray.shape[-2])]
    magnitude, levels = (torch.cat(column, dim=-2) for column in zip(*parts))
    edges = hysteresis(levels[:, 0] == 1.0, levels[:, 0] > 0.0, rounds)      # levels: 0, 0.5 weak, 1 strong
    return magnitude, edges[:, None].to(magnitude.dtype)


#: Rows per band of the Canny stages before hysteresis, and the halo each band reads on both
#: sides: the 5x5 blur, the 3x3 gradient and the 3x3 non-maximum suppression reach 2 + 1 + 1
#: rows, so a band's own rows come out exactly as from the whole image, with a fraction of
#: kornia's temporaries (its gradient alone takes 24 MiB for a 512x512 image).
BAND_ROWS, BAND_HALO = 64, 4


def _bands(height: int) -> list:
    """``(lo, hi, keep)`` per band: the haloed rows ``lo:hi`` to compute, and ``keep``, the
    band's own rows inside that slice."""
    out = []
    for top in range(0, height, BAND_ROWS):
        lo, hi = max(0, top - BAND_HALO), min(height, top + BAND_ROWS + BAND_HALO)
        out.append((lo, hi, slice(top - lo, top - lo + min(BAND_ROWS, height - top))))
    return out


def token_scores(canny: tuple, pixels_per_token: int) -> torch.Tensor:
    """Score of each token's pixel block, ``(B, rows, cols)``: its Canny edge density, with
    ties (blocks with equal edge counts, e.g. none at all) broken by mean gradient magnitude.

    The magnitude term is scaled below the smallest step of the edge density, so it never
    overrides an edge count; it only keeps flat estimates from falling back to raster order.
    """
    magnitude, edges = canny
    density = F.avg_pool2d(edges, pixels_per_token)[:, 0]
    mag = F.avg_pool2d(magnitude, pixels_per_token)[:, 0]
    top = mag.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return density + (mag / top) / (2.0 * pixels_per_token**2)


def authors_grey(images: torch.Tensor) -> torch.Tensor:
    """The authors' 8-bit grey image ``(B, H, W)`` int32 of decoded estimates in ``[-1, 1]``.

    As their code does: the estimate is clipped to ``[0, 1]`` *without* mapping ``[-1, 1]``
    to ``[0, 1]`` first (so everything darker than mid-grey becomes black), scaled to 8 bits
    with rounding, and turned grey with OpenCV's fixed-point weights.
    """
    u8 = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.int32)
    wr, wg, wb = _GREY_WEIGHTS
    return (u8[:, 0] * wr + u8[:, 1] * wg + u8[:, 2] * wb + (1 << 14)) >> 15


def authors_edge_map(images: torch.Tensor, thresholds=AUTHORS_THRESHOLDS) -> torch.Tensor:
    """Binary ``(B, H, W)`` edges of the authors' rule: Canny without Gaussian blur on
    :func:`authors_grey`, 3x3 Sobel (replicated border), L1 gradient magnitude, non-maximum
    suppression and 8-connected hysteresis as ``cv2.Canny(grey, 100, 200)`` computes them.
    """
    grey = authors_grey(images)
    low, high = thresholds
    p = F.pad(grey[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0].to(torch.int32)
    dx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    dy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    mag = dx.abs() + dy.abs()
    m = F.pad(mag, (1, 1, 1, 1))                        # zeros outside, as OpenCV's magnitude buffer
    at = lambda dr, dc: m[:, 1 + dr:m.shape[1] - 1 + dr, 1 + dc:m.shape[2] - 1 + dc]  # noqa: E731
    ax, ay = dx.abs(), dy.abs()
    tg22 = ax * _TAN22
    ys = ay * (1 << 15)
    horizontal = ys < tg22
    vertical = ys > tg22 + ax * (1 << 16)
    opposite = (dx < 0) != (dy < 0)                    # gradient along the anti-diagonal
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = torch.where(opposite, (mag > at(-1, 1)) & (mag > at(1, -1)), (mag > at(-1, -1)) & (mag > at(1, 1)))
    keep = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    candidate = keep & (mag > low)
    return hysteresis(candidate & (mag > high), candidate)


def hysteresis(strong: torch.Tensor, candidate: torch.Tensor, rounds: int | None = None,
               rounds_per_check: int = 8) -> torch.Tensor:
    """Candidates 8-connected to a strong pixel through candidates: grow ``strong`` (B, H, W)
    by 3x3 dilation inside ``candidate``.

    ``rounds=None``: until nothing changes (exact; the device is checked every
    ``rounds_per_check`` rounds). An integer: exactly that many rounds, with no host
    synchronisation; a weak pixel further than ``rounds`` steps along candidates from every
    strong pixel is then left out.
    """
    edges = strong
    if rounds is not None:
        for _ in range(rounds):
            edges = _grow(edges, candidate)
        return edges
    while True:
        before = edges
        for _ in range(rounds_per_check):
            edges = _grow(edges, candidate)
        if torch.equal(edges, before):
            return edges


def _grow(edges: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One 3x3 dilation of a boolean map, kept inside ``allowed``: an OR over the
    neighbours, along rows then columns (30x faster on a CPU than a max-pool of floats)."""
    p = F.pad(edges, (1, 1, 1, 1))
    rows = p[:, :, :-2] | p[:, :, 1:-1] | p[:, :, 2:]
    return (rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]) & allowed


def edge_counts(edges: torch.Tensor, pixels_per_token: int) -> torch.Tensor:
    """Edge pixels in each token's ``pixels_per_token``-square block: ``(B, rows, cols)``."""
    B, H, W = edges.shape
    p = pixels_per_token
    return edges.reshape(B, H // p, p, W // p, p).sum(dim=(2, 4))
