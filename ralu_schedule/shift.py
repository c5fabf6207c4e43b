"""The timestep shift map and the resolution-to-shift rules of the supported models.

Conventions (METHOD section 1): data-time ``t`` runs from 0 (noise) to 1 (data) and
diffusers' ``sigma = 1 - t``. A shift ``h`` maps an unshifted sigma ``u`` to

    shift_h(u) = h u / (1 + (h - 1) u)

which, for ``h > 1``, spends more steps at high noise. One function serves every model;
the rule that turns an image's token count into ``h`` is data (:class:`ShiftRule`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ._errors import SHIFT_RANGE, check_finite, check_positive_int, check_shift


def _check_shift(h) -> float:
    return check_shift("shift", h)


def shift_map(u, h):
    """The shift map ``h u / (1 + (h - 1) u)``, unchecked; broadcasts ``u`` against ``h``.

    The one place this formula is written. It is also the distribution function
    ``F_h(t)`` of a shifted sampler's data-times (:mod:`ralu_schedule.distributions`).
    """
    return h * u / (1.0 + (h - 1.0) * u)


def unshift_map(q, h):
    """Inverse of :func:`shift_map`: ``q / (h - (h - 1) q)``, unchecked; broadcasts."""
    return q / (h - (h - 1.0) * q)


def shift_sigmas(sigma, h):
    """Shift sigmas: ``h * sigma / (1 + (h - 1) * sigma)``. Broadcasts over arrays."""
    return shift_map(np.asarray(sigma, dtype=np.float64), _check_shift(h))


def unshift_sigmas(sigma, h):
    """Inverse of :func:`shift_sigmas`: ``sigma / (h - (h - 1) * sigma)``."""
    return unshift_map(np.asarray(sigma, dtype=np.float64), _check_shift(h))


#: How a dynamic rule turns an image's token count into ``mu``: ``"linear"`` is diffusers'
#: ``calculate_shift`` (FLUX.1-dev, Qwen-Image, Chroma: ``mu`` linear in the token count through
#: two anchor points from the scheduler config); ``"flux2"`` is the FLUX.2 pipelines'
#: ``compute_empirical_mu``, which depends on the step count too.
MU_RULES = ("linear", "flux2")

#: ``compute_empirical_mu`` of diffusers' FLUX.2 pipelines, as data: two lines in the token
#: count ``mu = a N + b`` fitted at 10 and at 200 steps, interpolated linearly in the step
#: count up to 4300 tokens; beyond 4300 tokens the 200-step line alone.
FLUX2_MU = {"steps_10": (8.73809524e-05, 1.89833333), "steps_200": (0.00016927, 0.45666666), "max_tokens": 4300}


@dataclass(frozen=True, kw_only=True)
class ShiftRule:
    """How a model's scheduler chooses its shift ``h`` for an image of ``tokens`` tokens
    sampled in ``steps`` steps, and where its grid ends.

    Static rules use ``shift`` whatever the size. Dynamic rules compute an exponent ``mu``
    (:data:`MU_RULES`: ``"linear"`` through the anchor points ``(base_seq_len, base_shift)``
    and ``(max_seq_len, max_shift)``, or FLUX.2's ``"flux2"``, which also depends on the step
    count) and use ``h = exp(mu)`` (diffusers' ``time_shift_type="exponential"``) or
    ``h = mu`` (``"linear"``). ``terminal`` is diffusers' ``shift_terminal``: the scheduler
    stretches its shifted grid so that the last step starts at ``sigma = terminal``
    (Qwen-Image: 0.02); ``None`` for none.
    """

    dynamic: bool
    shift: float = 1.0
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096
    time_shift_type: str = "exponential"
    mu_rule: str = "linear"
    terminal: float | None = None

    def __post_init__(self):
        _check_shift(self.shift)
        check_finite("base_shift", self.base_shift)
        check_finite("max_shift", self.max_shift)
        check_positive_int("base_seq_len", self.base_seq_len)
        check_positive_int("max_seq_len", self.max_seq_len)
        if self.max_seq_len == self.base_seq_len:
            raise ValueError("max_seq_len must differ from base_seq_len, "
                             f"both are {self.base_seq_len}")
        if self.time_shift_type not in ("exponential", "linear"):
            raise ValueError("time_shift_type must be 'exponential' or 'linear', "
                             f"got {self.time_shift_type!r}")
        if self.mu_rule not in MU_RULES:
            raise ValueError(f"mu_rule must be one of {', '.join(MU_RULES)}, got {self.mu_rule!r}")
        if self.terminal is not None:
            object.__setattr__(self, "terminal", check_terminal(self.terminal))

    @property
    def needs_steps(self) -> bool:
        """Whether the shift depends on the step count (FLUX.2's dynamic rule)."""
        return self.dynamic and self.mu_rule == "flux2"

    def mu(self, tokens: int, steps: int | None = None) -> float:
        """The dynamic-shift exponent for ``tokens`` image tokens (and ``steps`` steps, which
        the ``"flux2"`` rule needs)."""
        tokens = check_positive_int("tokens", tokens)
        if self.mu_rule == "flux2":
            if steps is None:
                raise ValueError("FLUX.2's shift depends on the step count: pass steps")
            steps = check_positive_int("steps", steps)
            a2, b2 = FLUX2_MU["steps_200"]
            if tokens > FLUX2_MU["max_tokens"]:
                return a2 * tokens + b2
            a1, b1 = FLUX2_MU["steps_10"]
            m200, m10 = a2 * tokens + b2, a1 * tokens + b1
            slope = (m200 - m10) / 190.0
            return slope * steps + (m200 - 200.0 * slope)
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return self.base_shift + slope * (tokens - self.base_seq_len)

    def __call__(self, tokens: int, steps: int | None = None) -> float:
        """The shift ``h`` the model's scheduler uses for ``tokens`` image tokens (in
        ``steps`` steps: only FLUX.2's rule reads it)."""
        if not self.dynamic:
            check_positive_int("tokens", tokens)
            return float(self.shift)
        mu = self.mu(tokens, steps)
        if self.time_shift_type == "exponential" and mu > math.log(SHIFT_RANGE[1]):
            raise ValueError(f"{tokens} image tokens give a dynamic shift exp({mu:.3g}) beyond {SHIFT_RANGE[1]:g}, "
                             "the largest shift supported; use a smaller image")
        h = math.exp(mu) if self.time_shift_type == "exponential" else mu
        return _check_shift(h)

    @classmethod
    def from_scheduler_config(cls, config: Mapping, *, mu_rule: str = "linear") -> "ShiftRule":
        """Read the rule from a diffusers ``FlowMatchEulerDiscreteScheduler`` config, or from a
        multistep scheduler on flow sigmas (``UniPCMultistepScheduler`` or
        ``DPMSolverMultistepScheduler`` with ``use_flow_sigmas``, as Wan ships), whose fixed
        shift is its ``flow_shift``. ``mu_rule``: how the pipeline computes ``mu`` for that
        scheduler (``"flux2"`` for the FLUX.2 pipelines); used only when the config enables
        dynamic shifting, as the scheduler ignores ``mu`` otherwise."""
        get = config.get
        shift = get("shift")
        if shift is None:
            shift = get("flow_shift", 1.0) if get("use_flow_sigmas", False) else 1.0
        return cls(
            dynamic=bool(get("use_dynamic_shifting", False)),
            shift=float(shift),
            base_shift=float(get("base_shift", 0.5) or 0.5),
            max_shift=float(get("max_shift", 1.15) or 1.15),
            base_seq_len=int(get("base_image_seq_len", 256) or 256),
            max_seq_len=int(get("max_image_seq_len", 4096) or 4096),
            time_shift_type=str(get("time_shift_type", "exponential") or "exponential"),
            mu_rule=mu_rule,
            terminal=get("shift_terminal") or None,     # diffusers: None, 0 or false mean none
        )


def check_terminal(value) -> float:
    """A ``shift_terminal``: the sigma where a grid's last step starts, in ``(0, 1)``."""
    t = check_finite("terminal (shift_terminal)", value)
    if not 0.0 < t < 1.0:
        raise ValueError(f"terminal (shift_terminal) must lie in (0, 1), got {t:g}")
    return t


#: The shift rules of the supported models, as their published scheduler configs set them.
SHIFT_RULES: dict[str, ShiftRule] = {
    "flux-dev": ShiftRule(dynamic=True, shift=3.0, base_shift=0.5, max_shift=1.15,
                          base_seq_len=256, max_seq_len=4096),
    "flux-schnell": ShiftRule(dynamic=False, shift=1.0),
    "sd3-medium": ShiftRule(dynamic=False, shift=3.0),
    "sd3.5-medium": ShiftRule(dynamic=False, shift=3.0),
    "sd3.5-large": ShiftRule(dynamic=False, shift=3.0),
    # FLUX.2 [dev] and [klein]: the FLUX.2 pipelines pass compute_empirical_mu to a scheduler with
    # dynamic shifting on, whatever its base/max shift say
    **{name: ShiftRule(dynamic=True, shift=3.0, mu_rule="flux2")
       for name in ("flux2-dev", "flux2-klein-4b", "flux2-klein-9b", "flux2-klein-base-4b", "flux2-klein-base-9b")},
    # Qwen-Image: calculate_shift up to 8192 tokens, and a grid stretched to end at sigma 0.02
    "qwen-image": ShiftRule(dynamic=True, shift=1.0, base_shift=0.5, max_shift=0.9, base_seq_len=256,
                            max_seq_len=8192, terminal=0.02),
    # Z-Image: a static shift (the pipeline's mu is ignored by a scheduler without dynamic shifting)
    "z-image-turbo": ShiftRule(dynamic=False, shift=3.0),
    "z-image": ShiftRule(dynamic=False, shift=6.0),
    # Chroma: FLUX.1's calculate_shift anchors, dynamic
    "chroma": ShiftRule(dynamic=True, shift=1.0, base_shift=0.5, max_shift=1.15, base_seq_len=256,
                        max_seq_len=4096),
    # Wan: UniPC on flow sigmas with a fixed flow_shift, set for the resolution: the model cards'
    # 3.0 at 480p and 5.0 at 720p for Wan 2.1 (the 1.3B model is a 480p model); Wan 2.2 A14B's
    # original configuration samples at 12.0, TI2V-5B at 5.0. The presets carry their own.
    "wan2.1-t2v-1.3b": ShiftRule(dynamic=False, shift=3.0),
    "wan2.1-t2v-14b": ShiftRule(dynamic=False, shift=5.0),
    "wan2.2-t2v-a14b": ShiftRule(dynamic=False, shift=12.0),
    "wan2.2-ti2v-5b": ShiftRule(dynamic=False, shift=5.0),
    # HunyuanVideo 1.5: FlowMatchEulerDiscreteScheduler(shift=...) as diffusers' conversion script writes it,
    # 5.0 for the 480p checkpoints, 9.0 for the 720p ones (CFG-distilled or not)
    **{f"hunyuanvideo1.5-{size}{kind}": ShiftRule(dynamic=False, shift=shift)
       for size, shift in (("480p", 5.0), ("720p", 9.0)) for kind in ("", "-distilled")},
    # Qwen-Image 2.1: Qwen-Image's calculate_shift anchors (tokens: one per latent pixel) and terminal
    "qwen-image-2.1": ShiftRule(dynamic=True, shift=1.0, base_shift=0.5, max_shift=0.9, base_seq_len=256,
                                max_seq_len=8192, terminal=0.02),
    # image-conditioned: FLUX.1 Kontext and Qwen-Image-Edit ship their text-to-image family's scheduler
    # configuration; Wan image-to-video: the model cards' 3.0 at 480p and 5.0 at 720p for Wan 2.1 I2V, the
    # reference Wan 2.2 I2V-A14B and TI2V-5B configurations' 5.0
    "flux-kontext-dev": ShiftRule(dynamic=True, shift=3.0, base_shift=0.5, max_shift=1.15,
                                  base_seq_len=256, max_seq_len=4096),
    **{name: ShiftRule(dynamic=True, shift=1.0, base_shift=0.5, max_shift=0.9, base_seq_len=256, max_seq_len=8192,
                       terminal=0.02) for name in ("qwen-image-edit", "qwen-image-edit-2509")},
    "wan2.1-i2v-14b-480p": ShiftRule(dynamic=False, shift=3.0),
    "wan2.1-i2v-14b-720p": ShiftRule(dynamic=False, shift=5.0),
    "wan2.2-i2v-a14b": ShiftRule(dynamic=False, shift=5.0),
    "wan2.2-ti2v-5b-i2v": ShiftRule(dynamic=False, shift=5.0),
    # LTX-2: LTX2Pipeline's calculate_shift on the clip's tokens (one per latent pixel of every latent frame),
    # anchors 1024 -> 0.95 and 4096 -> 2.05, and a grid stretched to end at sigma 0.1 (LTX-Video's scheduler config)
    "ltx-2": ShiftRule(dynamic=True, shift=1.0, base_shift=0.95, max_shift=2.05, base_seq_len=1024, max_seq_len=4096,
                       terminal=0.1),
}


def shift_rule(model: str) -> ShiftRule:
    """The :class:`ShiftRule` of a named model (``flux-dev``, ``flux-schnell``, ``sd3-medium``, ...)."""
    try:
        return SHIFT_RULES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(SHIFT_RULES)}") from None
