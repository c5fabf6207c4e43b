"""Edge scores of a decoded estimate and the top-``r`` token selection, on the model's device."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from ralu_schedule import upsample_count

from .tokens import TokenSet


def edge_map(images: torch.Tensor, thresholds=(0.1, 0.2)) -> torch.Tensor:
    """Canny edges (kornia, same device as ``images``) of images in ``[-1, 1]``: ``(B, 1, H, W)``."""
    rgb = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    gray = kornia.color.rgb_to_grayscale(rgb)
    _, edges = kornia.filters.canny(gray, low_threshold=thresholds[0], high_threshold=thresholds[1])
    return edges


def token_scores(edges: torch.Tensor, pixels_per_token: int) -> torch.Tensor:
    """Mean edge density of each token's pixel block: ``(B, rows, cols)``."""
    return F.avg_pool2d(edges, pixels_per_token)[:, 0]


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
