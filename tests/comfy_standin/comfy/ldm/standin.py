"""What the stand-in diffusion models share (not a ComfyUI module): the rotary embedder that
hands on its ids, and FLUX-style calls of a diffusers transformer one image at a time.

ComfyUI's rotary transformers evaluate their embedder (``pe_embedder``, ``rope_embedder``) on
the position ids their forward built; the nodes may replace that module for a call. Here the
embedder returns the ids themselves and the diffusers transformer behind embeds them, so
whatever ids reach the embedder are the positions the arithmetic uses. ``calls`` on each
model records every call's image token count and ids.
"""

import torch


class HandOnIds(torch.nn.Module):
    """The stand-in's rotary embedder: the ids it is given, unchanged."""

    def forward(self, ids):
        return ids


def image_ids(rows: int, cols: int, batch: int, row0: float = 0.0, col0: float = 0.0) -> torch.Tensor:
    """``(batch, rows * cols, 3)`` ids ``(0, row - row0, col - col0)`` in raster order."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    ids = torch.stack([torch.zeros_like(r), r, c], -1).reshape(1, -1, 3).float()
    return (ids - torch.tensor([0.0, row0, col0])).expand(batch, -1, -1)


def per_image(call, batch: int) -> torch.Tensor:
    """``call(b)`` for each image, concatenated: the diffusers transformers behind take one id
    table per call."""
    return torch.cat([call(b) for b in range(batch)])
