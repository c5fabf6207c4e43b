"""Edge scores of a decoded estimate and the top-``r`` token selection, on the model's device."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from ralu_schedule import upsample_count

from .tokens import TokenSet


def edge_map(images: torch.Tensor, thresholds=(0.1, 0.2)) -> tuple:
    """Canny (kornia, on the device of ``images``) of images in ``[-1, 1]``: the gradient
    magnitude and the binary edges, each ``(B, 1, H, W)``."""
    rgb = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    gray = kornia.color.rgb_to_grayscale(rgb)
    return kornia.filters.canny(gray, low_threshold=thresholds[0], high_threshold=thresholds[1])


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


def select_top(tokens: TokenSet, scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mark, per image, the top ``fraction`` of the coarsest tokens by score (ties: raster order).

    ``scores`` is ``(B, rows, cols)`` on the coarsest grid. ``fraction = 1`` selects all of
    them. Returns a ``(B, L)`` boolean mask.
    """
    coarse = tokens.is_coarse()
    n = int(coarse[0].sum())
    k = upsample_count(n, fraction)
    if k == n:
        return coarse
    D = tokens.coarsest
    s = scores[torch.arange(tokens.batch, device=scores.device)[:, None],
               tokens.cells[..., 0] // D, tokens.cells[..., 1] // D].float()
    s = torch.where(coarse, s, torch.full_like(s, -torch.inf))
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k]
    select = torch.zeros_like(coarse)
    select.scatter_(1, order, True)
    return select
