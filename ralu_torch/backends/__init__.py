"""Model backends: each adapts one model family to the sampler's single contract

    positions = prepare(tokens, conditioning)            once per stage
    velocity(x, positions, sigma, conditioning) -> velocity tokens (float32), every step

where ``x`` holds the token values and ``tokens`` (a ``ralu_torch.tokens.TokenSet``) their
positions (:mod:`ralu_torch.backends.base` states the contract as Protocols),

plus ``encode`` (prompts to conditioning) and ``decode`` (latents to images in [-1, 1]).
Packing, the ``* 1000`` timestep scale, guidance and position embeddings stay in here.
"""

from __future__ import annotations


def backend_for(pipe):
    """The backend for a diffusers pipeline instance."""
    name = type(pipe).__name__
    if name.startswith("Flux"):
        from .flux import FluxBackend

        return FluxBackend(pipe)
    if name.startswith("StableDiffusion3"):
        from .sd3 import SD3Backend

        return SD3Backend(pipe)
    raise ValueError(f"no RALU backend for {name}; supported: FluxPipeline, StableDiffusion3Pipeline")
