"""ComfyUI custom nodes for RALU (Region-Adaptive Latent Upsampling) on FLUX.1, Chroma,
SD3/SD3.5, Qwen-Image and Wan 2.1/2.2.

Install from a clone of the ralu repository with ComfyUI's Python:
``python comfyui_ralu/install.py /path/to/ComfyUI`` (docs/comfyui.md). The nodes run the MODEL
they are given through ComfyUI's own model; ``ralu_schedule`` and ``ralu_torch`` do the method,
and one small module per model family (:mod:`.families`) says what differs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
