"""FLUX.1 (dev, schnell): ``comfy.model_base.Flux`` running ``comfy.ldm.flux.model.Flux``.

Positions: ComfyUI's FLUX builds image ids ``(0, row, col)`` from the latent's shape and
evaluates its rotary embedder (``pe_embedder``) on the text ids followed by the image ids. In
a mixed stage the embedder is handed each image's ids of the coordinate rule in place of the
strip's (:class:`~.base.IdsInPlace`); FLUX's rotary takes ids per image, so the batch runs in
one call per step.
"""

from __future__ import annotations

import torch

from .base import Family, IdsInPlace, NodeError, repeat_batch, substituted


class FluxFamily(Family):
    name = "flux"
    display = "FLUX.1"
    model_classes = ("Flux",)
    network = ("comfy.ldm.flux.model", "Flux")

    def check(self, base, net, node: str) -> None:
        import importlib

        module, cls = self.network
        if not isinstance(net, getattr(importlib.import_module(module), cls)):
            raise NodeError(node, f"the MODEL is {type(base).__name__} running {type(net).__name__}, not ComfyUI's "
                                  f"{cls}; the RALU nodes run {self.display} through ComfyUI's own model only")
        unet = getattr(getattr(base, "model_config", None), "unet_config", {}) or {}
        channels = unet.get("in_channels", 16)
        if channels != unet.get("out_channels", 16):
            raise NodeError(node, f"the MODEL takes {channels} input channels (a FLUX Fill, Depth or Canny model that "
                                  "concatenates an image to the latent); RALU's low-resolution stages run plain "
                                  f"text-to-image {self.display} only")

    def positions(self, net, tokens, frames: int, node: str) -> torch.Tensor:
        ids = self.image_ids(tokens, frames)
        return torch.cat([torch.zeros_like(ids[..., :1]), ids[..., 1:]], dim=-1)        # (0, row, col)

    def substitute(self, net, positions, n: int, node: str):
        ids = repeat_batch(positions, n, positions.shape[0], node, "FLUX's image ids are per image")
        length = ids.shape[1]

        def replace(given):
            if given.shape[0] != ids.shape[0] or given.shape[1] < length:
                raise NodeError(node, f"{self.display} was given {given.shape[1]} ids for {given.shape[0]} images "
                                      f"where the mixed stage has {length} image tokens for {ids.shape[0]}; reference "
                                      "latents (Kontext) and other additions to the image sequence cannot run in a "
                                      "mixed-resolution stage")
            # float32 whatever the model's dtype (its rotary reads float32): half-steps stay exact
            return torch.cat([given[:, :given.shape[1] - length].float(), ids.to(given.device)], dim=1)

        return substituted(net, "pe_embedder", IdsInPlace(net.pe_embedder, replace))


FAMILY = FluxFamily()
