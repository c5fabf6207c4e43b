"""The timestep shift map and the resolution-to-shift rules of FLUX and SD3.

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


@dataclass(frozen=True, kw_only=True)
class ShiftRule:
    """How a model's scheduler chooses its shift ``h`` for an image of ``tokens`` tokens.

    Dynamic rules (FLUX.1-dev) make ``mu`` linear in the token count through the two
    anchor points ``(base_seq_len, base_shift)`` and ``(max_seq_len, max_shift)`` and use
    ``h = exp(mu)`` (diffusers' ``time_shift_type="exponential"``) or ``h = mu``
    (``"linear"``). Static rules use ``shift`` whatever the size.
    """

    dynamic: bool
    shift: float = 1.0
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096
    time_shift_type: str = "exponential"

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

    def mu(self, tokens: int) -> float:
        """The dynamic-shift exponent for ``tokens`` image tokens (linear in ``tokens``)."""
        tokens = check_positive_int("tokens", tokens)
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return self.base_shift + slope * (tokens - self.base_seq_len)

    def __call__(self, tokens: int) -> float:
        """The shift ``h`` the model's scheduler uses for ``tokens`` image tokens."""
        if not self.dynamic:
            check_positive_int("tokens", tokens)
            return float(self.shift)
        mu = self.mu(tokens)
        if self.time_shift_type == "exponential" and mu > math.log(SHIFT_RANGE[1]):
            raise ValueError(f"{tokens} image tokens give a dynamic shift exp({mu:.3g}) beyond {SHIFT_RANGE[1]:g}, "
                             "the largest shift supported; use a smaller image")
        h = math.exp(mu) if self.time_shift_type == "exponential" else mu
        return _check_shift(h)

    @classmethod
    def from_scheduler_config(cls, config: Mapping) -> "ShiftRule":
        """Read the rule from a diffusers ``FlowMatchEulerDiscreteScheduler`` config."""
        get = config.get
        return cls(
            dynamic=bool(get("use_dynamic_shifting", False)),
            shift=float(get("shift", 1.0)),
            base_shift=float(get("base_shift", 0.5) or 0.5),
            max_shift=float(get("max_shift", 1.15) or 1.15),
            base_seq_len=int(get("base_image_seq_len", 256) or 256),
            max_seq_len=int(get("max_image_seq_len", 4096) or 4096),
            time_shift_type=str(get("time_shift_type", "exponential") or "exponential"),
        )


#: The shift rules of the supported models, as their published scheduler configs set them.
SHIFT_RULES: dict[str, ShiftRule] = {
    "flux-dev": ShiftRule(dynamic=True, shift=3.0, base_shift=0.5, max_shift=1.15,
                          base_seq_len=256, max_seq_len=4096),
    "flux-schnell": ShiftRule(dynamic=False, shift=1.0),
    "sd3-medium": ShiftRule(dynamic=False, shift=3.0),
    "sd3.5-medium": ShiftRule(dynamic=False, shift=3.0),
    "sd3.5-large": ShiftRule(dynamic=False, shift=3.0),
}


def shift_rule(model: str) -> ShiftRule:
    """The :class:`ShiftRule` of a named model (``flux-dev``, ``flux-schnell``, ``sd3-medium``, ...)."""
    try:
        return SHIFT_RULES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(SHIFT_RULES)}") from None
