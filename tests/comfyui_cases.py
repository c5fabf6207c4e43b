"""The diffusers side of the ComfyUI node checks, shared by tests/test_comfyui_nodes.py (the
stand-in) and tests/test_comfyui_real.py (a real ComfyUI): per family, the conditioning
ComfyUI would hand the nodes and the same embeddings as ``ralu_torch.RALU`` takes them, and
RALU's run on the diffusers pipeline in the ComfyUI model's latent form.

Guidance is each side's own: ComfyUI combines ``uncond + cfg (cond - uncond)`` for every
family; diffusers' FLUX.1 does that under ``true_cfg_scale``, SD3, Chroma and Wan under
``guidance_scale``, and Qwen-Image under ``true_cfg_scale`` followed by a per-token rescale to
the conditional velocity's norm, which ComfyUI's Qwen-Image does not apply (its CFGNorm node is
another rule, on the denoised latent, clamped): the reference turns that rescale off.
"""

import dataclasses

import torch
import torch.nn.functional as F

#: The families, by ralu_schedule's name, with their two presets of the checks (a 7x and a 4x).
PRESETS = {"flux": ("flux-dev-7x", "flux-dev-4x"), "chroma": ("chroma-7x", "chroma-4x"),
           "sd3": ("sd3-medium-7x", "sd3-medium-4x"), "qwen-image": ("qwen-image-7x", "qwen-image-4x"),
           "wan": ("wan-480p-7x", "wan-480p-4x")}
VIDEO = ("qwen-image", "wan")          # ComfyUI latents (B, C, T, H, W)
GUIDANCE = 3.5                         # FLUX.1-dev's distilled guidance in the conditioning


def text_width(pipe) -> int:
    c = pipe.transformer.config
    return c.text_dim if hasattr(c, "text_dim") and "Wan" in type(pipe).__name__ else c.joint_attention_dim


def embeddings(pipe, family: str, batch: int, seed: int = 1) -> dict:
    """Random prompt embeddings that fit the transformer (and a pooled one where it takes it)."""
    g = torch.Generator().manual_seed(seed)
    out = {"text": torch.randn(batch, 8, text_width(pipe), generator=g)}
    if family in ("flux", "sd3"):
        out["pooled"] = torch.randn(batch, pipe.transformer.config.pooled_projection_dim, generator=g)
    return out


def conditioning(family: str, e: dict, **extra) -> list:
    """ComfyUI's CONDITIONING of embeddings ``e``: ``[[text, {options}]]``."""
    options = {"pooled_output": e.get("pooled"), **extra}      # None where the family has none, as ComfyUI's CLIP
    if family == "flux":
        options["guidance"] = GUIDANCE
    return [[e["text"], options]]


def ralu_inputs(family: str, pos: dict, neg: dict, cfg: float) -> dict:
    """The same embeddings and guidance as ``RALU.__call__`` takes them."""
    kw = {"prompt_embeds": pos["text"]}
    if "pooled" in pos:
        kw["pooled_prompt_embeds"] = pos["pooled"]
    guided = cfg != 1.0
    if family == "flux":
        kw["guidance_scale"] = GUIDANCE
    if guided or family in ("sd3",):
        kw["negative_prompt_embeds"] = neg["text"]
        if "pooled" in neg:
            kw["negative_pooled_prompt_embeds"] = neg["pooled"]
    if family in ("flux", "qwen-image"):
        if guided:
            kw["true_cfg_scale"] = cfg
    else:
        kw["guidance_scale"] = cfg
    if family == "sd3" and not guided:
        kw.pop("negative_prompt_embeds"), kw.pop("negative_pooled_prompt_embeds")
    if family == "chroma":          # ChromaPipeline takes embeddings with their mask; ComfyUI's attend to every token
        for key in [k for k in kw if k.endswith("prompt_embeds")]:
            kw[key.replace("embeds", "attention_mask")] = torch.ones(kw[key].shape[:2], dtype=torch.bool)
    return kw


def first_noise(noise: torch.Tensor, D: int) -> torch.Tensor:
    """The nodes' first-stage noise: ComfyUI's noise pooled by ``D`` (a clip frame by frame)."""
    if noise.dim() == 5:
        B, C, T, H, W = noise.shape
        return (F.avg_pool2d(noise.reshape(B, C, T * H, W).float(), D) * D).view(B, C, T, H // D, W // D)
    return F.avg_pool2d(noise.float(), D) * D


def reference(pipe, family: str, preset: str, noise: torch.Tensor, pos: dict, neg: dict, cfg: float, seed: int,
              *, select: str = "edges", solver="euler", **call):
    """``ralu_torch.RALU`` on ``pipe`` from the nodes' first noise (``noise``: ComfyUI's, of the
    full latent), re-injection from ``seed``, ``call`` passed on (``image=``): the final latents in
    ComfyUI's latent form, and the stage token counts."""
    from ralu_schedule import preset as get_preset
    from ralu_torch import RALU
    from ralu_torch.tokens import unpack

    D = get_preset(preset).layout.downsampling
    first = first_noise(noise, D)
    ralu = RALU(pipe, preset, select=select, solver=solver)
    if family == "qwen-image":                      # ComfyUI's Qwen-Image guides without the rescale
        encode = ralu.backend.encode
        ralu.backend.encode = lambda **kw: dataclasses.replace(encode(**kw), rescale=False)
    scale = pipe.vae_scale_factor_spatial if family == "wan" else pipe.vae_scale_factor
    H, W = noise.shape[-2] * scale, noise.shape[-1] * scale
    kw = {}
    if family == "wan":
        kw["num_frames"] = (noise.shape[2] - 1) * pipe.vae_scale_factor_temporal + 1
    elif family == "qwen-image":
        first = first[:, :, 0]
    out = ralu(**ralu_inputs(family, pos, neg, cfg), **kw, **call, height=H, width=W, latents=first,
               output_type="latent", generator=torch.Generator().manual_seed(seed))
    images = out.images
    if family in ("flux", "chroma", "qwen-image"):
        images = unpack(images, (noise.shape[-2] // 2, noise.shape[-1] // 2))
        if family == "qwen-image":
            images = images[:, :, None]
    return images, out.stage_tokens
