"""What the text-to-video backends share: a clip of latent frames ``(B, C, T, h, w)`` stacked
along the token rows (Wan, HunyuanVideo 1.5).

RALU's token grid of a clip is ``(T * rows, cols)``: latent frame ``k`` holds rows
``k * rows .. (k + 1) * rows - 1``, so the raster order of the grid is the models' own
(frame by frame, row by row) and the stacked latent ``(B, C, T h, w)`` is the clip's memory
viewed without a copy (the first noise drawn in it is the pipeline's). A coarse token of side
``D`` covers ``D x D`` cells of one frame (the rows per frame are a multiple of ``D``), so
downsampling acts on rows and columns only and every latent frame is kept; the token
bookkeeping, ``U``, the re-injection noise and the selection work per frame with no code of
their own. :meth:`ClipBackend.clip_positions` gives each token its frame index and its row and
column within the frame at the coordinate rule (``cells / D``), for a family's rotary code.
"""

from __future__ import annotations

import torch

from ..tokens import pack, unpack


class ClipBackend:
    """The clip side of a video backend; a family sets ``temporal`` (the VAE's temporal
    compression) and ``default_num_frames``, and ``patch`` (latent pixels per token side) where
    its token is one latent pixel."""

    output_form = input_form = "video"
    #: the clip's latent frames; ``RALU`` sets it for each call (:meth:`set_frames`)
    frames: int = 1
    temporal: int = 4
    default_num_frames: int = 81
    patch: int = 2

    def latent_frames(self, num_frames) -> int:
        """Latent frames of a clip of ``num_frames`` video frames: the VAE keeps the first frame
        and compresses the rest by its temporal factor, so ``num_frames`` must be ``k t + 1``."""
        n, t = num_frames, self.temporal
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (n - 1) % t:
            lower = max(1, (n - 1) // t * t + 1) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
            raise ValueError(f"num_frames must be {t} k + 1 (1, {t + 1}, {2 * t + 1}, ..., {self.default_num_frames}, "
                             f"...: the VAE keeps the first frame and compresses the rest {t}x in time), got "
                             f"{num_frames!r}; nearest allowed: {lower} or {lower + t}")
        return (n - 1) // t + 1

    def set_frames(self, latent_frames: int) -> None:
        self.frames = latent_frames

    def clip_positions(self, tokens) -> tuple:
        """``(frame, row, col)``, each ``(B, L)`` float32, of a stage's tokens: the latent frame's
        index, the row and column within the frame at the coordinate rule (``cells / D``)."""
        rows = tokens.grid[0] // self.frames                              # token rows per latent frame
        D = tokens.coarsest
        r, c = tokens.cells[..., 0], tokens.cells[..., 1]
        frame = torch.div(r, rows, rounding_mode="floor")
        return frame.float(), (r - frame * rows).float() / D, c.float() / D

    # -- latents -------------------------------------------------------------------------------
    def _real(self, latents: torch.Tensor) -> torch.Tensor:
        """A stacked latent in RALU's 2x2 token form (``ralu_torch.tokens``) as the model's own:
        the same for a 2x2 patch, the ``(B, F, T h, w)`` latent of one-pixel tokens."""
        if self.patch == 2:
            return latents
        B, _, H, W = latents.shape
        return pack(latents).transpose(1, 2).reshape(B, -1, H // 2, W // 2)

    def _stacked_latent(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """Raster-order tokens as the model's stacked latent ``(B, C, T h, w)``."""
        if self.patch == 2:
            return unpack(tokens, grid)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

    def _clip(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T h, w)`` stacked frames -> the clip ``(B, C, T, h, w)`` (a view)."""
        B, C, H, W = latents.shape
        return latents.view(B, C, self.frames, H // self.frames, W)

    def _stacked(self, clip: torch.Tensor) -> torch.Tensor:
        B, C, T, h, w = clip.shape
        return clip.reshape(B, C, T * h, w)

    def first_noise(self, latents):
        """The caller's ``latents=`` in the pipeline's clip form ``(B, C, T, h, w)`` as the stacked latent.
        A clip of another frame count is refused, not reshaped: stacked, ``(T', h')`` with
        ``T' h' = T h`` would pass for the call's clip."""
        if isinstance(latents, torch.Tensor) and latents.dim() == 5:
            if latents.shape[2] != self.frames:
                raise ValueError(f"latents must be a clip of {self.frames} latent frames (the call's num_frames), got "
                                 f"{tuple(latents.shape)} ({latents.shape[2]} frames)")
            return self._stacked(latents)
        return latents

    def postprocess(self, video: torch.Tensor, output_type: str):
        return self.pipe.video_processor.postprocess_video(video, output_type=output_type)

    def pipeline_latents(self, tokens, grid):
        return self._clip(self._stacked_latent(tokens, grid))

    def from_pipeline_latents(self, latents, grid):
        stacked = self._stacked(latents)
        return pack(stacked) if self.patch == 2 else stacked.flatten(2).transpose(1, 2)

    def pipeline_input(self, tokens, grid):
        return self.pipeline_latents(tokens, grid)
