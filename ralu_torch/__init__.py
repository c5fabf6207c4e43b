"""ralu_torch: the RALU sampler for diffusers pipelines (FLUX.1 dev and schnell)."""

from .pipeline import RALU, RALUPipelineOutput
from .tokens import UPSAMPLE_MODES, TokenSet

__all__ = ["RALU", "RALUPipelineOutput", "TokenSet", "UPSAMPLE_MODES"]
