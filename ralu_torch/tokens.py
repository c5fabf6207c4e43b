"""Token and position bookkeeping for mixed-resolution token sets.

This module owns every conversion between tokens, positions, raster order and latents;
backends, the sampler and the analysis code call it and keep no bookkeeping of their own.

Tokens are patch tokens of 2x2 latent pixels (FLUX packs them; SD3 patchifies the same
way): ``features = channels * 2 * 2``, ordered ``(channel, dy, dx)`` as diffusers packs.
A model whose token is one latent pixel (``patch`` 1: HunyuanVideo 1.5, Qwen-Image 2.1) has
``features = channels``; the latent helpers here still see its tokens as 2x2 patches (of a
latent with a quarter of the channels), so where they pool or upsample inside a token the
``patch``-aware functions (:func:`upsample_mode`, :func:`paint_full`, :func:`pooled_latent`)
treat its features as channels of one pixel instead.

Every token covers a square of ``size x size`` cells of the full-resolution token grid,
whose top-left cell is ``cells[b, i] = (row, col)``. Blocks at the coarsest level present
have ``size = D`` (the layout's downsampling); upsampling by ``f`` gives ``f^2`` children of
``size = D / f``.

The coordinate rule, shared by every backend: a token's position is its top-left cell
divided by the coarsest size present, ``positions = cells / D``. So a low-resolution stage
sees the regular integer grid of a smaller image, upsampled children sit at their parent's
position plus ``a/f`` steps (half-steps for ``f = 2``), and once everything is at full
resolution (``D = 1``) every token has the integer position of the raster grid, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from .options import UPSAMPLE_MODES


def check_mode(mode: str) -> str:
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}")
    return mode


def pack(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` latents -> ``(B, H/2 * W/2, C*4)`` tokens in raster order."""
    B, C, H, W = latents.shape
    x = latents.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // 2) * (W // 2), C * 4)


#: How a pipeline draws its first noise for tokens on a ``rows x cols`` grid with ``F``
#: features: ``"latent"`` draws the latent ``(B, F/4, 2 rows, 2 cols)`` and packs it (FLUX.1,
#: SD3, Chroma, Qwen-Image, Z-Image); ``"patches"`` draws the patchified latent
#: ``(B, F, rows, cols)`` and flattens it (FLUX.2). Same feature order either way.
NOISE_LAYOUTS = ("latent", "patches")


def noise_shape(layout: str, batch: int, features: int, rows: int, cols: int) -> tuple:
    """The shape a pipeline draws its first noise in (see :data:`NOISE_LAYOUTS`)."""
    if layout == "latent":
        return (batch, features // 4, 2 * rows, 2 * cols)
    if layout == "patches":
        return (batch, features, rows, cols)
    raise ValueError(f"noise layout must be one of {', '.join(NOISE_LAYOUTS)}, got {layout!r}")


def noise_tokens(layout: str, z: torch.Tensor) -> torch.Tensor:
    """Raster-order tokens ``(B, L, F)`` of noise drawn in ``noise_shape(layout, ...)``."""
    return pack(z) if layout == "latent" else z.flatten(2).transpose(1, 2)


def unpack(tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
    """Inverse of :func:`pack` for raster-ordered tokens on a ``grid = (rows, cols)``."""
    B, L, F = tokens.shape
    h, w = grid
    x = tokens.view(B, h, w, F // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, F // 4, 2 * h, 2 * w)


def upsample_mode(mode: str, patch: int = 2) -> str:
    """The upsampling a model with ``patch x patch`` latent pixels per token gets for ``mode``: for
    ``patch`` 1 nearest upsampling of the latent ("latent") copies the whole token into each
    child, which is what "token" does, so both name the same thing there."""
    check_mode(mode)
    return "token" if patch == 1 else mode


def child_source(factor: int, features: int, mode: str, device=None) -> torch.Tensor:
    """Which parent feature each child feature copies: ``(factor^2, features)`` indices.

    ``mode="token"`` (the authors' code) repeats the whole packed token in every child.
    ``mode="latent"`` (the paper) is nearest upsampling of the latent grid: the parent's
    2x2 latent patch becomes ``2f x 2f`` pixels and is cut into ``f^2`` child tokens.
    Either way every parent value is copied into exactly ``factor^2`` places.
    """
    check_mode(mode)
    C = features // 4
    f = factor
    idx = torch.arange(features, device=device).view(C, 2, 2)
    if mode == "token":
        return idx.reshape(1, features).expand(f * f, features).contiguous()
    a = torch.arange(f, device=device)
    y = torch.arange(2, device=device)
    src_y = (2 * a[:, None] + y[None, :]) // f          # (f, 2): parent pixel row for child row a
    rows = src_y[:, None, :, None].expand(f, f, 2, 2)   # (a, b, y, x)
    cols = src_y[None, :, None, :].expand(f, f, 2, 2)
    out = idx[:, rows, cols]                            # (C, a, b, y, x)
    return out.permute(1, 2, 0, 3, 4).reshape(f * f, features).contiguous()


@dataclass(frozen=True)
class TokenSet:
    """Cells and sizes of a batch of token sets with equal lengths (see module docstring)."""

    cells: torch.Tensor   # (B, L, 2) long: top-left full-resolution cell
    size: torch.Tensor    # (B, L) long: side length in full-resolution cells
    grid: tuple           # full-resolution token grid (rows, cols)

    @classmethod
    def regular(cls, batch: int, grid: tuple, size: int, device=None) -> "TokenSet":
        """All tokens at one size, in raster order."""
        h, w = grid[0] // size, grid[1] // size
        r, c = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        cells = torch.stack([r.reshape(-1), c.reshape(-1)], dim=-1) * size
        cells = cells.unsqueeze(0).expand(batch, -1, -1).contiguous()
        return cls(cells=cells, size=torch.full(cells.shape[:2], size, dtype=torch.long, device=device), grid=grid)

    @property
    def batch(self) -> int:
        return self.cells.shape[0]

    @property
    def length(self) -> int:
        return self.cells.shape[1]

    @cached_property
    def coarsest(self) -> int:
        """Side of the largest tokens (read once per token set: a host read)."""
        return int(self.size.max())

    @cached_property
    def uniform(self) -> bool:
        """Whether every token of every image has the same size (read once per token set)."""
        return bool((self.size == self.coarsest).all())

    @property
    def frame(self) -> tuple:
        """The grid the positions live on: ``(rows, cols)`` of coarsest-size tokens."""
        D = self.coarsest
        return self.grid[0] // D, self.grid[1] // D

    def positions(self) -> torch.Tensor:
        """Float ``(B, L, 2)`` positions ``(row, col) = cells / coarsest`` (the coordinate rule)."""
        return self.cells.to(torch.float32) / self.coarsest   # exact: integers and multiples of 1/f

    def is_coarse(self) -> torch.Tensor:
        return self.size == self.coarsest

    def upsample(self, select: torch.Tensor, factor: int):
        """Replace the tokens where ``select`` (B, L) is true by ``factor^2`` children each.

        Every image must select the same number of tokens. Returns the new set, sorted by
        top-left cell (raster order once all tokens share a size), and for each new token
        its parent's index in the old set and its child slot (-1 for tokens kept).
        """
        B, L = select.shape
        n_sel = select.sum(dim=1)
        if not bool((n_sel == n_sel[0]).all()):
            raise ValueError("every image must upsample the same number of tokens")
        f2 = factor * factor
        keep_idx = (~select).nonzero()[:, 1].view(B, -1)
        sel_idx = select.nonzero()[:, 1].view(B, -1)
        S = self.size.gather(1, sel_idx)
        if bool((S % factor != 0).any()):
            raise ValueError(f"cannot upsample tokens of size {int(S.min())} by factor {factor}")
        child = S // factor
        slot = torch.arange(f2, device=select.device)
        dy, dx = slot // factor, slot % factor
        base = self.cells.gather(1, sel_idx[..., None].expand(-1, -1, 2))          # (B, k, 2)
        ccells = base[:, :, None, :] + torch.stack([dy, dx], -1)[None, None] * child[..., None, None]
        parent = torch.cat([keep_idx, sel_idx.repeat_interleave(f2, dim=1)], dim=1)
        slots = torch.cat([torch.full_like(keep_idx, -1), slot.repeat(B, sel_idx.shape[1])], dim=1)
        cells = torch.cat([self.cells.gather(1, keep_idx[..., None].expand(-1, -1, 2)),
                           ccells.reshape(B, -1, 2)], dim=1)
        size = torch.cat([self.size.gather(1, keep_idx), child.repeat_interleave(f2, dim=1)], dim=1)
        order = torch.argsort(cells[..., 0] * self.grid[1] + cells[..., 1], dim=1, stable=True)
        take = lambda t: t.gather(1, order) if t.dim() == 2 else t.gather(1, order[..., None].expand_as(t))  # noqa: E731
        return TokenSet(cells=take(cells), size=take(size), grid=self.grid), take(parent), take(slots)


#: Rows per block in :func:`upsample_values` and :func:`pool_children`: temporaries stay a
#: block's size (a few MiB) instead of several copies of the data.
BLOCK_ROWS = 1 << 15


def upsample_values(x: torch.Tensor, parent: torch.Tensor, slot: torch.Tensor, source: torch.Tensor):
    """``U(x)``: kept tokens copied, children filled from their parent by ``source``.

    Each new token reads its parent's row, features permuted by ``source[slot]`` (identity
    for kept tokens), block by block: beyond the result, temporaries are a block's size.
    """
    B, P, F = x.shape
    L = parent.shape[1]
    table = torch.cat([torch.arange(F, device=x.device)[None], source])          # row 0: kept tokens
    rows = (parent + torch.arange(B, device=x.device)[:, None] * P).reshape(-1)
    variant = (slot + 1).reshape(-1)
    flat = x.reshape(B * P, F)
    out = torch.empty(B * L, F, dtype=x.dtype, device=x.device)
    for i in range(0, B * L, BLOCK_ROWS):
        out[i:i + BLOCK_ROWS] = flat.index_select(0, rows[i:i + BLOCK_ROWS]).gather(1, table[variant[i:i + BLOCK_ROWS]])
    return out.view(B, L, F)


def pool_children(y: torch.Tensor, parent: torch.Tensor, slot: torch.Tensor, source: torch.Tensor,
                  n_parents: int) -> torch.Tensor:
    """``U^T(y)`` restricted to children: each parent value gets the sum of its copies.

    The transpose of :func:`upsample_values`: child ``(parent, slot)``'s feature ``j`` adds
    into the parent's feature ``source[slot, j]``; kept tokens add nothing. Slots are added
    in order (0, 1, ...), block by block, so temporaries are a block's size and the sums are
    the same on every run."""
    B, L, F = y.shape
    out = torch.zeros(B * n_parents * F, dtype=y.dtype, device=y.device)
    base = (parent + torch.arange(B, device=y.device)[:, None] * n_parents).reshape(-1) * F
    flat = y.reshape(B * L, F)
    slots = slot.reshape(-1)
    for s in range(source.shape[0]):
        rows = (slots == s).nonzero().squeeze(1)
        for i in range(0, rows.numel(), BLOCK_ROWS):
            r = rows[i:i + BLOCK_ROWS]
            out.index_add_(0, (base[r][:, None] + source[s][None, :]).reshape(-1), flat.index_select(0, r).reshape(-1))
    return out.view(B, n_parents, F)


def raster_index(tokens: TokenSet, size: int) -> torch.Tensor:
    """``(B, L)`` raster index of each token on the grid of size-``size`` tokens (its top-left
    cell over ``size``); meaningful for the tokens of that size."""
    return (tokens.cells[..., 0] // size) * (tokens.grid[1] // size) + tokens.cells[..., 1] // size


def raster_latent(x: torch.Tensor, tokens: TokenSet, size: int) -> torch.Tensor:
    """The latent ``(B, C, 2 rows/size, 2 cols/size)`` of a token set whose tokens all have
    side ``size``, in any order (the inverse of :func:`tokens_from_latent`)."""
    idx = raster_index(tokens, size)
    raster = torch.empty_like(x).scatter_(1, idx[..., None].expand_as(x), x)
    return unpack(raster, (tokens.grid[0] // size, tokens.grid[1] // size))


def tokens_from_latent(latent: torch.Tensor, tokens: TokenSet, size: int) -> torch.Tensor:
    """``(B, L, F)`` values of the tokens of side ``size`` read from a latent at resolution
    ``1/size`` (rows of other tokens hold whatever lies at their index there)."""
    packed = pack(latent)
    idx = raster_index(tokens, size)
    return packed.gather(1, idx[..., None].expand(-1, -1, packed.shape[-1]))


def latent_tokens(latent: torch.Tensor, tokens: TokenSet, sizes: list | None = None) -> torch.Tensor:
    """A full-resolution latent ``(B, C, 2 rows, 2 cols)`` read on a token set: each token gets
    the ``2 x 2`` patch of the latent average-pooled by its own size (the cells it covers), so
    a uniform set of size ``D`` reads the latent at resolution ``1/D`` and a mixed set reads each
    token at its own. The left inverse of :func:`to_latent` (pooling what nearest painting
    spread). This is the one rule by which anything given at full resolution (a condition's
    latents, an image to start from, a velocity) follows a stage's token layout; ``sizes``: the
    token sizes present, if the caller already has them (else read once from the set)."""
    sizes = torch.unique(tokens.size).tolist() if sizes is None else sizes
    if len(sizes) == 1:
        return tokens_from_latent(F.avg_pool2d(latent, sizes[0]) if sizes[0] > 1 else latent, tokens, sizes[0])
    out = None
    for S in sizes:
        vals = tokens_from_latent(F.avg_pool2d(latent, S) if S > 1 else latent, tokens, S)
        out = vals if out is None else torch.where((tokens.size == S)[..., None], vals, out)
    return out


def to_latent(x: torch.Tensor, tokens: TokenSet, index: torch.Tensor | None = None) -> torch.Tensor:
    """Paint a token set onto the full-resolution latent grid ``(B, C, 2*rows, 2*cols)``:
    each token's 2x2 patch is nearest-upsampled by its size over the cells it covers.
    ``index`` (:func:`latent_index`, built once per token set) makes this one gather."""
    B, L, F = x.shape
    if index is None:
        index = latent_index(tokens, F)
    gh, gw = tokens.grid
    return x.reshape(B, -1).gather(1, index).view(B, F // 4, 2 * gh, 2 * gw)


def _as_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Tokens of ``patch`` 1 as 2x2 patches of one value per channel (``patch`` 2: as they are)."""
    return x.repeat_interleave(4, dim=-1) if patch == 1 else x


def paint_full(x: torch.Tensor, tokens: TokenSet, patch: int = 2) -> torch.Tensor:
    """Raster-order full-resolution tokens ``(B, rows * cols, F)`` of a token set: every token
    nearest-upsampled over the cells it covers (:func:`to_latent`, packed); a ``patch`` 1 token
    is copied whole into each of its cells."""
    full = pack(to_latent(_as_patches(x, patch), tokens))
    return full[..., ::4] if patch == 1 else full


def pooled_latent(x: torch.Tensor, tokens: TokenSet, size: int, patch: int = 2) -> torch.Tensor:
    """The latent ``(B, F / 4, 2 rows / size, 2 cols / size)`` of any token set at resolution
    ``1 / size``: painted at full resolution and average-pooled over ``size x size`` cells (for
    ``patch`` 1, channel by channel over the cells, then in the 2x2 form :func:`unpack` gives)."""
    if patch != 1:
        return F.avg_pool2d(to_latent(x, tokens), size)
    grid = tokens.grid[0] // size, tokens.grid[1] // size
    pooled = F.avg_pool2d(to_latent(_as_patches(x, 1), tokens), 2 * size)          # (B, F, rows/size, cols/size)
    return unpack(pooled.flatten(2).transpose(1, 2), grid)


def latent_index(tokens: TokenSet, features: int) -> torch.Tensor:
    """For each value of the full-resolution latent ``(B, C, 2 rows, 2 cols)``, flattened, the
    index of the token value ``(B, L * features)`` that :func:`to_latent` copies there."""
    B, F = tokens.batch, features
    gh, gw = tokens.grid
    dev = tokens.cells.device
    owner = torch.empty(B, gh, gw, dtype=torch.long, device=dev)
    for s in torch.unique(tokens.size).tolist():
        idx = (tokens.size == s).nonzero()                                # (k, 2): image, token
        off = torch.arange(s, device=dev)
        grid = lambda v: v.view(-1, 1, 1).expand(-1, s, s)                # noqa: E731
        rows = grid(tokens.cells[idx[:, 0], idx[:, 1], 0]) + off.view(1, s, 1)
        cols = grid(tokens.cells[idx[:, 0], idx[:, 1], 1]) + off.view(1, 1, s)
        owner[grid(idx[:, 0]), rows, cols] = grid(idx[:, 1])
    Y = torch.arange(2 * gh, device=dev)
    X = torch.arange(2 * gw, device=dev)
    t = owner[:, Y[:, None] // 2, X[None, :] // 2]                     # (B, 2gh, 2gw) token index
    S = tokens.size.gather(1, t.view(B, -1)).view_as(t)
    r0 = tokens.cells[..., 0].gather(1, t.view(B, -1)).view_as(t)
    c0 = tokens.cells[..., 1].gather(1, t.view(B, -1)).view_as(t)
    py = (Y[None, :, None] - 2 * r0) // S
    px = (X[None, None, :] - 2 * c0) // S
    C = F // 4
    ch = torch.arange(C, device=dev)
    feat = ch[None, :, None, None] * 4 + (py * 2 + px)[:, None]        # (B, C, 2gh, 2gw)
    return (t[:, None] * F + feat).view(B, -1)
