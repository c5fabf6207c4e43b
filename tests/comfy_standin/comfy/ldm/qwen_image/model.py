"""Stand-in for ComfyUI's Qwen-Image transformer (``comfy.ldm.qwen_image.model``).

The contract: ``forward(x, timestep, context, attention_mask, guidance, ref_latents,
transformer_options)`` with a one-frame clip ``(B, C, 1, H, W)``; image ids
``(0, row - rows // 2, col - cols // 2)`` on the token frame, text ids from
``max(rows // 2, cols // 2)`` on, the embedder ``pe_embedder`` evaluated on the text ids
followed by the image ids. Here a diffusers ``QwenImageTransformer2DModel`` does the
arithmetic, one image per call, with its rotary tables evaluated at the ids the embedder
handed on (its own ``rope_params``, put in through ``ralu_torch.backends.rotary``'s processor
wrapper: the stock forward builds tables from a grid shape).
"""

import torch

from ralu_torch.backends import rotary
from ralu_torch.tokens import pack, unpack

from ..standin import HandOnIds, image_ids, per_image


class QwenImageTransformer2DModel(torch.nn.Module):
    def __init__(self, transformer):
        super().__init__()
        from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

        self.transformer = transformer
        self.pe_embedder = HandOnIds()
        rotary.install(transformer, (QwenDoubleStreamAttnProcessor2_0,), _one_image)
        self.calls = []

    def table(self, ids):
        rope = self.transformer.pos_embed
        return torch.cat([rope.rope_params(ids[:, k], dim, rope.theta) for k, dim in enumerate(rope.axes_dim)], -1)

    def forward(self, x, timestep, context, attention_mask=None, guidance=None, ref_latents=None,
                transformer_options={}, **kwargs):
        B, C, _, H, W = x.shape
        rows, cols = H // 2, W // 2
        img = pack(x[:, :, 0])
        start = max(rows // 2, cols // 2)
        txt = torch.arange(start, start + context.shape[1]).view(1, -1, 1).expand(B, -1, 3).float()
        pe = self.pe_embedder(torch.cat([txt, image_ids(rows, cols, B, rows // 2, cols // 2)], dim=1))
        T = context.shape[1]
        self.calls.append((img.shape[1], pe[:, T:].clone()))
        out = per_image(lambda b: self.transformer(
            hidden_states=img[b:b + 1], encoder_hidden_states=context[b:b + 1], timestep=timestep[b:b + 1],
            img_shapes=[[(1, 1, img.shape[1])]], return_dict=False,
            attention_kwargs={"ralu_rotary": (self.table(pe[b, T:]), self.table(pe[b, :T]))})[0], B)
        return unpack(out, (rows, cols))[:, :, None]


def _one_image() -> bool:
    """The processor wrapper's check of per-image tables: one image per call needs none."""
    return True
