"""Per-image rotary position embeddings through the stock attention processors, so that a
batch whose images hold different token sets (the mixed stage) runs in one transformer call.

diffusers' rotary transformers (FLUX.1, Chroma, FLUX.2, Qwen-Image) compute one rotary table
from one set of position ids and apply it to every image of the batch: the attention
processors index the shared ``(S, D)`` table as ``cos[None, :, None, :]`` (diffusers'
``apply_rotary_emb`` with ``sequence_dim=1``) or ``freqs.unsqueeze(1)`` (Qwen-Image's complex
form) to broadcast it over batch and heads. :class:`PerImage` holds a ``(B, S, D)`` table and
answers those two expressions with ``table[:, :, None, :]``, which broadcasts per image; the
rest of the stock processor (projections, norms, the attention kernel, output projections)
runs unchanged, batched.

:class:`PerImageRotaryProcessor` wraps a module's stock processor: without the keyword
``ralu_rotary`` it calls the stock processor with exactly what it got; with it, it passes
``ralu_rotary`` (the backend's replacement for ``image_rotary_emb``, built once per stage) in
that argument's place. The backend passes ``ralu_rotary`` in the transformer's
``joint_attention_kwargs``, which every one of these transformers forwards to its attention
modules. :func:`install` wraps the processor classes a backend names and checks, once per
transformer, that the stock rotary function really broadcasts a :class:`PerImage` table per
image (a future diffusers that indexes tables differently is caught there, and the backend
falls back to one call per image rather than computing something else).
"""

from __future__ import annotations

import functools
import inspect

import torch

#: The index expression diffusers' ``apply_rotary_emb(..., sequence_dim=1)`` applies to a table.
_SEQUENCE_DIM_1 = (None, slice(None), None, slice(None))


class PerImage:
    """A ``(B, S, D)`` rotary table (real, or complex for Qwen-Image) standing in for a shared
    ``(S, D)`` one inside diffusers' rotary functions (see the module docstring)."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def _broadcast(self) -> torch.Tensor:
        return self.table[:, :, None, :]          # (B, S, 1, D): one table per image, shared by the heads

    def __getitem__(self, index):
        if index == _SEQUENCE_DIM_1:
            return self._broadcast()
        raise TypeError(f"a per-image rotary table supports the index {_SEQUENCE_DIM_1} only, got {index}")

    def unsqueeze(self, dim: int) -> torch.Tensor:
        if dim == 1:
            return self._broadcast()
        raise TypeError(f"a per-image rotary table supports unsqueeze(1) only, got unsqueeze({dim})")


def _on_stock(name: str) -> property:
    """An attribute of the wrapper that reads and writes the stock processor's ``name``."""
    return property(lambda self: getattr(self.stock, name), lambda self, value: setattr(self.stock, name, value))


class PerImageRotaryProcessor:
    """A stock attention processor that also accepts ``ralu_rotary`` (the module docstring)."""

    def __init__(self, stock):
        self.stock = stock
        self._rotary_index = _argument_index(type(stock), "image_rotary_emb")

    # diffusers sets these on processors (attention backend, context parallelism): keep them on the stock one
    _attention_backend = _on_stock("_attention_backend")
    _parallel_config = _on_stock("_parallel_config")

    def __call__(self, attn, *args, ralu_rotary=None, **kwargs):
        if ralu_rotary is not None:
            if "image_rotary_emb" in kwargs or len(args) <= self._rotary_index:
                kwargs["image_rotary_emb"] = ralu_rotary
            else:
                args = args[:self._rotary_index] + (ralu_rotary,) + args[self._rotary_index + 1:]
        return self.stock(attn, *args, **kwargs)


def _argument_index(cls, name: str) -> int:
    """Position of argument ``name`` among a processor's ``__call__`` arguments after ``attn``."""
    params = list(inspect.signature(cls.__call__).parameters)[2:]      # after self and attn
    if name not in params:
        raise ValueError(f"{cls.__name__} takes no {name}")
    return params.index(name)


@functools.lru_cache(maxsize=None)
def _wrapper_class(stock_class: type) -> type:
    """A :class:`PerImageRotaryProcessor` whose ``__call__`` signature is the stock processor's
    plus ``ralu_rotary``: diffusers' attention modules pass a processor only the keyword
    arguments its signature names."""
    sig = inspect.signature(stock_class.__call__)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = inspect.Parameter("ralu_rotary", inspect.Parameter.KEYWORD_ONLY, default=None)
    var_kw = [p for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    call = functools.wraps(PerImageRotaryProcessor.__call__, assigned=("__doc__",))(
        lambda self, *args, **kwargs: PerImageRotaryProcessor.__call__(self, *args, **kwargs))
    call.__signature__ = sig.replace(parameters=params + [extra] + var_kw)
    return type(f"PerImage{stock_class.__name__}", (PerImageRotaryProcessor,), {"__call__": call})


def install(transformer, stock_classes: tuple, probe) -> bool:
    """Wrap every attention processor of ``transformer`` whose class is one of
    ``stock_classes`` (idempotent). Returns whether the whole transformer now takes per-image
    tables: every processor wrapped, and ``probe()`` (the family's check that its stock rotary
    function broadcasts a :class:`PerImage` table per image) true."""
    if not _probe_passes(probe):
        return False
    ready = True
    for module in transformer.modules():
        proc = getattr(module, "processor", None)
        if proc is None or isinstance(proc, PerImageRotaryProcessor):
            continue
        if type(proc) in stock_classes:
            module.processor = _wrapper_class(type(proc))(proc)
        else:
            ready = False
    return ready


def takes_per_image(probe) -> bool:
    """Whether a family's rotary function broadcasts :class:`PerImage` tables per image (its
    ``probe`` passes; checked once), for a backend that hands the tables to the blocks itself."""
    return _probe_passes(probe)


@functools.lru_cache(maxsize=None)
def _probe_passes(probe) -> bool:
    try:
        return bool(probe())
    except (TypeError, RuntimeError, ValueError, IndexError):
        return False


def probe_real(apply) -> bool:
    """Whether ``apply(x, (cos, sin))`` (a real-valued rotary function with the table
    indexed as ``[None, :, None, :]``) rotates each image of ``x`` by its own
    :class:`PerImage` table."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 4, generator=g)
    cos, sin = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    batched = apply(x, (PerImage(cos), PerImage(sin)))
    single = torch.cat([apply(x[b:b + 1], (cos[b], sin[b])) for b in range(2)])
    return torch.allclose(batched, single)


def probe_complex(apply) -> bool:
    """Whether ``apply(x, freqs)`` (Qwen-Image's complex rotary function, the table
    unsqueezed at 1) rotates each image of ``x`` by its own :class:`PerImage` table."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 4, generator=g)
    freqs = torch.polar(torch.ones(2, 3, 2), torch.randn(2, 3, 2, generator=g))
    batched = apply(x, PerImage(freqs))
    single = torch.cat([apply(x[b:b + 1], freqs[b]) for b in range(2)])
    return torch.allclose(batched, single)
