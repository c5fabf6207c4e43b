"""Stand-in for ComfyUI's MMDiT (SD3, ``comfy.ldm.modules.diffusionmodules.mmdit``).

The contract: ``forward(x, timesteps, context, y, control, transformer_options)`` with a 4-D
latent; the model patchifies it into 2x2 tokens and adds ``cropped_pos_embed(hw, device)``,
its ``pos_embed`` table ``(1, P * P, D)`` (``P = pos_embed_max_size``) cropped to the patched
``hw`` around the table's centre (top ``(P - h) // 2``, left ``(P - w) // 2``). Here a diffusers
``SD3Transformer2DModel`` does the arithmetic on those tokens and that table
(``ralu_torch.backends.sd3.forward_tokens``). ``calls`` records each call's token count and table.
"""

import torch

from ralu_torch.backends.sd3 import forward_tokens
from ralu_torch.tokens import pack, unpack


class MMDiT(torch.nn.Module):
    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        self.register_buffer("pos_embed", transformer.pos_embed.pos_embed.clone())
        self.pos_embed_max_size = transformer.config.pos_embed_max_size
        self.calls = []

    def cropped_pos_embed(self, hw, device=None):
        P = self.pos_embed_max_size
        h, w = hw[0] // 2, hw[1] // 2
        top, left = (P - h) // 2, (P - w) // 2
        return self.pos_embed.view(P, P, -1)[top:top + h, left:left + w].reshape(1, h * w, -1)

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        B, C, H, W = x.shape
        pos = self.cropped_pos_embed(x.shape[-2:], device=x.device)
        self.calls.append((H * W // 4, pos.clone()))
        out = forward_tokens(self.transformer, pack(x), pos, context, y, timesteps)
        return unpack(out, (H // 2, W // 2))


class OpenAISignatureMMDITWrapper(MMDiT):
    pass
