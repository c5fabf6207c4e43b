"""Reference images as tokens in the transformer's sequence: FLUX.1 Kontext
(``FluxKontextPipeline``), Qwen-Image-Edit (``QwenImageEditPipeline``,
``QwenImageEditPlusPipeline``) and FLUX.2 with ``image=`` (``Flux2Pipeline``,
``Flux2KleinPipeline``).

Each of these pipelines VAE-encodes its reference images once, packs them into tokens like
the generated image's, and appends them to the image tokens of every transformer call, with
positions of their own (Kontext: ids ``(1, row, col)``; FLUX.2: ids ``(10 + 10 i, row, col,
0)`` for reference ``i``; Qwen-Image-Edit: one more entry of ``img_shapes`` per reference,
frame index ``i + 1``, centred on the reference's own frame); only the generated tokens'
output is kept. The generated tokens go through RALU's stages as they do without references;
the references follow one of two rules (:data:`REFERENCE_MODES`, ``RALU(pipe,
references=...)``):

- ``"full"`` (default): every stage sees the references exactly as the stock pipeline gives
  them, at full resolution with the stock positions. The conditioning is exact; a
  low-resolution stage saves on the generated tokens only.
- ``"stage"``: each stage sees each reference at the stage's resolution: read from its
  full-resolution latent by :func:`ralu_torch.tokens.latent_tokens` on a uniform token set of
  the stage's coarsest size ``D`` (each token the average of the ``D x D`` cells it covers:
  the same rule the generated image's coarse stages stand for), with positions by the
  coordinate rule: the stock position of each block's top-left token divided by ``D``. At
  ``1/D`` the reference is the stock reference of an image ``D`` times smaller, on the same
  frame as the generated image's coarse grid, as a smaller edit pair would be. A mixed stage
  reads it at its coarsest size (the frame its positions live on); the last stage (``D = 1``)
  is the stock conditioning. A reference whose token grid ``D`` does not divide is refused.

Everything here is shared by the three families; each family states only how its ids are
joined (:meth:`ReferenceBackend.join_ids`) and where the references' positions enter its
per-image rotary tables.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import torch

from ..tokens import TokenSet, latent_tokens, unpack
from .base import Guided, RotaryPositions

#: How a RALU stage sees the reference images (module docstring).
REFERENCE_MODES = ("full", "stage")


def check_reference_mode(mode) -> str:
    if mode not in REFERENCE_MODES:
        raise ValueError(f"references must be one of {', '.join(REFERENCE_MODES)} (reference images at full "
                         f"resolution in every stage, or at each stage's resolution), got {mode!r}")
    return mode


def coarse_ids(ids: torch.Tensor, grid: tuple, size: int, axes: tuple = (1, 2)) -> torch.Tensor:
    """A reference's ids on the frame of a stage whose tokens have side ``size``: ``ids``
    (``rows * cols``, A) are the stock ids in raster order on the reference's ``grid``; each
    ``size x size`` block keeps the ids of its top-left token, with the spatial ``axes``
    divided by ``size`` (the coordinate rule: position = stock position / D)."""
    if size == 1:
        return ids
    cells = TokenSet.regular(1, grid, size, device=ids.device).cells[0]
    out = ids[cells[:, 0] * grid[1] + cells[:, 1]].clone()
    out[:, list(axes)] = out[:, list(axes)] / size
    return out


@dataclass
class StageReferences:
    """The references as one stage sees them: ``tokens`` ``(B, R, F)`` float32, all references
    in order; ``ids``: per reference, its ids (a tensor) or its frame ``(rows, cols)``
    (Qwen-Image-Edit's ``img_shapes``); ``size``: the token side they were read at."""

    tokens: torch.Tensor
    ids: list
    size: int

    @property
    def count(self) -> int:
        return self.tokens.shape[1]


@dataclass
class References:
    """A call's reference images as the pipeline encoded them: per reference its packed
    full-resolution tokens ``(B, rows * cols, F)`` (float32, raster order), its token ``grid``
    ``(rows, cols)`` and its stock ids (``None`` for a family that places references by shape,
    Qwen-Image-Edit). ``mode``: :data:`REFERENCE_MODES`. ``axes``: the spatial axes of the ids."""

    tokens: list
    grids: list
    ids: list
    mode: str = "full"
    axes: tuple = (1, 2)
    #: reference tokens by generated-token count of each stage prepared (what ``call_tflops`` prices)
    priced: dict = field(default_factory=dict)
    _stages: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        check_reference_mode(self.mode)

    @property
    def full_count(self) -> int:
        return sum(r * c for r, c in self.grids)

    def check_divides(self, size: int, what: str) -> None:
        """In ``"stage"`` mode, refuse references whose token grid a stage of side ``size``
        cannot tile (before any model call: the grids are known from the preprocessed images)."""
        check_grids(self.grids, size, self.mode, what)

    def at(self, tokens: TokenSet) -> StageReferences:
        """The references as the stage of ``tokens`` sees them (cached per token side)."""
        size = 1 if self.mode == "full" else tokens.coarsest
        if size not in self._stages:
            self._stages[size] = self._read(size)
        return self._stages[size]

    def _read(self, size: int) -> StageReferences:
        if size == 1:
            values = self.tokens
            ids = [i if i is not None else g for i, g in zip(self.ids, self.grids)]
        else:
            check_grids(self.grids, size, self.mode, "a reference image")
            values, ids = [], []
            for t, grid, i in zip(self.tokens, self.grids, self.ids):
                coarse = TokenSet.regular(t.shape[0], grid, size, device=t.device)
                values.append(latent_tokens(unpack(t, grid), coarse, sizes=[size]))
                ids.append((grid[0] // size, grid[1] // size) if i is None else coarse_ids(i, grid, size, self.axes))
        return StageReferences(torch.cat(values, dim=1), ids, size)


def check_grids(grids, size: int, mode: str, what: str) -> None:
    if mode != "stage" or size == 1:
        return
    for k, (rows, cols) in enumerate(grids):
        if rows % size or cols % size:
            raise ValueError(f"{what} {k + 1} has {rows}x{cols} tokens, which a stage of 1/{size} resolution cannot "
                             f"tile: with references='stage' each reference is read at every stage's resolution, so "
                             f"its token rows and columns must be multiples of {size}; give references='full', or a "
                             f"reference whose sides are multiples of {size} tokens")


@dataclass
class ReferenceGuided(Guided):
    """A family's guided conditioning plus the call's :class:`References` (None without any)."""

    references: References | None = None


@dataclass
class ReferencePositions(RotaryPositions):
    """A stage's positions (generated and reference ids joined) and its reference tokens."""

    references: StageReferences | None = None


class ReferenceBackend:
    """What the reference pipelines' backends add to a :class:`~.base.RotaryBackend` (put it
    first among the bases): the reference mode, the stage's reference tokens appended to the
    generated ones in every call (and cut from the velocity), their ids joined to the stage's
    ids, and their price. A family writes :meth:`join_ids` and puts
    ``cond.references.at(tokens).ids`` into its per-image rotary tables."""

    reference_mode: str = "full"
    #: the side of the first stage's tokens, set by ``RALU`` before encoding (``set_layout``)
    _first_size: int = 1

    def set_references(self, mode: str) -> None:
        self.reference_mode = check_reference_mode(mode)

    def set_layout(self, layout) -> None:
        self._first_size = layout.downsampling

    def references(self, tokens: list, grids: list, ids: list, axes: tuple = (1, 2)) -> References:
        """The call's :class:`References` in this backend's mode, checked against the layout."""
        refs = References([t.float() for t in tokens], [tuple(g) for g in grids], ids, self.reference_mode, axes)
        refs.check_divides(self._first_size, "reference image")
        return refs

    def join_ids(self, ids, stage: StageReferences):
        """The ids of a call: the generated tokens' then the references'."""
        raise NotImplementedError

    def prepare(self, tokens, cond):
        positions = super().prepare(tokens, cond)
        refs = getattr(cond, "references", None)
        if refs is None:
            return positions
        stage = refs.at(tokens)
        refs.priced[tokens.length] = stage.count
        per_image = None if positions.per_image is None else [self.join_ids(i, stage) for i in positions.per_image]
        ids = None if positions.ids is None else self.join_ids(positions.ids, stage)
        return ReferencePositions(ids, positions.rotary, per_image, references=stage)

    def velocity(self, x, positions, sigma, cond):
        stage = getattr(positions, "references", None)
        if stage is None:
            return super().velocity(x, positions, sigma, cond)
        v = super().velocity(torch.cat([x, stage.tokens], dim=1), positions, sigma, cond)
        return v[:, :x.shape[1]]

    def call_tflops(self, tokens: int, cond) -> float:
        refs = getattr(cond, "references", None)
        extra = 0 if refs is None else refs.priced.get(tokens, refs.full_count)
        return cond.calls * self.cost_spec().forward(tokens + extra, cond.text_tokens).total("paper") / 1e12


def with_references(cond: Guided, refs: References | None, cls=ReferenceGuided):
    """``cond`` (a family's :class:`~.base.Guided`) as ``cls`` carrying ``refs``."""
    fields = {f.name: getattr(cond, f.name) for f in dataclasses.fields(cond)}
    return cls(**fields, references=refs)


def stage_reference_ids(ids: torch.Tensor, tokens: TokenSet, cond) -> torch.Tensor:
    """Per-image ids ``(B, L, A)`` of a stage's generated tokens with the references' ids (the
    same for every image) appended: what a mixed stage's per-image rotary tables are built
    from, so that they cover the references too."""
    refs = getattr(cond, "references", None)
    if refs is None:
        return ids
    extra = torch.cat(refs.at(tokens).ids).to(ids)
    return torch.cat([ids, extra.expand(ids.shape[0], -1, -1)], dim=1)


def reference_batch(images: int, batch: int, pipeline: str) -> None:
    """Kontext and Qwen-Image-Edit repeat a batch of ``images`` images to the ``batch`` of
    outputs (prompts times images per prompt), which must be a multiple of it."""
    if images > batch or batch % images:
        raise ValueError(f"{pipeline} repeats its batch of images to the {batch} outputs (prompts x images per "
                         f"prompt): give one image, or a number of images that divides {batch}; got {images}")


def stock_default(pipe, name: str):
    """The default of the pipeline's own ``__call__`` argument ``name`` (e.g. Kontext's ``max_area``)."""
    return inspect.signature(type(pipe).__call__).parameters[name].default
