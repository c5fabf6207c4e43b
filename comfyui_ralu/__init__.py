"""ComfyUI custom nodes for RALU (Region-Adaptive Latent Upsampling) on FLUX.1.

Install: ``pip install`` the ralu repository (with its ``torch`` extra) into ComfyUI's Python,
and link or copy this folder into ``ComfyUI/custom_nodes/`` (docs/comfyui.md). The nodes run
the MODEL they are given through ComfyUI's own FLUX forward; ``ralu_schedule`` and
``ralu_torch`` do the method.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
