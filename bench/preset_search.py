"""How the presets without published parameters were chosen: a layout search measured on
the analytic quality benchmark (exact Gaussian data, ralu_torch.analysis.quality).

    python bench/preset_search.py [--seeds 128] [--size 64] [--which dev-10x schnell GROUP ...]

dev-10x: 3- and 4-stage layouts whose cost-model TFLOPs (FLUX.1-dev, 1024x1024) are at least
10x below the 50-step baseline, each solved with ralu_schedule (h0 = 3, as the FLUX presets),
against the full-resolution baseline of the same FLOPs and flux-dev-7x. schnell: 4-step
layouts at shift 1.0 (FLUX.1-schnell's static shift; no guidance), against schnell's own
4-step run. FD: spectral Frechet distance to the data, x1e3 (lower is better).

The other groups (:data:`GROUPS`) search the presets of the newer families: each candidate is
solved with the family's own timestep rule at 1024x1024 (FLUX.2's shift for the layout's own
step count, Qwen-Image's grid ending at sigma 0.02, Z-Image's and Chroma's shifts), priced by
the family's cost model against its stock step count, and measured against the full-resolution
runs of the stock count and of about the same FLOPs. The candidates are FLUX.1's (made for a
base shift of 3, or schnell's 1) and, where the family's base shift differs by more than 20%,
the same steps with their ends moved to the same quantiles of the family's base timestep
distribution (``F_h0^-1(F_3(e))``: as large a share of the base sampler's steps before each
transition as the FLUX.1 layout has). The layout with the lowest FD among those within 10%
below to 15% above each target speed-up is the preset (printed last).

The video groups (``wan-480p``, ``wan-720p``, ``hunyuanvideo1.5-480p``, ``hunyuanvideo1.5-720p``) search
Wan 2.1's and HunyuanVideo 1.5's presets the same way, on the pipeline's fixed flow shift at
that resolution (Wan: the model cards' 3 at 480p, 5 at 720p; HunyuanVideo 1.5: its scheduler's
5 and 9), priced on whole clips (81 frames for Wan, 121 for HunyuanVideo 1.5) with
attention's products included (the "full" convention:
attention is half to three quarters of a clip's transformer work). The analytic benchmark is
spatial: it measures each layout on images, not on the time axis.

The image-conditioned groups (``flux-kontext``, ``qwen-image-edit`` (Qwen-Image-Edit and -2509,
chosen by the first), ``wan21-i2v-480p``, ``wan21-i2v-720p``, ``wan22-i2v-a14b``,
``wan22-ti2v-5b-i2v``) search the same way, priced by the conditioned model's cost: every call
carries the reference image's
tokens at full resolution (``references="full"``, RALU's default; a coarse stage then saves on
the generated tokens only, so reaching a speed-up takes fewer steps than without references),
and what encodes the conditions (VAE encodes, CLIP, Qwen2.5-VL's vision tower) once per call.
The analytic benchmark has no reference image: it ranks the layouts' schedules and
transitions, not how a reference steers the stages.

The LTX-2 groups (``ltx2-512x768``, ``ltx2-768x1152``) search its presets on its own rule for the
clip: LTX2Pipeline's dynamic shift for the clip's tokens (one per latent pixel of each of the 16
latent frames of 121: ``e^2.78 = 16.2`` at 512x768) and its grid ending at sigma 0.1, priced
against its 30 steps (each with its three calls, video and audio) with attention included.
"""

from __future__ import annotations

import argparse
import math

from ralu_schedule import Layout, preset, shift_rule, solve
from ralu_schedule.cost import MODELS, layout_cost
from ralu_schedule.shift import shift_map, unshift_map
from ralu_schedule.models import MODEL_INFO
from ralu_torch.analysis.quality import run, spectrum_metrics
from ralu_torch.backends.gaussian import GaussianBackend, GaussianField

DEV_CANDIDATES = [
    # steps, ends, fractions, factors
    ((2, 2, 3), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 2, 3), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 2, 3), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((3, 2, 3), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 3, 3), (0.2, 0.35, 1.0), (0.1, 1.0), (2, 2)),
    ((1, 2, 3), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((3, 1, 3), (0.3, 0.4, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 4), (0.45, 1.0), (1.0,), (2,)),
    ((4, 4), (0.5, 1.0), (1.0,), (2,)),
    ((2, 2, 2, 3), (0.15, 0.3, 0.4, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((3, 2, 2, 3), (0.2, 0.35, 0.45, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((3, 3, 2, 3), (0.2, 0.4, 0.5, 1.0), (1.0, 0.2, 1.0), (2, 2, 2)),
    ((4, 3, 3), (0.25, 0.45, 1.0), (1.0, 1.0), (2, 2)),
    ((3, 3, 3), (0.25, 0.45, 1.0), (1.0, 1.0), (2, 2)),
    # second round, around the best of the first
    ((4, 3, 3), (0.2, 0.4, 1.0), (1.0, 1.0), (2, 2)),
    ((4, 3, 3), (0.3, 0.5, 1.0), (1.0, 1.0), (2, 2)),
    ((3, 1, 3), (0.25, 0.35, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 1, 3), (0.35, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 2, 1, 3), (0.2, 0.35, 0.45, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((4, 2, 1, 3), (0.2, 0.35, 0.45, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((4, 2, 1, 3), (0.25, 0.4, 0.5, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((4, 2, 2, 3), (0.15, 0.3, 0.45, 1.0), (1.0, 1.0, 1.0), (2, 2, 2)),
]

SCHNELL_CANDIDATES = [
    ((1, 1, 2), (0.2, 0.3, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.4, 0.55, 1.0), (0.3, 1.0), (2, 2)),
    ((2, 2), (0.3, 1.0), (1.0,), (2,)),
    ((2, 2), (0.45, 1.0), (1.0,), (2,)),
    ((1, 3), (0.3, 1.0), (1.0,), (2,)),
    # second round
    ((1, 1, 2), (0.45, 0.6, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.5, 0.65, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.55, 0.7, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 3), (0.45, 1.0), (1.0,), (2,)),
    ((1, 3), (0.6, 1.0), (1.0,), (2,)),
]


# steps, ends, fractions, factors: layouts about 7x and 4x below 50 full-resolution steps
FIFTY_STEP_CANDIDATES = [
    ((2, 3, 5), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),          # the FLUX.1 7x layout
    ((3, 2, 5), (0.25, 0.35, 1.0), (0.1, 1.0), (2, 2)),
    ((3, 3, 4), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((2, 2, 5), (0.2, 0.35, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 3, 3, 4), (0.2, 0.35, 0.45, 1.0), (1.0, 0.2, 1.0), (2, 2, 2)),
    ((4, 4), (0.45, 1.0), (1.0,), (2,)),
    ((5, 6, 7), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),         # the FLUX.1 4x layout
    ((6, 5, 7), (0.35, 0.5, 1.0), (0.2, 1.0), (2, 2)),
    ((5, 5, 8), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((4, 5, 8), (0.25, 0.4, 1.0), (0.2, 1.0), (2, 2)),
    ((6, 8), (0.45, 1.0), (1.0,), (2,)),
]
# about 7x and 4x below Chroma's 35 steps
CHROMA_CANDIDATES = [
    ((2, 2, 4), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 2, 3), (0.2, 0.35, 1.0), (0.2, 1.0), (2, 2)),
    ((3, 2, 3), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((3, 3), (0.45, 1.0), (1.0,), (2,)),
    ((3, 4, 6), (0.25, 0.4, 1.0), (0.3, 1.0), (2, 2)),
    ((4, 4, 5), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((4, 3, 6), (0.3, 0.4, 1.0), (0.2, 1.0), (2, 2)),
    ((5, 6), (0.45, 1.0), (1.0,), (2,)),
]
# distilled few-step models: FLUX.2 [klein] (4 steps) and Z-Image-Turbo (9 steps)
KLEIN_CANDIDATES = SCHNELL_CANDIDATES
TURBO_CANDIDATES = [
    ((2, 2, 4), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((2, 2, 4), (0.4, 0.55, 1.0), (0.3, 1.0), (2, 2)),
    ((2, 2, 5), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((3, 2, 4), (0.35, 0.5, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 2, 5), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 5), (0.45, 1.0), (1.0,), (2,)),
    ((2, 6), (0.4, 1.0), (1.0,), (2,)),
]

# Wan video: the 50-step candidates and a few with more steps at low resolution, where a clip's
# full-resolution attention (quadratic in ~33k-74k tokens) makes them cheaper still
WAN_CANDIDATES = FIFTY_STEP_CANDIDATES + [
    ((3, 3, 5), (0.25, 0.35, 1.0), (0.1, 1.0), (2, 2)),
    ((4, 3, 5), (0.3, 0.4, 1.0), (0.1, 1.0), (2, 2)),
    ((4, 4, 4), (0.35, 0.5, 1.0), (0.2, 1.0), (2, 2)),
    ((6, 6, 7), (0.35, 0.5, 1.0), (0.3, 1.0), (2, 2)),
    ((8, 8), (0.5, 1.0), (1.0,), (2,)),
    # second round: more steps, for the speed-ups with attention
    ((4, 4, 5), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((5, 4, 5), (0.35, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((4, 3, 6), (0.3, 0.4, 1.0), (0.1, 1.0), (2, 2)),
    ((5, 5, 5), (0.35, 0.5, 1.0), (0.2, 1.0), (2, 2)),
    ((6, 6, 9), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((7, 6, 9), (0.35, 0.5, 1.0), (0.3, 1.0), (2, 2)),
    ((6, 7, 10), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((10, 10), (0.5, 1.0), (1.0,), (2,)),
]

# about 7x and 4x below FLUX.1 Kontext's 28 steps, its reference's 4096 tokens in every call
KONTEXT_CANDIDATES = [
    ((1, 2, 2), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 1, 2), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 1, 2), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((1, 1, 3), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 2, 2), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((2, 3), (0.3, 1.0), (1.0,), (2,)),
    ((1, 3), (0.3, 1.0), (1.0,), (2,)),
    ((3, 3, 3), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((2, 2, 4), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 3, 4), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 2, 4), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((3, 4), (0.45, 1.0), (1.0,), (2,)),
    ((4, 4), (0.5, 1.0), (1.0,), (2,)),
]
# about 7x and 4x below Qwen-Image-Edit's 50 steps (true CFG), its reference's 4096 tokens and the prompt's
# vision tokens in every call
QWEN_EDIT_CANDIDATES = [
    ((2, 2, 4), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 3, 4), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((3, 2, 4), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((3, 3, 3), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((2, 2, 3), (0.2, 0.35, 1.0), (0.2, 1.0), (2, 2)),
    ((3, 4), (0.4, 1.0), (1.0,), (2,)),
    ((4, 4, 6), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((4, 5, 6), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((5, 4, 6), (0.35, 0.5, 1.0), (0.2, 1.0), (2, 2)),
    ((4, 4, 7), (0.25, 0.4, 1.0), (0.3, 1.0), (2, 2)),
    ((6, 7), (0.45, 1.0), (1.0,), (2,)),
]
# about 7x and 4x below Wan 2.2 I2V A14B's 40 steps: the Wan candidates with four fifths of their steps
FORTY_STEP_WAN_CANDIDATES = list(dict.fromkeys(
    (tuple(max(1, round(n * 0.8)) for n in steps), ends, fractions, factors)
    for steps, ends, fractions, factors in WAN_CANDIDATES))
# LTX-2 (30 steps): Chroma's 35-step candidates and a few more, with more low-resolution steps (the clip's
# attention grows quadratically in its 6k-14k tokens)
LTX2_CANDIDATES = CHROMA_CANDIDATES + [
    ((3, 2, 4), (0.25, 0.35, 1.0), (0.1, 1.0), (2, 2)),
    ((3, 3, 3), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((4, 3, 3), (0.35, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((4, 4, 6), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((5, 4, 6), (0.35, 0.5, 1.0), (0.3, 1.0), (2, 2)),
    ((6, 6), (0.5, 1.0), (1.0,), (2,)),
]

#: video groups: (resolution, frames, the flow shift the pipeline samples with there, the FLOP
#: convention the speed-ups are read in: "full", since attention is most of a clip's work); a shift
#: of None: the model's own rule for the clip's tokens (LTX-2's dynamic shift, and its terminal)
VIDEO = {
    "wan-480p": ((480, 832), 81, 3.0, "full"),
    "wan-720p": ((704, 1280), 81, 5.0, "full"),
    # HunyuanVideo 1.5: the pipeline's 121 frames, its scheduler's fixed shift (5 at 480p, 9 at 720p), the
    # pipeline's sizes on the 32-pixel grid
    "hunyuanvideo1.5-480p": ((480, 832), 121, 5.0, "full"),
    "hunyuanvideo1.5-720p": ((704, 1280), 121, 9.0, "full"),
    "wan21-i2v-480p": ((480, 832), 81, 3.0, "full"),
    "wan21-i2v-720p": ((704, 1280), 81, 5.0, "full"),
    "wan22-i2v-a14b": ((480, 832), 81, 5.0, "full"),
    "wan22-ti2v-5b-i2v": ((704, 1280), 121, 5.0, "full"),
    "ltx2-512x768": ((512, 768), 121, None, "full"),
    "ltx2-768x1152": ((768, 1152), 121, None, "full"),
}

#: group -> (title, models priced, the model whose rule and stock count it searches for, candidates,
#: the base shift the candidates were made for, target speed-ups)
GROUPS = {
    "flux2": ("FLUX.2 [dev] and [klein] base, 50 steps", ("flux2-dev", "flux2-klein-base-4b", "flux2-klein-base-9b"),
              "flux2-dev", FIFTY_STEP_CANDIDATES, 3.0, (7.0, 4.0)),
    "qwen-image": ("Qwen-Image, 50 steps", ("qwen-image",), "qwen-image", FIFTY_STEP_CANDIDATES, 3.0, (7.0, 4.0)),
    "z-image": ("Z-Image, 50 steps", ("z-image",), "z-image", FIFTY_STEP_CANDIDATES, 3.0, (7.0, 4.0)),
    "chroma": ("Chroma, 35 steps", ("chroma",), "chroma", CHROMA_CANDIDATES, 3.0, (7.0, 4.0)),
    "flux2-klein": ("FLUX.2 [klein], distilled, 4 steps", ("flux2-klein-4b", "flux2-klein-9b"), "flux2-klein-4b",
                    KLEIN_CANDIDATES, 1.0, (1.3,)),
    "z-image-turbo": ("Z-Image-Turbo, 9 steps", ("z-image-turbo",), "z-image-turbo", TURBO_CANDIDATES, 3.0, (1.5,)),
    "wan-480p": ("Wan 2.1 14B, 480x832, 81 frames, 50 steps, flow shift 3 (speed-ups with attention)",
                 ("wan2.1-t2v-14b",), "wan2.1-t2v-14b", WAN_CANDIDATES, 3.0, (7.0, 4.0)),
    "wan-720p": ("Wan 2.1 14B, 704x1280, 81 frames, 50 steps, flow shift 5 (speed-ups with attention)",
                 ("wan2.1-t2v-14b",), "wan2.1-t2v-14b", WAN_CANDIDATES, 3.0, (7.0, 4.0)),
    "hunyuanvideo1.5-480p": ("HunyuanVideo 1.5 480p, 480x832, 121 frames, 50 steps, shift 5 (speed-ups with attention)",
                             ("hunyuanvideo1.5-480p", "hunyuanvideo1.5-480p-distilled"), "hunyuanvideo1.5-480p",
                             WAN_CANDIDATES, 3.0, (7.0, 4.0)),
    "hunyuanvideo1.5-720p": ("HunyuanVideo 1.5 720p, 704x1280, 121 frames, 50 steps, shift 9 (speed-ups with "
                             "attention)", ("hunyuanvideo1.5-720p", "hunyuanvideo1.5-720p-distilled"),
                             "hunyuanvideo1.5-720p", WAN_CANDIDATES, 3.0, (7.0, 4.0)),
    "qwen-image-2.1": ("Qwen-Image 2.1, 40 steps", ("qwen-image-2.1",), "qwen-image-2.1",
                       CHROMA_CANDIDATES + FIFTY_STEP_CANDIDATES, 3.0, (7.0, 4.0)),
    # image-conditioned (references at full resolution in every call: RALU's default)
    "flux-kontext": ("FLUX.1 Kontext [dev], 28 steps, a 1024x1024 reference", ("flux-kontext-dev",),
                     "flux-kontext-dev", KONTEXT_CANDIDATES, 3.0, (7.0, 4.0)),
    "qwen-image-edit": ("Qwen-Image-Edit and -2509, 50 steps, a 1024x1024 reference",
                        ("qwen-image-edit", "qwen-image-edit-2509"), "qwen-image-edit", QWEN_EDIT_CANDIDATES, 3.0,
                        (7.0, 4.0)),
    "wan21-i2v-480p": ("Wan 2.1 I2V 14B 480p, 480x832, 81 frames, 50 steps, flow shift 3 (speed-ups with attention)",
                       ("wan2.1-i2v-14b-480p",), "wan2.1-i2v-14b-480p", WAN_CANDIDATES, 3.0, (7.0, 4.0)),
    "wan21-i2v-720p": ("Wan 2.1 I2V 14B 720p, 704x1280, 81 frames, 50 steps, flow shift 5 (speed-ups with attention)",
                       ("wan2.1-i2v-14b-720p",), "wan2.1-i2v-14b-720p", WAN_CANDIDATES, 3.0, (7.0, 4.0)),
    "wan22-i2v-a14b": ("Wan 2.2 I2V A14B, 480x832, 81 frames, 40 steps, flow shift 5 (speed-ups with attention)",
                       ("wan2.2-i2v-a14b",), "wan2.2-i2v-a14b", FORTY_STEP_WAN_CANDIDATES, 3.0, (7.0, 4.0)),
    "wan22-ti2v-5b-i2v": ("Wan 2.2 TI2V-5B from an image, 704x1280, 121 frames, 50 steps, flow shift 5 (speed-ups "
                          "with attention)", ("wan2.2-ti2v-5b-i2v",), "wan2.2-ti2v-5b-i2v", WAN_CANDIDATES, 3.0,
                          (7.0, 4.0)),
    "ltx2-512x768": ("LTX-2, 512x768, 121 frames, 30 steps, its dynamic shift and terminal 0.1 (speed-ups with "
                     "attention)", ("ltx-2",), "ltx-2", LTX2_CANDIDATES, 3.0, (7.0, 4.0)),
    "ltx2-768x1152": ("LTX-2, 768x1152, 121 frames, 30 steps, its dynamic shift and terminal 0.1 (speed-ups with "
                      "attention)", ("ltx-2",), "ltx-2", LTX2_CANDIDATES, 3.0, (7.0, 4.0)),
}


def transferred_ends(ends, source: float, h0: float) -> tuple:
    """Ends with the same share of a base sampler's steps before them under shift ``h0`` as
    under ``source`` (``F_h0^-1(F_source(e))``), rounded to 0.005."""
    return tuple(round(unshift_map(shift_map(e, source), h0) / 0.005) * 0.005 for e in ends[:-1]) + (1.0,)


def clip_base(model, resolution, frames) -> tuple:
    """``(h0, terminal)`` of a video model's own rule on a clip: its shift for the clip's tokens as the
    pipeline counts them (LTX-2: every latent pixel of every latent frame), and its grid's terminal."""
    spec = MODELS[model]
    rows, cols = spec.token_grid(*resolution)
    tokens = spec.latent_frames(frames) * rows * cols * getattr(spec.transformer, "tokens_per_token", 1)
    rule = shift_rule(model)
    return rule(tokens), rule.terminal


def family_layout(model, steps, ends, fractions=None, factors=None, shift=None, terminal=None):
    """A layout solved for ``model``'s own base sampler at 1024x1024 with as many steps (or on a
    fixed ``shift``: a video group's shift at its resolution, with its grid's ``terminal``)."""
    lay = Layout(steps=steps, ends=ends, fractions=fractions, factors=factors)
    if shift is not None:
        return lay.with_base(shift, terminal)
    rule = shift_rule(model)
    return lay.with_base(rule(4096, lay.total_steps), rule.terminal)


def family_table(group, seeds, size):
    """One group's search table; returns the chosen layout per target."""
    title, models, model, candidates, source, targets = GROUPS[group]
    base = MODEL_INFO[model].default_steps
    resolution, frames, shift, convention = VIDEO.get(group, (None, None, None, "paper"))
    terminal = None
    if resolution is not None and shift is None:
        shift, terminal = clip_base(model, resolution, frames)
        print(f"\n{model} at {resolution[0]}x{resolution[1]}, {frames} frames: shift {shift:.6g}, terminal {terminal}")
    family = lambda *a: family_layout(model, *a, shift=shift, terminal=terminal)  # noqa: E731
    field = GaussianField(height=size, width=size)
    be = GaussianBackend(field)
    print()
    print(f"{title}: candidates")
    print()
    print("| layout (steps; ends; fractions) | " + " | ".join(f"speed-up {m}" for m in models) + " | FD x1e3 |")
    print("|---|" + "---:|" * (len(models) + 1))

    def row(label, lay):
        ups = [layout_cost(lay, m, resolution, baseline_steps=MODEL_INFO[m].default_steps, frames=frames,
                           convention=convention).speedup for m in models]
        score = fd(be, field, solve(lay), seeds)
        print(f"| {label} | " + " | ".join(f"{u:.2f}x" for u in ups) + f" | {score:.2f} |")
        return ups[0], score

    for n in sorted({base} | {max(1, round(base / t)) for t in targets}, reverse=True):
        row(f"{n} steps, full resolution", family((n,), (1.0,)))
    scored, seen, skipped = [], set(), []
    for steps, ends, fractions, factors in candidates:
        h0 = family(steps, ends, fractions, factors).base_shift
        variants = [ends]
        moved = transferred_ends(ends, source, h0)
        if abs(math.log(h0 / source)) > math.log(1.2) and len(set(moved)) == len(moved) and moved[0] > 0:
            variants.append(moved)
        for e in variants:
            if (steps, e, fractions) in seen:
                continue
            seen.add((steps, e, fractions))
            lay = family(steps, e, fractions, factors)
            label = f"{steps}; {tuple(round(x, 3) for x in e)}; {fractions}".replace("(", "").replace(")", "")
            unit = MODELS[model].transformer.pixels_per_token * lay.downsampling
            if resolution is not None and any(v % unit for v in resolution):
                skipped.append(label.replace(",;", ";"))          # its coarsest stage cannot tile the clip
                continue
            scored.append((label.replace(",;", ";"), lay, *row(label.replace(",;", ";"), lay)))
    if skipped:
        print()
        pixels = MODELS[model].transformer.pixels_per_token
        print(f"Not tiling {resolution[0]}x{resolution[1]} (its sides are not multiples of {pixels} pixels x their "
              f"first stage's downsampling): " + "; ".join(f"`{x}`" for x in skipped))
    chosen = {}
    for t in targets:
        band = [c for c in scored if 0.9 * t <= c[2] <= 1.15 * t]
        if band:
            label, lay, up, score = min(band, key=lambda c: c[3])
            chosen[t] = (label, up, score)
    print()
    print(f"{title}: chosen")
    print()
    print("| target | layout | speed-up | FD x1e3 |")
    print("|---:|---|---:|---:|")
    for t, (label, up, score) in chosen.items():
        print(f"| {t:g}x | {label} | {up:.2f}x | {score:.2f} |")
    return chosen


def fd(be, field, schedule, seeds, _seen={}):
    """FD x1e3 of ``schedule``'s samples; remembered within a run (groups on the same base shift share
    layouts: their schedules, and so their FDs, are the same)."""
    key = (schedule.to_json(), field.height, field.width, seeds, getattr(be, "base_shift", None))
    if key not in _seen:
        x, _ = run(be, schedule, seeds)
        _seen[key] = 1e3 * spectrum_metrics(x, field)["fd"]
    return _seen[key]


def table(title, candidates, model, base_shift, seeds, size, refs):
    field = GaussianField(height=size, width=size)
    be = GaussianBackend(field, base_shift=base_shift)
    print()
    print(title)
    print()
    print("| layout (steps; ends; fractions) | TFLOPs | speed-up vs FLUX.1-dev 50 steps | FD x1e3 |")
    print("|---|---:|---:|---:|")
    for label, sched, lay in refs:
        c = layout_cost(lay, model, text_tokens=512)
        print(f"| {label} | {c.tflops:.1f} | {c.speedup:.2f}x | {fd(be, field, sched, seeds):.2f} |")
    for steps, ends, fractions, factors in candidates:
        lay = Layout(steps=steps, ends=ends, fractions=fractions, factors=factors, base_shift=base_shift)
        c = layout_cost(lay, model, text_tokens=512)
        label = f"{steps}; {ends}; {fractions}".replace("(", "").replace(")", "").replace(",;", ";")
        print(f"| {label} | {c.tflops:.1f} | {c.speedup:.2f}x | {fd(be, field, solve(lay), seeds):.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--which", nargs="+", choices=["dev-10x", "schnell", *GROUPS], default=["dev-10x", "schnell"])
    args = ap.parse_args(argv)
    if "dev-10x" in args.which:
        refs = [("flux-dev-7x (authors' parameters)", preset("flux-dev-7x"), preset("flux-dev-7x").layout)]
        for n in (4, 5):
            lay = Layout(steps=(n,), ends=(1.0,))
            refs.append((f"baseline {n} steps, full resolution", solve(lay), lay))
        table("FLUX.1-dev, h0 = 3: candidates for flux-dev-10x", DEV_CANDIDATES, "flux-dev", 3.0, args.seeds,
              args.size, refs)
    if "schnell" in args.which:
        lay = Layout(steps=(4,), ends=(1.0,), base_shift=1.0)
        refs = [("schnell 4 steps, full resolution", solve(lay), lay)]
        table("FLUX.1-schnell, shift 1.0, 512 text tokens: 4-step layouts", SCHNELL_CANDIDATES, "flux-schnell", 1.0,
              args.seeds, args.size, refs)
    for group in GROUPS:
        if group in args.which:
            family_table(group, args.seeds, args.size)


if __name__ == "__main__":
    main()
