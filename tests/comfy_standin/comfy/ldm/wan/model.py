"""Stand-in for ComfyUI's Wan model (``comfy.ldm.wan.model.WanModel``).

The contract: ``forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options)``
with a clip ``(B, C, T, H, W)``; the model patches it by ``(1, 2, 2)`` into tokens frame by
frame, row by row, builds ids ``(frame, row, col)`` from the clip's shape, evaluates its
embedder ``rope_embedder`` on them and returns the velocity as a clip of ``out_dim``
channels. ``patch_size``, ``patch_embedding`` (its input channels: the latent's and a
concatenated condition's) and ``out_dim`` are what the nodes read. Here a diffusers
``WanTransformer3DModel`` does the arithmetic (``ralu_torch.backends.wan.forward_tokens``) with
its rotary formula evaluated at the ids the embedder handed on (``rope_tables``).
"""

import torch

from ralu_torch.backends.wan import forward_tokens, rope_tables
from ralu_torch.tokens import pack, unpack

from ..standin import HandOnIds, image_ids


class WanModel(torch.nn.Module):
    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        self.patch_size = (1, 2, 2)
        self.patch_embedding = transformer.patch_embedding
        self.out_dim = transformer.config.out_channels
        self.rope_embedder = HandOnIds()
        self.calls, self.inputs = [], []

    def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={}, **kwargs):
        B, C, T, H, W = x.shape
        ids = image_ids(T * H // 2, W // 2, 1)
        rows = H // 2
        ids = torch.stack([torch.div(ids[..., 1], rows, rounding_mode="floor"), ids[..., 1] % rows, ids[..., 2]], -1)
        pe = self.rope_embedder(ids).expand(B, -1, -1)
        self.calls.append((ids.shape[1], pe.clone()))
        self.inputs.append(x.detach().clone())
        cos, sin = rope_tables(self.transformer.rope, pe[..., 0], pe[..., 1], pe[..., 2])
        out = forward_tokens(self.transformer, pack(x.reshape(B, C, T * H, W)), (cos[:, :, None], sin[:, :, None]),
                             context, timestep)
        return unpack(out, (T * rows, W // 2)).view(B, -1, T, H, W)
