"""What every family module states, and the one way a stage's positions reach ComfyUI's model.

A family module knows one of ComfyUI's model families: which ``BaseModel`` and diffusion-model
classes it is, what of them it refuses (with the rule), and how a stage's tokens are placed
for that model. Everything else (the guider calls, the latent forms, the schedule, the
sampler) is shared (:mod:`comfyui_ralu.backend`, ``ralu_torch``, ``ralu_schedule``).

Positions. A stage whose tokens share one size is handed to the model as the latent of its
own grid: ComfyUI's forward builds exactly the positions of the coordinate rule there (a
stock step on a smaller image). A mixed stage is handed over as a strip holding only its
tokens, and for the duration of each of its calls (an ``APPLY_MODEL`` wrapper in the call's
``transformer_options``, :class:`comfyui_ralu.backend.StageCall`) the model's position
function is object-patched, as ComfyUI's ``ModelPatcher.add_object_patch`` patches an
attribute, to answer with the stage's per-token positions: the family's :meth:`Family.substitute`.
Nothing of the model's forward is rewritten; its own embedder computes the embedding.
"""

from __future__ import annotations

import contextlib

import torch


class NodeError(ValueError):
    """Bad input inside a graph: the message names the node and the rule (ComfyUI shows it)."""

    def __init__(self, node: str, rule: str):
        super().__init__(f"{node}: {rule}")
        self.node, self.rule = node, rule


@contextlib.contextmanager
def substituted(obj, name: str, value):
    """``obj.name`` is ``value`` inside the block and what it was after (a child module is put
    back, an attribute the instance did not hold, such as a method, is removed again)."""
    own = name in vars(obj) or name in getattr(obj, "_modules", {})
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if own:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


class IdsInPlace(torch.nn.Module):
    """A model's rotary embedder handed other ids: ``replace(ids)`` (what the forward built)
    gives the ids the embedder evaluates."""

    def __init__(self, embedder, replace):
        super().__init__()
        self.embedder = embedder
        self.replace = replace

    def forward(self, ids):
        return self.embedder(self.replace(ids))


def repeat_batch(t: torch.Tensor, n: int, batch: int, node: str, what: str) -> torch.Tensor:
    """A per-image tensor of ``batch`` images for a call of ``n`` images: ComfyUI batches the
    conditionings it evaluates together (positive and negative under CFG) as whole copies of
    the batch, image ``b`` at ``b``, ``batch + b``, ..."""
    if n % batch:
        raise NodeError(node, f"the model was called with {n} images for a batch of {batch}; {what}")
    return t.repeat(n // batch, *([1] * (t.dim() - 1)))


class Family:
    """One of ComfyUI's model families as the nodes run it (the module docstring)."""

    name = ""                 # ralu_schedule's family name (the presets it takes)
    display = ""              # how messages name it
    model_classes: tuple = ()  # comfy.model_base classes, matched exactly (their subclasses are other models)
    video = False             # latents (B, C, T, H, W): frames stacked along the token rows
    concat = False            # whether a channel-concatenated condition can follow the token layout

    def matches(self, base) -> bool:
        import comfy.model_base

        return type(base) in tuple(getattr(comfy.model_base, n) for n in self.model_classes
                                   if hasattr(comfy.model_base, n))

    def check(self, base, net, node: str) -> None:
        """Refuse what of this family the nodes cannot run (raise :class:`NodeError`)."""

    def positions(self, net, tokens, frames: int, node: str) -> torch.Tensor:
        """The mixed stage's per-image positions in ``net``'s terms, built once per stage."""
        raise NotImplementedError

    def substitute(self, net, positions: torch.Tensor, n: int, node: str):
        """A context in which ``net`` places the strip's tokens at ``positions`` (a call of ``n`` images)."""
        raise NotImplementedError

    def follow(self, c_concat: torch.Tensor, tokens, frames: int, node: str) -> torch.Tensor:
        """A channel-concatenated condition in a stage's latent form (families with ``concat``)."""
        raise NodeError(node, f"{self.display} takes no concatenated image in RALU's stages")

    def image_ids(self, tokens, frames: int) -> torch.Tensor:
        """``(B, L, 3)`` ids ``(frame, row, col)`` of the coordinate rule (docs/backends.md):
        ``cells / D`` within the frame, ``D`` the coarsest token size, frames stacked on the rows."""
        D = tokens.coarsest
        rows = tokens.grid[0] // frames
        r, c = tokens.cells[..., 0], tokens.cells[..., 1]
        frame = torch.div(r, rows, rounding_mode="floor")
        return torch.stack([frame.float(), (r - frame * rows).float() / D, c.float() / D], dim=-1)


def stage_frame(tokens) -> tuple:
    """The ``(rows, cols)`` token grid a stage is handed to the model on: its own grid when its
    tokens share one size (raster order), else a one-row strip of its tokens in their order."""
    return tokens.frame if tokens.uniform else (1, tokens.length)


def stage_latent(values: torch.Tensor, tokens, frames: int, video: bool) -> torch.Tensor:
    """Token values ``(B, L, F)`` of a stage as the latent the model takes: ``(B, F/4, h, w)``,
    or for a video model ``(B, F/4, T, h, w)`` (a uniform stage: its frames unstacked; a strip:
    one frame)."""
    from ralu_torch.tokens import unpack

    frame = stage_frame(tokens)
    latent = unpack(values, frame)
    if not video:
        return latent
    B, C, H, W = latent.shape
    T = frames if tokens.uniform else 1
    return latent.view(B, C, T, H // T, W)


def stage_values(latent: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`stage_latent`: ``(B, L, F)`` token values of a model-form latent."""
    from ralu_torch.tokens import pack

    if latent.dim() == 5:
        B, C, T, H, W = latent.shape
        latent = latent.reshape(B, C, T * H, W)
    return pack(latent.contiguous())
