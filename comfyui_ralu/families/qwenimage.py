"""Qwen-Image: ``comfy.model_base.QwenImage`` running ComfyUI's ``QwenImageTransformer2DModel``.

Its latents are one-frame clips ``(B, 16, 1, H, W)`` (Qwen-Image's VAE is a video VAE).
Positions: the forward builds image ids ``(0, row - rows // 2, col - cols // 2)`` centred on
the latent's token frame and text ids from ``max(rows // 2, cols // 2)`` on, and evaluates
its embedder (``pe_embedder``) on the text ids followed by the image ids. In a mixed stage
the embedder is handed ids by the same rule on the stage's coarse frame: each token's
position (coordinate rule) less the frame's centre, the text after the frame's extent.
(diffusers' Qwen-Image centres a frame of odd side one position lower, ``rows - rows // 2``;
the nodes follow ComfyUI's model, which the MODEL is.)
"""

from __future__ import annotations

import torch

from .base import Family, IdsInPlace, NodeError, repeat_batch, substituted


class QwenImageFamily(Family):
    name = "qwen-image"
    display = "Qwen-Image"
    model_classes = ("QwenImage",)
    video = True

    def check(self, base, net, node: str) -> None:
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

        if not isinstance(net, QwenImageTransformer2DModel):
            raise NodeError(node, f"the MODEL is QwenImage running {type(net).__name__}, not ComfyUI's "
                                  "QwenImageTransformer2DModel; the RALU nodes run Qwen-Image through ComfyUI's own "
                                  "model only")

    def positions(self, net, tokens, frames: int, node: str):
        rows, cols = tokens.frame
        ids = self.image_ids(tokens, frames)
        centre = torch.tensor([0.0, rows // 2, cols // 2], device=ids.device)
        return ids - centre, max(rows // 2, cols // 2)

    def substitute(self, net, positions, n: int, node: str):
        ids, start = positions
        image = repeat_batch(ids, n, ids.shape[0], node, "Qwen-Image's image ids are per image")
        length = image.shape[1]

        def replace(given):
            if given.shape[0] != n or given.shape[1] < length:
                raise NodeError(node, f"Qwen-Image was given {given.shape[1]} ids for {given.shape[0]} images where "
                                      f"the mixed stage has {length} image tokens for {n}; reference latents (Edit) "
                                      "cannot run in a mixed-resolution stage")
            text = given.shape[1] - length
            txt = torch.arange(start, start + text, device=given.device, dtype=torch.float32)
            return torch.cat([txt.view(1, -1, 1).expand(n, -1, 3), image.to(given.device)], dim=1)

        return substituted(net, "pe_embedder", IdsInPlace(net.pe_embedder, replace))


FAMILY = QwenImageFamily()
