"""Model backends: each adapts one model family to the sampler's single contract

    positions = prepare(tokens, conditioning)            once per stage
    velocity(x, positions, sigma, conditioning) -> velocity tokens (float32), every step

where ``x`` holds the token values and ``tokens`` (a ``ralu_torch.tokens.TokenSet``) their
positions (:mod:`ralu_torch.backends.base` states the contract as Protocols),

plus ``encode`` (prompts to conditioning) and ``decode`` (latents to images in [-1, 1]).
Packing, the ``* 1000`` timestep scale, guidance and position embeddings stay in here.
"""

from __future__ import annotations


#: Text-to-image pipelines RALU runs; their image-conditioned siblings (Img2Img, Inpaint, Fill,
#: Kontext, Control, ...) start from an image or add conditioning tokens that RALU's
#: low-resolution stages do not model, and are refused by name.
SUPPORTED = ("FluxPipeline", "StableDiffusion3Pipeline")


def backend_for(pipe):
    """The backend for a diffusers pipeline instance (a FluxPipeline or StableDiffusion3Pipeline,
    or a subclass of one)."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    name = type(pipe).__name__
    if isinstance(pipe, FluxPipeline):
        from .flux import FluxBackend

        return FluxBackend(pipe)
    if isinstance(pipe, StableDiffusion3Pipeline):
        from .sd3 import SD3Backend

        return SD3Backend(pipe)
    family = ("FluxPipeline" if name.startswith("Flux")
              else "StableDiffusion3Pipeline" if name.startswith("StableDiffusion3") else None)
    hint = f"; load the text-to-image {family} instead" if family else ""
    raise ValueError(f"RALU cannot run {name}: it runs the text-to-image pipelines {', '.join(SUPPORTED)}{hint}")
