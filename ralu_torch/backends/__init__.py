"""Model backends: each adapts one model family to the sampler's single contract

    positions = prepare(tokens, conditioning)            once per stage
    velocity(x, positions, sigma, conditioning) -> velocity tokens (float32), every step

where ``x`` holds the token values and ``tokens`` (a ``ralu_torch.tokens.TokenSet``) their
positions (:mod:`ralu_torch.backends.base` states the contract as Protocols),

plus ``encode`` (prompts to conditioning) and ``decode`` (latents to images in [-1, 1]).
Packing, the timestep scale, guidance and position embeddings stay in here. The families
and their pipelines are declared in :mod:`ralu_torch.backends.families`.
"""

from __future__ import annotations

import importlib

from .families import SUPPORTED, backend_path, refusal, sibling_family


def backend_for(pipe):
    """The backend for a diffusers pipeline instance: one of :data:`SUPPORTED` or a family's
    image-conditioned pipelines (``Family.conditioned``), or a subclass of one. Other
    image-conditioned siblings (Img2Img, Inpaint, Edit, ControlNet, Kontext, ...) are refused by
    name, with the text-to-image (or text-to-video) pipeline to load instead, the
    image-conditioned ones the family runs, and for inpainting and ControlNet pipelines why."""
    for cls in type(pipe).__mro__:
        path = backend_path(cls.__name__)
        if path is not None:
            module, _, name = path.partition(":")
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)(pipe)
    name = type(pipe).__name__
    family = sibling_family(name)
    kind = lambda f: "text-to-video" if f.video else "text-to-image"  # noqa: E731
    hint = f"; load the {kind(family)} {' or '.join(family.pipelines)} instead" if family else ""
    if family is not None and family.conditioned:
        hint += f" (of its image-conditioned pipelines RALU runs {', '.join(family.conditioned)})"
    why = refusal(name)
    raise ValueError(f"RALU cannot run {name}: it runs the text-to-image and text-to-video pipelines "
                     f"{', '.join(SUPPORTED)}{hint}" + (f". Why not {name}: {why}" if why else ""))
