"""The model families the RALU nodes run, one small module each (as ``ralu_torch/backends``).

Each module states what differs for its ComfyUI models (:class:`~.base.Family`: which classes,
what is refused, how a mixed stage's positions reach the model, a concatenated condition);
the guider calls, latent forms, schedule and sampler are shared. :func:`resolve` finds the
family of a MODEL and refuses one the nodes do not run, in one line that names it and the
families they do run.
"""

from __future__ import annotations

from . import chroma, flux, qwenimage, sd3, wan
from .base import Family, NodeError

FAMILIES: tuple = (flux.FAMILY, chroma.FAMILY, sd3.FAMILY, qwenimage.FAMILY, wan.FAMILY)
BY_NAME = {f.name: f for f in FAMILIES}

#: ComfyUI model classes the nodes refuse although they derive from a supported one, with why.
VARIANTS = {
    "ChromaRadiance": "Chroma Radiance, which denoises pixels, not latents",
    "WAN21_Vace": "Wan VACE, which adds reference and control frames",
    "WAN21_Camera": "Wan Fun Camera, which adds camera-motion conditioning",
    "WAN21_HuMo": "Wan HuMo, which adds audio and reference conditioning",
    "WAN22_Animate": "Wan 2.2 Animate, which adds pose and face conditioning",
    "WAN22_S2V": "Wan 2.2 S2V, which adds audio conditioning",
}


def supported() -> str:
    return ", ".join(f.display for f in FAMILIES)


def unwrap(net):
    """The module a ``torch.compile``d diffusion model wraps (``_orig_mod``), else ``net``."""
    return getattr(net, "_orig_mod", net)


def resolve(model, node: str) -> tuple:
    """``(family, base, net)`` of ``model`` (a ``ModelPatcher`` or a ``BaseModel``): its
    ``BaseModel`` and diffusion model checked to be one the nodes run; a ``NodeError`` naming
    the model's class and the supported families otherwise."""
    base = getattr(model, "model", model)
    net = unwrap(getattr(base, "diffusion_model", None))
    name = type(base).__name__
    family = next((f for f in FAMILIES if f.matches(base)), None)
    if family is None:
        what = f" ({VARIANTS[name]})" if name in VARIANTS else ""
        raise NodeError(node, f"the MODEL is {name}{what}; the RALU nodes run {supported()} through ComfyUI's own "
                              "models")
    family.check(base, net, node)
    return family, base, net


__all__ = ["BY_NAME", "FAMILIES", "Family", "NodeError", "resolve", "supported"]
