"""Named schedules: the authors' FLUX layouts with their published parameters, and layouts
for the other supported models.

``preset(name)`` returns the schedule exactly as the authors' code runs it (their shifts,
their ``Z = 1/sqrt(c)``, ``h0 = 3``), for parity. ``preset(name, parameters="optimised")``
re-solves the same layout with :func:`ralu_schedule.solve`, taking ``h0`` (and a
``shift_terminal``) from the model's own scheduler rule at the preset's resolution and step
count (for FLUX.1-dev at 1024x1024 the dynamic shift gives ``h0 = e^1.15 = 3.158``, not 3).

Every preset says what its quality rests on (:data:`EVIDENCE`): only the authors' FLUX.1
presets were measured on the model (in the paper); the others were chosen on the analytic
Gaussian benchmark, or reuse a published layout, and have not been measured on their model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .grid import token_grid
from .layout import DEFAULT_BASE_SHIFT, Layout, Schedule
from .matching import solve
from .shift import shift_rule

#: What a preset's quality rests on, by kind.
EVIDENCE = {
    "published": "the authors' layout and parameters, measured on the model in the paper",
    "published layout": "the authors' FLUX.1 layout solved for this model's schedule; not measured on this model",
    "analytic benchmark": "chosen by measurement on exact Gaussian data (bench/preset_search.py); "
                          "not measured on the model",
}


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    model: str              # a key of ralu_schedule.MODEL_INFO, SHIFT_RULES and the cost model's MODELS
    resolution: tuple       # (height, width) in pixels the preset was made for
    layout: Layout          # with the h0 its parameters were made for
    shifts: tuple | None    # the authors' h_k (None: no published parameters)
    z: float | None         # the authors' Z = 1/sqrt(c)
    description: str
    evidence: str           # a key of EVIDENCE
    evidence_note: str = ""
    frames: int = 1         # video frames of the clip the preset was made for (1: an image)
    shift: float | None = None   # the fixed base shift it was searched on (a video pipeline's flow_shift at
                                 # its resolution); None: the model's shift rule at its resolution

    def __post_init__(self):
        if self.evidence not in EVIDENCE:
            raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, got {self.evidence!r}")

    @property
    def has_authors_parameters(self) -> bool:
        return self.shifts is not None

    @property
    def tokens(self) -> int:
        """Full-resolution image tokens at the preset's resolution."""
        rows, cols = token_grid(*self.resolution, downsampling=self.layout.downsampling, what=self.name)
        return rows * cols


def _flux(name, steps, ends, r, shifts, z, speed):
    # the authors' code reads h0 = 3 from scheduler.shift (METHOD section 7)
    layout = Layout(steps=steps, ends=ends, factors=(2, 2), fractions=(r, 1.0), base_shift=DEFAULT_BASE_SHIFT)
    return Preset(name=name, model="flux-dev", resolution=(1024, 1024), layout=layout,
                  shifts=shifts, z=z, evidence="published",
                  description=f"FLUX.1-dev {speed} speed-up, authors' layout and parameters")


def _sd3(name, flux_name, speed):
    lay = PRESETS[flux_name].layout   # same layout; SD3's static shift is h0
    return Preset(name=name, model="sd3-medium", resolution=(1024, 1024),
                  layout=lay.with_base_shift(shift_rule("sd3-medium").shift),
                  shifts=None, z=None, evidence="published layout",
                  evidence_note="the paper reports SD3 results, but its code and parameters cover FLUX only",
                  description=f"SD3-medium {speed} FLOP reduction: the FLUX {speed} layout solved for shift 3.0")


PRESETS: dict[str, Preset] = {p.name: p for p in [
    _flux("flux-dev-4x", (5, 6, 7), (0.3, 0.45, 1.0), 0.3, (5.019, 2.589, 2.226), 6.317, "4x"),
    _flux("flux-dev-7x", (2, 3, 5), (0.2, 0.3, 1.0), 0.1, (8.141, 2.856, 2.193), 6.261, "7x"),
]}
PRESETS.update({p.name: p for p in [_sd3("sd3-medium-4x", "flux-dev-4x", "4x"),
                                    _sd3("sd3-medium-7x", "flux-dev-7x", "7x")]})
# Chosen by measurement (bench/preset_search.py, docs/compose.md); solved by ralu_schedule, no published parameters.
PRESETS.update({p.name: p for p in [
    Preset(name="flux-dev-10x", model="flux-dev", resolution=(1024, 1024),
           layout=Layout(steps=(3, 2, 1, 3), ends=(0.2, 0.35, 0.45, 1.0), factors=(2, 2, 2), fractions=(1.0, 0.1, 1.0),
                         base_shift=DEFAULT_BASE_SHIFT),
           shifts=None, z=None, evidence="analytic benchmark",
           description="FLUX.1-dev 10.35x: 4 stages from 1/8 resolution, 10% of tokens early"),
    Preset(name="flux-schnell-16x", model="flux-schnell", resolution=(1024, 1024),
           layout=Layout(steps=(1, 1, 2), ends=(0.4, 0.55, 1.0), factors=(2, 2), fractions=(0.3, 1.0),
                         base_shift=shift_rule("flux-schnell").shift),
           shifts=None, z=None, evidence="analytic benchmark",
           evidence_note="the analytic velocity is exact; a distilled model's is not",
           description="FLUX.1-schnell's 4 steps as 1+1+2: 15.9x vs FLUX.1-dev 50 steps, 1.35x vs schnell 4 steps"),
]})



#: What the analytic benchmark does not see of the image-conditioned models (their presets' evidence note).
_REFERENCE_NOTE = ("; priced with the reference at full resolution in every call (RALU's default references='full'); "
                   "the benchmark has no reference image")


def _searched(name, model, steps, ends, fractions, factors, speed, versus, group, note=""):
    """A preset the analytic benchmark chose (bench/preset_search.py --which GROUP): solved for
    its model's own base sampler at 1024x1024 when used (``parameters="default"``)."""
    rule = shift_rule(model)
    layout = Layout(steps=steps, ends=ends, factors=factors, fractions=fractions)
    layout = layout.with_base(rule(4096, layout.total_steps), rule.terminal)
    return Preset(name=name, model=model, resolution=(1024, 1024), layout=layout, shifts=None, z=None,
                  evidence="analytic benchmark", evidence_note=f"python bench/preset_search.py --which {group}{note}",
                  description=f"{speed} fewer FLOPs than {versus} (cost model, 1024x1024)")


# The newer families (bench/preset_search.py; docs/cost.md): chosen on exact Gaussian data only.
_FLUX2_7X = dict(steps=(2, 3, 5), ends=(0.075, 0.12, 1.0), fractions=(0.1, 1.0), factors=(2, 2))
_FLUX2_4X = dict(steps=(5, 5, 8), ends=(0.125, 0.21, 1.0), fractions=(0.3, 1.0), factors=(2, 2))
PRESETS.update({p.name: p for p in [
    _searched("flux2-dev-7x", "flux2-dev", **_FLUX2_7X, speed="7.15x", versus="FLUX.2 [dev]'s 50 steps",
              group="flux2"),
    _searched("flux2-dev-4x", "flux2-dev", **_FLUX2_4X, speed="4.02x", versus="FLUX.2 [dev]'s 50 steps",
              group="flux2"),
    _searched("flux2-klein-base-4b-7x", "flux2-klein-base-4b", **_FLUX2_7X, speed="6.96x",
              versus="FLUX.2 [klein] base 4B's 50 steps", group="flux2"),
    _searched("flux2-klein-base-4b-4x", "flux2-klein-base-4b", **_FLUX2_4X, speed="3.96x",
              versus="FLUX.2 [klein] base 4B's 50 steps", group="flux2"),
    _searched("flux2-klein-base-9b-7x", "flux2-klein-base-9b", **_FLUX2_7X, speed="7.08x",
              versus="FLUX.2 [klein] base 9B's 50 steps", group="flux2"),
    _searched("flux2-klein-base-9b-4x", "flux2-klein-base-9b", **_FLUX2_4X, speed="4.00x",
              versus="FLUX.2 [klein] base 9B's 50 steps", group="flux2"),
    _searched("flux2-klein-4b-fast", "flux2-klein-4b", steps=(1, 3), ends=(0.04, 1.0), fractions=(1.0,), factors=(2,),
              speed="1.17x", versus="FLUX.2 [klein] 4B's 4 steps", group="flux2-klein"),
    _searched("flux2-klein-9b-fast", "flux2-klein-9b", steps=(1, 3), ends=(0.04, 1.0), fractions=(1.0,), factors=(2,),
              speed="1.18x", versus="FLUX.2 [klein] 9B's 4 steps", group="flux2-klein"),
    _searched("qwen-image-7x", "qwen-image", steps=(3, 3, 3, 4), ends=(0.275, 0.445, 0.55, 1.0),
              fractions=(1.0, 0.2, 1.0), factors=(2, 2, 2), speed="7.69x", versus="Qwen-Image's 50 steps",
              group="qwen-image"),
    _searched("qwen-image-4x", "qwen-image", steps=(5, 5, 8), ends=(0.3, 0.45, 1.0), fractions=(0.3, 1.0),
              factors=(2, 2), speed="4.18x", versus="Qwen-Image's 50 steps", group="qwen-image"),
    _searched("z-image-7x", "z-image", steps=(3, 3, 3, 4), ends=(0.11, 0.21, 0.29, 1.0), fractions=(1.0, 0.2, 1.0),
              factors=(2, 2, 2), speed="7.58x", versus="Z-Image's 50 steps", group="z-image"),
    _searched("z-image-4x", "z-image", steps=(6, 5, 7), ends=(0.21, 0.335, 1.0), fractions=(0.2, 1.0),
              factors=(2, 2), speed="4.55x", versus="Z-Image's 50 steps", group="z-image"),
    _searched("z-image-turbo-fast", "z-image-turbo", steps=(2, 6), ends=(0.4, 1.0), fractions=(1.0,), factors=(2,),
              speed="1.36x", versus="Z-Image-Turbo's 9 steps", group="z-image-turbo"),
    _searched("chroma-7x", "chroma", steps=(3, 2, 3), ends=(0.3, 0.45, 1.0), fractions=(0.1, 1.0), factors=(2, 2),
              speed="7.04x", versus="Chroma's 35 steps", group="chroma"),
    _searched("chroma-4x", "chroma", steps=(4, 3, 6), ends=(0.3, 0.4, 1.0), fractions=(0.2, 1.0), factors=(2, 2),
              speed="3.94x", versus="Chroma's 35 steps", group="chroma"),
]})
# Qwen-Image 2.1 (bench/preset_search.py --which qwen-image-2.1): chosen on exact Gaussian data only.
PRESETS.update({p.name: p for p in [
    _searched("qwen-image-2.1-7x", "qwen-image-2.1", steps=(3, 3, 4), ends=(0.39, 0.55, 1.0), fractions=(0.2, 1.0),
              factors=(2, 2), speed="6.31x", versus="Qwen-Image 2.1's 40 steps", group="qwen-image-2.1"),
    _searched("qwen-image-2.1-4x", "qwen-image-2.1", steps=(6, 5, 7), ends=(0.35, 0.5, 1.0), fractions=(0.2, 1.0),
              factors=(2, 2), speed="3.69x", versus="Qwen-Image 2.1's 40 steps", group="qwen-image-2.1"),
]})

# The editing models (bench/preset_search.py --which flux-kontext qwen-image-edit; docs/conditioned.md):
# priced with a 1024x1024 reference at full resolution in every call; Qwen-Image-Edit-2509 takes Qwen-Image-Edit's
# layouts (the search chose them for Qwen-Image-Edit, as FLUX.2 [klein] base takes [dev]'s).
_QWEN_EDIT_7X = dict(steps=(3, 2, 4), ends=(0.39, 0.55, 1.0), fractions=(0.2, 1.0), factors=(2, 2))
_QWEN_EDIT_4X = dict(steps=(4, 4, 6), ends=(0.3, 0.45, 1.0), fractions=(0.3, 1.0), factors=(2, 2))
PRESETS.update({p.name: p for p in [
    _searched("flux-kontext-dev-7x", "flux-kontext-dev", steps=(2, 1, 2), ends=(0.3, 0.45, 1.0), fractions=(0.1, 1.0),
              factors=(2, 2), speed="6.76x", versus="FLUX.1 Kontext [dev]'s 28 steps", group="flux-kontext",
              note=_REFERENCE_NOTE),
    _searched("flux-kontext-dev-4x", "flux-kontext-dev", steps=(3, 2, 4), ends=(0.3, 0.45, 1.0), fractions=(0.2, 1.0),
              factors=(2, 2), speed="3.72x", versus="FLUX.1 Kontext [dev]'s 28 steps", group="flux-kontext",
              note=_REFERENCE_NOTE),
    _searched("qwen-image-edit-7x", "qwen-image-edit", **_QWEN_EDIT_7X, speed="6.41x",
              versus="Qwen-Image-Edit's 50 steps", group="qwen-image-edit", note=_REFERENCE_NOTE),
    _searched("qwen-image-edit-4x", "qwen-image-edit", **_QWEN_EDIT_4X, speed="4.14x",
              versus="Qwen-Image-Edit's 50 steps", group="qwen-image-edit", note=_REFERENCE_NOTE),
    _searched("qwen-image-edit-2509-7x", "qwen-image-edit-2509", **_QWEN_EDIT_7X, speed="6.69x",
              versus="Qwen-Image-Edit-2509's 50 steps", group="qwen-image-edit", note=_REFERENCE_NOTE),
    _searched("qwen-image-edit-2509-4x", "qwen-image-edit-2509", **_QWEN_EDIT_4X, speed="4.29x",
              versus="Qwen-Image-Edit-2509's 50 steps", group="qwen-image-edit", note=_REFERENCE_NOTE),
]})


def _video(name, model, resolution, frames, shift, steps, ends, fractions, factors, speed, versus, group):
    """A video preset the analytic benchmark chose (bench/preset_search.py --which GROUP): solved on
    the pipeline's fixed flow shift at its resolution; speed-ups with attention included."""
    layout = Layout(steps=steps, ends=ends, factors=factors, fractions=fractions).with_base(shift, None)
    return Preset(name=name, model=model, resolution=resolution, frames=frames, layout=layout, shifts=None, z=None,
                  shift=shift, evidence="analytic benchmark",
                  evidence_note=f"python bench/preset_search.py --which {group}; the benchmark measures images, so "
                                "the time axis is not measured",
                  description=f"{speed} fewer FLOPs than {versus} (cost model, attention included, "
                              f"{resolution[0]}x{resolution[1]}, {frames} frames, flow shift {shift:g})")


# Wan 2.1 (bench/preset_search.py --which wan-480p wan-720p; docs/video.md): "720p" is 704x1280,
# since a 2x coarser first stage needs sides that are multiples of 32 pixels.
PRESETS.update({p.name: p for p in [
    _video("wan-480p-7x", "wan2.1-t2v-14b", (480, 832), 81, 3.0, (4, 3, 6), (0.3, 0.4, 1.0), (0.1, 1.0), (2, 2),
           "6.81x", "Wan 2.1 14B's 50 steps", "wan-480p"),
    _video("wan-480p-4x", "wan2.1-t2v-14b", (480, 832), 81, 3.0, (6, 7, 10), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2),
           "3.73x", "Wan 2.1 14B's 50 steps", "wan-480p"),
    _video("wan-720p-7x", "wan2.1-t2v-14b", (704, 1280), 81, 5.0, (5, 5, 5), (0.245, 0.375, 1.0), (0.2, 1.0),
           (2, 2), "7.37x", "Wan 2.1 14B's 50 steps", "wan-720p"),
    _video("wan-720p-4x", "wan2.1-t2v-14b", (704, 1280), 81, 5.0, (6, 7, 10), (0.205, 0.33, 1.0), (0.3, 1.0),
           (2, 2), "3.90x", "Wan 2.1 14B's 50 steps", "wan-720p"),
]})

# HunyuanVideo 1.5 (bench/preset_search.py --which hunyuanvideo1.5-480p hunyuanvideo1.5-720p; docs/video.md):
# 121 frames, the scheduler's shift at each size (5 at 480p, 9 at 720p), the pipeline's sizes on the 32-pixel grid.
PRESETS.update({p.name: p for p in [
    _video("hunyuanvideo1.5-480p-7x", "hunyuanvideo1.5-480p", (480, 832), 121, 5.0, (5, 5, 5), (0.245, 0.375, 1.0),
           (0.2, 1.0), (2, 2), "6.93x", "HunyuanVideo 1.5 480p's 50 steps", "hunyuanvideo1.5-480p"),
    _video("hunyuanvideo1.5-480p-4x", "hunyuanvideo1.5-480p", (480, 832), 121, 5.0, (6, 7, 10), (0.205, 0.33, 1.0),
           (0.3, 1.0), (2, 2), "3.79x", "HunyuanVideo 1.5 480p's 50 steps", "hunyuanvideo1.5-480p"),
    _video("hunyuanvideo1.5-720p-7x", "hunyuanvideo1.5-720p", (704, 1280), 121, 9.0, (4, 3, 6), (0.125, 0.18, 1.0),
           (0.1, 1.0), (2, 2), "7.12x", "HunyuanVideo 1.5 720p's 50 steps", "hunyuanvideo1.5-720p"),
    _video("hunyuanvideo1.5-720p-4x", "hunyuanvideo1.5-720p", (704, 1280), 121, 9.0, (6, 7, 10), (0.125, 0.215, 1.0),
           (0.3, 1.0), (2, 2), "3.98x", "HunyuanVideo 1.5 720p's 50 steps", "hunyuanvideo1.5-720p"),
]})

# Wan image-to-video (bench/preset_search.py --which wan21-i2v-480p wan21-i2v-720p wan22-i2v-a14b wan22-ti2v-5b-i2v;
# docs/cost.md): the text-to-video search's candidates and flow shifts, priced on the image-to-video models (the
# conditioning video's VAE encode and CLIP included); for Wan 2.1 I2V it chose the text-to-video presets' layouts.
PRESETS.update({p.name: p for p in [
    _video("wan21-i2v-480p-7x", "wan2.1-i2v-14b-480p", (480, 832), 81, 3.0, (4, 3, 6), (0.3, 0.4, 1.0), (0.1, 1.0),
           (2, 2), "6.77x", "Wan 2.1 I2V 14B 480p's 50 steps", "wan21-i2v-480p"),
    _video("wan21-i2v-480p-4x", "wan2.1-i2v-14b-480p", (480, 832), 81, 3.0, (6, 7, 10), (0.3, 0.45, 1.0), (0.3, 1.0),
           (2, 2), "3.71x", "Wan 2.1 I2V 14B 480p's 50 steps", "wan21-i2v-480p"),
    _video("wan21-i2v-720p-7x", "wan2.1-i2v-14b-720p", (704, 1280), 81, 5.0, (5, 5, 5), (0.245, 0.375, 1.0),
           (0.2, 1.0), (2, 2), "7.34x", "Wan 2.1 I2V 14B 720p's 50 steps", "wan21-i2v-720p"),
    _video("wan21-i2v-720p-4x", "wan2.1-i2v-14b-720p", (704, 1280), 81, 5.0, (6, 7, 10), (0.205, 0.33, 1.0),
           (0.3, 1.0), (2, 2), "3.89x", "Wan 2.1 I2V 14B 720p's 50 steps", "wan21-i2v-720p"),
    _video("wan22-i2v-a14b-7x", "wan2.2-i2v-a14b", (480, 832), 81, 5.0, (4, 4, 4), (0.245, 0.375, 1.0), (0.2, 1.0),
           (2, 2), "6.84x", "Wan 2.2 I2V A14B's 40 steps", "wan22-i2v-a14b"),
    _video("wan22-i2v-a14b-4x", "wan2.2-i2v-a14b", (480, 832), 81, 5.0, (5, 6, 8), (0.205, 0.33, 1.0), (0.3, 1.0),
           (2, 2), "3.65x", "Wan 2.2 I2V A14B's 40 steps", "wan22-i2v-a14b"),
    _video("wan22-ti2v-5b-i2v-7x", "wan2.2-ti2v-5b-i2v", (704, 1280), 121, 5.0, (4, 4, 4), (0.245, 0.375, 1.0),
           (0.2, 1.0), (2, 2), "6.39x", "Wan 2.2 TI2V-5B's 50 steps from an image", "wan22-ti2v-5b-i2v"),
    _video("wan22-ti2v-5b-i2v-4x", "wan2.2-ti2v-5b-i2v", (704, 1280), 121, 5.0, (10, 10), (0.375, 1.0), (1.0,),
           (2,), "3.86x", "Wan 2.2 TI2V-5B's 50 steps from an image", "wan22-ti2v-5b-i2v"),
]})


def _ltx2(name, resolution, steps, ends, fractions, factors, speed, group, frames=121):
    """An LTX-2 preset the analytic benchmark chose (bench/preset_search.py --which GROUP), solved on
    LTX2Pipeline's own rule for its clip: the dynamic shift of the clip's tokens (one per latent pixel
    of each latent frame: the VAE's 32x spatial, 8x temporal compression) and the terminal 0.1."""
    rule = shift_rule("ltx-2")
    rows, cols = token_grid(*resolution, pixels_per_token=32, what=name)
    shift = rule(((frames - 1) // 8 + 1) * rows * cols)
    layout = Layout(steps=steps, ends=ends, factors=factors, fractions=fractions).with_base(shift, rule.terminal)
    return Preset(name=name, model="ltx-2", resolution=resolution, frames=frames, layout=layout, shifts=None, z=None,
                  shift=shift, evidence="analytic benchmark",
                  evidence_note=f"python bench/preset_search.py --which {group}; the benchmark measures images, so "
                                "neither the time axis nor the audio is measured",
                  description=f"{speed} fewer FLOPs than LTX-2's 30 steps (cost model, attention included, video and "
                              f"audio, {resolution[0]}x{resolution[1]}, {frames} frames, shift {shift:.4g})")


# LTX-2 (bench/preset_search.py --which ltx2-512x768 ltx2-768x1152; docs/video.md). At 768x1152 the
# pipeline's shift is e^5.53 = 253 and no layout near 7x beat 4 full-resolution steps on the benchmark, so
# that resolution has a 4x preset only.
PRESETS.update({p.name: p for p in [
    _ltx2("ltx2-512x768-7x", (512, 768), (3, 2, 3), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2), "6.68x", "ltx2-512x768"),
    _ltx2("ltx2-512x768-4x", (512, 768), (6, 6), (0.155, 1.0), (1.0,), (2,), "3.97x", "ltx2-512x768"),
    _ltx2("ltx2-768x1152-4x", (768, 1152), (6, 6), (0.5, 1.0), (1.0,), (2,), "4.12x", "ltx2-768x1152"),
]})

#: The preset a run takes when it names none, by model (:mod:`ralu_schedule.models`).
DEFAULT_PRESETS = {
    "flux-dev": "flux-dev-7x", "flux-schnell": "flux-schnell-16x", "sd3-medium": "sd3-medium-7x",
    "sd3.5-medium": "sd3-medium-7x", "sd3.5-large": "sd3-medium-7x",
    "flux2-dev": "flux2-dev-7x", "flux2-klein-base-4b": "flux2-klein-base-4b-7x",
    "flux2-klein-base-9b": "flux2-klein-base-9b-7x", "flux2-klein-4b": "flux2-klein-4b-fast",
    "flux2-klein-9b": "flux2-klein-9b-fast", "qwen-image": "qwen-image-7x", "z-image": "z-image-7x",
    "z-image-turbo": "z-image-turbo-fast", "chroma": "chroma-7x",
    "wan2.1-t2v-1.3b": "wan-480p-7x", "wan2.1-t2v-14b": "wan-480p-7x", "wan2.2-t2v-a14b": "wan-720p-7x",
    "wan2.2-ti2v-5b": "wan-720p-7x",
    "qwen-image-2.1": "qwen-image-2.1-7x",
    "hunyuanvideo1.5-480p": "hunyuanvideo1.5-480p-7x", "hunyuanvideo1.5-480p-distilled": "hunyuanvideo1.5-480p-7x",
    "hunyuanvideo1.5-720p": "hunyuanvideo1.5-720p-7x", "hunyuanvideo1.5-720p-distilled": "hunyuanvideo1.5-720p-7x",
    "flux-kontext-dev": "flux-kontext-dev-7x", "qwen-image-edit": "qwen-image-edit-7x",
    "qwen-image-edit-2509": "qwen-image-edit-2509-7x",
    "wan2.1-i2v-14b-480p": "wan21-i2v-480p-7x", "wan2.1-i2v-14b-720p": "wan21-i2v-720p-7x",
    "wan2.2-i2v-a14b": "wan22-i2v-a14b-7x", "wan2.2-ti2v-5b-i2v": "wan22-ti2v-5b-i2v-7x",
    "ltx-2": "ltx2-512x768-7x",
}

PARAMETERS = ("default", "authors", "optimised")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None


def preset(name: str, parameters: str = "default") -> Schedule:
    """The schedule of preset ``name``.

    ``parameters="authors"``: the published parameters, exactly (FLUX presets);
    ``"optimised"``: our solver, ``h0`` from the model's scheduler rule at the preset's
    resolution; ``"default"``: the authors' where published, else optimised.
    """
    p = get_preset(name)
    if parameters not in PARAMETERS:
        raise ValueError(f"parameters must be one of {', '.join(PARAMETERS)}, got {parameters!r}")
    if parameters == "default":
        parameters = "authors" if p.has_authors_parameters else "optimised"
    if parameters == "optimised":
        if p.shift is not None:                      # searched on a fixed shift: solved on it
            return _solved(p.name, p.shift, p.layout.terminal)
        rule = shift_rule(p.model)
        return _solved(p.name, rule(p.tokens, p.layout.total_steps), rule.terminal)
    if not p.has_authors_parameters:
        raise ValueError(f"preset {name!r} has no published parameters; use parameters='optimised'")
    info = {"preset": p.name, "model": p.model, "resolution": list(p.resolution), "parameters": "authors"}
    c = 1.0 / p.z**2
    return Schedule(layout=p.layout, shifts=p.shifts, correlations=(c,) * (p.layout.num_stages - 1), info=info)


@functools.lru_cache(maxsize=32)
def _solved(name: str, h0: float, terminal: float | None) -> Schedule:
    p = PRESETS[name]
    info = {"preset": p.name, "model": p.model, "resolution": list(p.resolution), "parameters": "optimised"}
    return solve(p.layout.with_base(h0, terminal), info=info)
