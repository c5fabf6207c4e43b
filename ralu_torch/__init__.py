"""ralu_torch: the RALU sampler for diffusers pipelines (FLUX.1 dev and schnell, SD3, FLUX.2 [dev] and
[klein], Qwen-Image, Z-Image, Chroma).

Names are loaded on first use (PEP 562), so that ``ralu_torch.cli`` can start, and say
what to install, on a machine where only the torch-free core is installed.
"""

import importlib

_EXPORTS = {
    "RALU": "pipeline", "RALUPipelineOutput": "pipeline",
    "TokenSet": "tokens", "UPSAMPLE_MODES": "tokens",
    "SELECTIONS": "options",
    "PipelineBackend": "backends.base", "SamplerBackend": "backends.base",
    "stage_scheduler": "solvers", "upsample_latents": "stock", "flow_denoiser": "stock",
    "next_stage_latents": "stock",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ralu_torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
