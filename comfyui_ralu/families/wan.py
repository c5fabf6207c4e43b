"""Wan 2.1 and 2.2: ``comfy.model_base.WAN21`` and ``WAN22`` running ComfyUI's ``WanModel``.

Covered: text-to-video (Wan 2.1 1.3B and 14B, Wan 2.2 A14B's two experts, which ComfyUI loads
as two ``WAN21`` models, and Wan 2.2 TI2V-5B, ``WAN22``, 48 latent channels) and
image-to-video (Wan 2.1 I2V and Wan 2.2 I2V A14B: ``WAN21`` models whose 36 input channels
are the latent, a 4-channel mask and the 16-channel start-image latent that
ComfyUI's ``WanImageToVideo`` node puts in the conditioning, plus Wan 2.1's CLIP vision
features). Other Wan models (VACE, Fun Control/Inpaint, camera, HuMo, Animate, S2V) add
conditioning RALU's stages do not model and are refused by name.

A clip is ``(B, C, T, H, W)``; its latent frames are stacked along the token rows, so a coarse
token covers ``D x D`` patches of one frame and every frame is kept (as ``ralu_torch``'s Wan
backend lays it out). Positions: the forward builds ids ``(frame, row, col)`` from the
latent's shape (``rope_encode``) and evaluates its embedder (``rope_embedder``) on them; in a
mixed stage the embedder is handed each token's ids by the coordinate rule within its frame.

The condition that ``WanImageToVideo`` concatenates (``c_concat``, at full resolution) follows
each stage's token layout by ``ralu_torch.tokens.latent_tokens``, the rule the diffusers
adapter applies to its conditions: each token reads the condition average-pooled over the
cells it covers.
"""

from __future__ import annotations

import torch

from .base import Family, IdsInPlace, NodeError, repeat_batch, stage_latent, substituted

#: Input channels an image-to-video model adds: Wan's 4-channel frame mask and the start-image latent.
MASK_CHANNELS = 4


class WanFamily(Family):
    name = "wan"
    display = "Wan 2.1/2.2"
    model_classes = ("WAN21", "WAN22")
    video = True
    concat = True

    def check(self, base, net, node: str) -> None:
        from comfy.ldm.wan.model import WanModel

        if type(net) is not WanModel:
            raise NodeError(node, f"the MODEL is {type(base).__name__} running {type(net).__name__}, not ComfyUI's "
                                  "WanModel; the RALU nodes run Wan text- and image-to-video only")
        if tuple(net.patch_size) != (1, 2, 2):
            raise NodeError(node, f"the MODEL patches by {tuple(net.patch_size)}; RALU runs Wan's (1, 2, 2) patches")
        extra = net.patch_embedding.weight.shape[1] - net.out_dim
        if extra and extra != MASK_CHANNELS + net.out_dim:
            raise NodeError(node, f"the MODEL takes {net.patch_embedding.weight.shape[1]} input channels for "
                                  f"{net.out_dim} latent channels (a Wan Fun Control or Inpaint model); RALU runs Wan "
                                  "text-to-video and image-to-video (the latent, a 4-channel mask and the start image)")

    def positions(self, net, tokens, frames: int, node: str) -> torch.Tensor:
        return self.image_ids(tokens, frames)

    def substitute(self, net, positions, n: int, node: str):
        ids = repeat_batch(positions, n, positions.shape[0], node, "Wan's rotary ids are per image")

        def replace(given):
            if given.shape[1] != ids.shape[1]:
                raise NodeError(node, f"Wan was given {given.shape[1]} ids where the mixed stage has {ids.shape[1]} "
                                      "tokens; frames concatenated in time and reference latents cannot run in a "
                                      "mixed-resolution stage")
            return ids.to(given.device)

        return substituted(net, "rope_embedder", IdsInPlace(net.rope_embedder, replace))

    def follow(self, c_concat: torch.Tensor, tokens, frames: int, node: str) -> torch.Tensor:
        """The full-resolution condition ``(n, C, T, H, W)`` in a stage's latent form: each token
        reads it by ``latent_tokens`` (pooled over the cells it covers)."""
        from ralu_torch.tokens import TokenSet, latent_tokens

        n, C, T, H, W = c_concat.shape
        if (T, H, W) != (frames, 2 * tokens.grid[0] // frames, 2 * tokens.grid[1]):
            raise NodeError(node, f"the concatenated image condition is {T}x{H}x{W} (frames x height x width) for a "
                                  f"latent of {frames}x{2 * tokens.grid[0] // frames}x{2 * tokens.grid[1]}; give "
                                  "WanImageToVideo the latent's size and length")
        batch = lambda t: repeat_batch(t, n, tokens.batch, node, "the image condition is per image")  # noqa: E731
        rep = TokenSet(cells=batch(tokens.cells), size=batch(tokens.size), grid=tokens.grid)
        values = latent_tokens(c_concat.reshape(n, C, T * H, W).float(), rep)
        return stage_latent(values, rep, frames, video=True).to(c_concat.dtype)


FAMILY = WanFamily()
