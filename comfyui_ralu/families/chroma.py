"""Chroma: ``comfy.model_base.Chroma`` running ``comfy.ldm.chroma.model.Chroma``.

FLUX.1-schnell's architecture with its own conditioning (no pooled embedding, a distilled
guidance layer, classifier-free guidance by a second call): the tokens, ids and rotary are
FLUX's, so the positions are :mod:`.flux`'s. ComfyUI's Chroma Radiance (pixel space) is
another model and is refused by name.
"""

from __future__ import annotations

from .flux import FluxFamily


class ChromaFamily(FluxFamily):
    name = "chroma"
    display = "Chroma"
    model_classes = ("Chroma",)
    network = ("comfy.ldm.chroma.model", "Chroma")


FAMILY = ChromaFamily()
