"""Which low-resolution tokens a partial transition upsamples: selection policies.

A policy is a callable ``(estimate, tokens, fraction, generator) -> mask``: ``estimate`` is
the decoded clean estimate ``(B, 3, H, W)`` in ``[-1, 1]`` at the coarsest resolution present
(one token is ``pixels_per_token`` pixels there), ``tokens`` the current
:class:`~ralu_torch.tokens.TokenSet`, ``generator`` the caller's generator(s); ``mask`` is a
``(B, L)`` boolean tensor that marks, per image, exactly
``upsample_count(coarse tokens, fraction)`` of the coarsest tokens (the one count rule,
shared with the cost model). Built-in policies, chosen by name:

- ``"edges"`` (default): kornia's Canny on the estimate, edge density per token, ties
  broken by gradient magnitude (deterministic, draws no random numbers);
- ``"authors"``: the rule of the authors' code, for reproducing the paper's numbers: 8-bit
  grey of the estimate clipped to ``[0, 1]``, OpenCV's Canny (no blur, 3x3 Sobel, L1,
  thresholds 100/200), edge pixels per token, ties broken by tiny noise from ``generator``.
  The count is the shared rule (nearest), which equals the authors' floor at the paper's
  resolution and can differ by one token elsewhere;
- ``"random"``: a uniformly random choice from ``generator`` (an ablation baseline);
- ``"condition"`` (image-conditioned pipelines): the edges of the condition image instead of
  the estimate's, found once before the first step (:class:`ConditionSelection`; no decode at
  transitions).

Video (a clip's latent frames stacked along the token rows, :mod:`ralu_torch.backends.wan`):
``estimate`` is the decoded clip ``(B, 3, frames, H, W)``. A token is a patch of one latent
frame, and a latent frame stands for several video frames (Wan's VAE: the first latent frame
for the first video frame, each later one for the next four), so the built-in policies score
every video frame as an image and give a token the mean of its score over the video frames
its latent frame stands for: the edge density of the space-time block it covers. The top
fraction is then taken over the whole clip (:func:`clip_scores`).
"""

from __future__ import annotations

from typing import Callable

import torch

from ralu_schedule import upsample_count

from .edges import authors_edge_map, edge_counts, edge_map, token_scores
from .noise import draw
from .options import CONDITION_SELECTIONS, SELECTIONS
from .tokens import TokenSet


def select_top(tokens: TokenSet, scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mark, per image, the top ``fraction`` of the coarsest tokens by score (ties: raster order).

    ``scores`` is ``(B, rows, cols)`` on the coarsest grid. ``fraction = 1`` selects all of
    them. Returns a ``(B, L)`` boolean mask.
    """
    coarse = tokens.is_coarse()
    n, k = _counts(coarse, fraction)
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


def _counts(coarse: torch.Tensor, fraction: float) -> tuple:
    """Coarse tokens per image and how many of them the count rule upsamples."""
    n = int(coarse[0].sum())
    return n, upsample_count(n, fraction)


def _frame_noise(tokens: TokenSet, generator, device) -> torch.Tensor:
    """One standard normal per coarse-grid cell and image, from the caller's generator(s)."""
    return draw((tokens.batch, *tokens.frame), generator, device)


def clip_scores(estimate: torch.Tensor, score: Callable, tokens: TokenSet) -> torch.Tensor:
    """Per-token scores on the coarsest grid, ``(B, rows, cols)``: ``score(images)`` of an image
    estimate ``(B, 3, H, W)``; for a clip ``(B, 3, frames, H, W)``, each video frame scored as an
    image and averaged over the frames each latent frame stands for (the first latent frame:
    the first video frame; each later one: the next ``(frames - 1) / (latent frames - 1)``),
    the latent frames stacked along the rows as the token grid stacks them."""
    if estimate.dim() == 4:
        return score(estimate)
    B, C, n, H, W = estimate.shape
    per_frame = score(estimate.transpose(1, 2).reshape(B * n, C, H, W))
    rows, cols = per_frame.shape[-2:]
    per_frame = per_frame.view(B, n, rows, cols)
    latent = tokens.frame[0] // rows
    if latent * rows != tokens.frame[0] or (latent == 1 and n != 1) or (latent > 1 and (n - 1) % (latent - 1)):
        raise ValueError(f"a clip of {n} frames of {rows}x{cols} tokens does not fit a token grid of "
                         f"{tokens.frame[0]}x{tokens.frame[1]}")
    if latent == 1:
        return per_frame[:, 0]
    k = (n - 1) // (latent - 1)
    later = per_frame[:, 1:].reshape(B, latent - 1, k, rows, cols).mean(dim=2)
    return torch.cat([per_frame[:, :1], later], dim=1).reshape(B, latent * rows, cols)


class EdgeSelection:
    """``"edges"``: kornia Canny edge density per token, gradient magnitude for ties."""

    def __init__(self, pixels_per_token: int, thresholds=(0.1, 0.2)):
        self.pixels_per_token = pixels_per_token
        self.thresholds = check_edge_thresholds(thresholds)

    def __call__(self, estimate, tokens, fraction, generator=None):
        scores = clip_scores(estimate, lambda im: token_scores(edge_map(im, self.thresholds), self.pixels_per_token),
                             tokens)
        return select_top(tokens, scores, fraction)


class AuthorsSelection:
    """``"authors"``: the authors' OpenCV rule, in torch on any device (see the module docstring).

    What it gets wrong, and why it is not the default: the estimate in ``[-1, 1]`` is clipped
    to ``[0, 1]`` without being mapped there first, so everything darker than mid-grey is
    black and has no edges; on a dark image the selection is pure tie-break noise.
    """

    def __init__(self, pixels_per_token: int):
        self.pixels_per_token = pixels_per_token

    def __call__(self, estimate, tokens, fraction, generator=None):
        counts = clip_scores(estimate, lambda im: edge_counts(authors_edge_map(im), self.pixels_per_token).float(),
                             tokens)
        # sigmoid(noise) / 2 lies in (0, 1/2): it orders equal counts and never overrides a count
        tie = torch.sigmoid(_frame_noise(tokens, generator, counts.device)) / 2
        return select_top(tokens, counts + tie, fraction)


class RandomSelection:
    """``"random"``: a uniformly random choice of tokens from the caller's generator."""

    def __call__(self, estimate, tokens, fraction, generator=None):
        return select_top(tokens, _frame_noise(tokens, generator, tokens.cells.device), fraction)


class ConditionSelection:
    """``"condition"``: kornia Canny edge density of the image the pipeline is conditioned on
    (the source image, the first frame, the control image), at the output size, scored per token
    as ``"edges"`` scores the estimate (ties by gradient magnitude). Its edges are found once, before
    the first step; a transition reads them at its coarsest token size and decodes nothing.

    ``RALU`` binds it to each call's condition (:meth:`bind`: the conditioning's
    ``selection_pixels``, ``(B or 1, 3, H, W)`` in ``[-1, 1]``). A clip's tokens of every latent
    frame read the image's score at their place: the condition is one frame, the clip starts there.
    """

    def __init__(self, pixels_per_token: int, thresholds=(0.1, 0.2)):
        self.pixels_per_token = pixels_per_token
        self.thresholds = check_edge_thresholds(thresholds)

    def bind(self, cond) -> "ConditionEdges":
        pixels = getattr(cond, "selection_pixels", None)
        if pixels is None:
            raise ValueError("select='condition' needs the condition's pixels, and this call gave its condition as "
                             "latents; pass the image, or use select='edges'")
        return ConditionEdges(edge_map(pixels, self.thresholds), self.pixels_per_token)

    def __call__(self, estimate, tokens, fraction, generator=None):
        raise ValueError("select='condition' reads a call's condition: RALU binds it to each call (bind(cond)); it "
                         "cannot pick tokens from an estimate alone")


class ConditionEdges:
    """:class:`ConditionSelection` bound to one call's condition: ``canny`` is the edge map
    (gradient magnitude, edges), each ``(B or 1, 1, H, W)``, of the condition at the output size."""

    needs_estimate = False

    def __init__(self, canny: tuple, pixels_per_token: int):
        self.canny = canny
        self.pixels_per_token = pixels_per_token

    def scores(self, tokens: TokenSet) -> torch.Tensor:
        """``(B, rows, cols)`` scores on the coarsest grid of ``tokens``, every latent frame of a clip
        reading the condition's."""
        scores = token_scores(self.canny, self.pixels_per_token * tokens.coarsest)
        rows, cols = scores.shape[-2:]
        frames = tokens.frame[0] // rows
        if frames * rows != tokens.frame[0] or cols != tokens.frame[1]:
            raise ValueError(f"the condition's {rows}x{cols} coarse tokens do not tile a token grid of "
                             f"{tokens.frame[0]}x{tokens.frame[1]}")
        return scores.repeat(1, frames, 1).expand(tokens.batch, -1, -1)

    def __call__(self, estimate, tokens, fraction, generator=None):
        return select_top(tokens, self.scores(tokens), fraction)


def selection_policy(select, pixels_per_token: int, edge_thresholds=(0.1, 0.2)) -> Callable:
    """The policy named by ``select`` (one of :data:`SELECTIONS` or :data:`CONDITION_SELECTIONS`),
    or ``select`` itself if callable."""
    if callable(select):
        return select
    if select == "condition":
        return ConditionSelection(pixels_per_token, edge_thresholds)
    if select == "edges":
        return EdgeSelection(pixels_per_token, edge_thresholds)
    if select == "authors":
        return AuthorsSelection(pixels_per_token)
    if select == "random":
        return RandomSelection()
    raise ValueError(f"select must be one of {', '.join(SELECTIONS + CONDITION_SELECTIONS)} or a callable "
                     f"(estimate, tokens, fraction, generator) -> mask, got {select!r}")


def check_edge_thresholds(thresholds) -> tuple:
    """Kornia Canny thresholds: two numbers with ``0 < low < high < 1``."""
    try:
        low, high = (float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"edge_thresholds must be two numbers (low, high), got {thresholds!r}") from None
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"edge_thresholds must satisfy 0 < low < high < 1, got ({low:g}, {high:g})")
    return low, high


def check_mask(mask, tokens: TokenSet, fraction: float) -> torch.Tensor:
    """A policy's answer must mark exactly the count rule's number of coarsest tokens per image."""
    coarse = tokens.is_coarse()
    n, want = _counts(coarse, fraction)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(coarse.shape):
        got = f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {tuple(getattr(mask, 'shape', ()))}"
        raise ValueError(f"a selection policy must return a bool tensor of shape {tuple(coarse.shape)}, got {got}")
    if bool((mask & ~coarse).any()):
        raise ValueError("a selection policy may only mark tokens at the coarsest resolution present")
    counts = mask.sum(dim=1)
    if bool((counts != want).any()):
        raise ValueError(f"a selection policy must mark {want} tokens per image (fraction {fraction:g} of "
                         f"{n} coarse tokens, rounded to nearest), got {counts.tolist()}")
    return mask
