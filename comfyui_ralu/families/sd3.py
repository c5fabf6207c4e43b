"""SD3 and SD3.5: ``comfy.model_base.SD3`` running ComfyUI's MMDiT.

Positions: MMDiT adds a 2-D sin-cos table to the patch embeddings, cropped from the centre of
its ``pos_embed_max_size`` table by ``cropped_pos_embed(hw)`` inside its forward. In a mixed
stage that method is object-patched for the call to answer with the table evaluated at each
token's table coordinates (``ralu_torch.backends.sd3``: ``table_coordinates``, the centred-crop
rule the stock crop applies, and ``sincos_table_embedding``, the table's formula at fractional
coordinates). The formula's scale is read from the model's own table (its first column step)
and the whole table is checked against the formula once, so a model whose table is something
else is refused rather than given positions of another kind.
"""

from __future__ import annotations

import math

import torch

from .base import Family, NodeError, repeat_batch, substituted

#: How close the model's stored table must be to the sin-cos formula (float32 rounding of a float64 formula).
TABLE_TOLERANCE = 1e-5


def table_scale(table: torch.Tensor, size: int, dim: int) -> float:
    """``base_size`` of the sin-cos table ``(1, size * size, dim)``: entry ``(0, 1)`` holds
    ``sin(base / size)`` and ``cos(base / size)`` at the first frequency of its column half."""
    entry = table[0, 1].double()
    return math.atan2(float(entry[0]), float(entry[dim // 4])) * size


class SD3Family(Family):
    name = "sd3"
    display = "SD3/SD3.5"
    model_classes = ("SD3",)

    def check(self, base, net, node: str) -> None:
        from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

        if not isinstance(net, MMDiT):
            raise NodeError(node, f"the MODEL is SD3 running {type(net).__name__}, not ComfyUI's MMDiT; the RALU nodes "
                                  "run SD3/SD3.5 through ComfyUI's own model only")
        self.table(net, node)

    def table(self, net, node: str) -> tuple:
        """``(size, dim, base_size)`` of the model's position table, checked against the formula
        at a spread of its entries (corners, centre, first steps)."""
        from ralu_torch.backends.sd3 import sincos_table_embedding

        table, size = getattr(net, "pos_embed", None), getattr(net, "pos_embed_max_size", None)
        if table is None or size is None or table.dim() != 3 or table.shape[1] != size * size:
            raise NodeError(node, "this SD3 model has no cropped sin-cos position table (pos_embed with "
                                  "pos_embed_max_size), which RALU's mixed-resolution stage evaluates per token")
        dim = table.shape[-1]
        base = table_scale(table, size, dim)
        at = torch.tensor(sorted({0, 1, size // 3, size // 2, size - 1}))
        rows, cols = (a.reshape(-1) for a in torch.meshgrid(at, at, indexing="ij"))
        stored = table[0, rows * size + cols].detach().float().cpu()
        if not math.isclose(base, round(base), abs_tol=1e-3) or (sincos_table_embedding(
                rows.float(), cols.float(), dim, size, round(base)) - stored).abs().max() > TABLE_TOLERANCE:
            raise NodeError(node, "this SD3 model's position table is not SD3's sin-cos grid, so RALU cannot evaluate "
                                  "it between its entries for a mixed-resolution stage")
        return size, dim, round(base)

    def positions(self, net, tokens, frames: int, node: str) -> torch.Tensor:
        from ralu_torch.backends.sd3 import sincos_table_embedding, table_coordinates

        size, dim, base = self.table(net, node)
        try:
            rows, cols = table_coordinates(tokens, size)
        except ValueError as err:
            raise NodeError(node, str(err)) from None
        return sincos_table_embedding(rows, cols, dim, size, base)          # (B, L, dim)

    def substitute(self, net, positions, n: int, node: str):
        pos = repeat_batch(positions, n, positions.shape[0], node, "SD3's position table is per image")

        def cropped_pos_embed(hw, device=None):
            return pos.to(device if device is not None else pos.device)

        return substituted(net, "cropped_pos_embed", cropped_pos_embed)


FAMILY = SD3Family()
