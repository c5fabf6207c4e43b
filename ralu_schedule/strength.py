"""Starting from an image: where a ``strength`` puts the start of a run, discrete and continuous.

An image-to-image pipeline noises the encoded image to a point of its schedule and runs the
rest. diffusers' pipelines do it in two ways, both on the full ``N``-step grid of the
scheduler (:data:`ROUNDINGS`):

- ``"img2img"`` (``StableDiffusion3Img2ImgPipeline.get_timesteps`` and its copies in the
  FLUX.1, Chroma, Qwen-Image and Z-Image pipelines)::

      init_timestep = min(N * strength, N);   t_start = int(max(N - init_timestep, 0))

- ``"video2video"`` (``AnimateDiffVideoToVideoPipeline.get_timesteps``, which
  ``WanVideoToVideoPipeline`` copies)::

      init_timestep = min(int(N * strength), N);   t_start = max(N - init_timestep, 0)

then run ``timesteps[t_start * order:]``: the last ``N - t_start`` steps, from the grid's
point ``t_start``. Both are Python float arithmetic, reproduced here as written, rounding
included: at ``N = 25, strength = 0.56`` the first gives ``25 * 0.56 = 14.000000000000002``,
``t_start = int(10.999999999999998) = 10`` and runs 15 steps, not 14; at ``N = 50, strength =
0.58`` the second keeps ``int(28.999999999999996) = 28`` steps, not 29.
:func:`cut_index` is that arithmetic; a fixed schedule given with a strength is cut there
(:meth:`ralu_schedule.Schedule.cut`).

A layout solved for a strength has no grid of ``N`` to cut; it runs *all* its ``M`` steps on
the range the stock pipeline would cover, defined continuously. The base sampler places its
data-times with distribution function ``F`` (``F_h(t) = h t / (1 + (h - 1) t)``, or the
stretched grid's with a ``shift_terminal``, :mod:`ralu_schedule.distributions`); each of its
``N`` steps carries mass ``1/N``, and at strength ``s`` the pipeline keeps the last ``s N``
of them, so it starts where ``F(t0) = 1 - s`` (:func:`start_time`)::

    t0 = F^{-1}(1 - s),   sigma0 = 1 - t0 = shift_h0(s)     (no terminal)

That is the stock start exactly whenever ``N s`` is an integer (``t0`` is then the grid's
point ``t_start``), and the limit of the stock start as ``N`` grows otherwise. With a
terminal the grid's shape depends on its step count; the base sampler is the one whose
truncation to ``[t0, 1]`` holds the layout's ``M`` steps, ``N = M / s`` (:func:`base_steps`
finds ``N`` again from ``t0`` and ``M``). A layout's stage ends, chosen on the full range, keep
their share of the base sampler's steps on the shortened one (:func:`map_time`)::

    F_{M/s}(e') = 1 - s + s F_M(e)

so ``e = 0`` goes to ``t0`` and ``e = 1`` stays at 1; without a terminal this is
``unshifted(sigma') = s unshifted(sigma)``: the strength scales the unshifted sigma axis.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._errors import brief, check_finite, check_positive_int
from .distributions import stretched_cdf
from .shift import shift_map, unshift_map

#: How a pipeline turns ``(steps, strength)`` into the index of its first step (module docstring).
ROUNDINGS = ("img2img", "video2video")


def check_strength(strength) -> float:
    """A strength: a real number in ``(0, 1]`` (0 would run no step; a NaN is refused)."""
    if isinstance(strength, (bool, np.bool_)) or not isinstance(strength, numbers.Real):
        raise ValueError(f"strength must be a number in (0, 1], got {brief(strength)}")
    s = float(strength)
    if not (0.0 < s <= 1.0):           # NaN fails this too
        raise ValueError(f"strength must lie in (0, 1] (1 starts from pure noise, smaller keeps more of the image), "
                         f"got {s:g}")
    return s


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {brief(rounding)}")
    return rounding


def cut_index(steps: int, strength: float, rounding: str = "img2img") -> int:
    """``t_start``: how many leading steps of an ``steps``-step grid a pipeline drops at
    ``strength``, in the pipeline's own arithmetic (module docstring)."""
    n = check_positive_int("steps", steps)
    s = check_strength(strength)
    if check_rounding(rounding) == "img2img":
        init_timestep = min(n * s, n)
        return int(max(n - init_timestep, 0))
    init_timestep = min(int(n * s), n)
    return max(n - init_timestep, 0)


def kept_steps(steps: int, strength: float, rounding: str = "img2img") -> int:
    """Steps a pipeline runs of its ``steps``-step grid at ``strength``."""
    return steps - cut_index(steps, strength, rounding)


def _stretched(terminal, steps) -> bool:
    return terminal is not None and steps >= 2


def base_cdf(t, base_shift: float, terminal: float | None = None, steps: float = 1.0):
    """``F(t)``: the fraction of a base sampler's steps before data-time ``t`` (shift
    ``base_shift``; with a ``terminal``, its ``steps``-step stretched grid, ``steps`` any
    real number from 2 up)."""
    if _stretched(terminal, steps):
        return stretched_cdf(np.asarray(t, dtype=np.float64), base_shift, 0.0, steps, terminal)
    return shift_map(np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0), base_shift)


def base_ppf(q, base_shift: float, terminal: float | None = None, steps: float = 1.0):
    """The inverse of :func:`base_cdf`: the data-time before which a fraction ``q`` of the
    base sampler's steps lies. On the stretched grid (start 0) ``F(t) = shift(t k)`` up to
    ``t = 1 - terminal`` with ``k = knee / (1 - terminal)``, ``knee`` the unstretched grid's
    last interior point, and linear over the last step."""
    q = np.asarray(q, dtype=np.float64)
    if not _stretched(terminal, steps):
        return unshift_map(q, base_shift)
    last = (steps - 1.0) / steps                                   # F at the last step's start
    k = unshift_map(last, base_shift) / (1.0 - terminal)
    t = np.where(q <= last, unshift_map(np.minimum(q, last), base_shift) / k,
                 1.0 - terminal + (q - last) * steps * terminal)
    return t if t.ndim else float(t)


def start_time(strength: float, base_shift: float, terminal: float | None = None, steps: int = 1) -> float:
    """``t0``: where a run of ``steps`` steps at ``strength`` starts under the continuous
    definition, ``F_N(t0) = 1 - strength`` with ``N = steps / strength`` (module docstring)."""
    s = check_strength(strength)
    m = check_positive_int("steps", steps)
    return float(base_ppf(1.0 - s, base_shift, terminal, m / s))


def base_steps(start: float, base_shift: float, terminal: float | None, steps: int) -> float:
    """``N``: the step count of the base sampler whose truncation to ``[start, 1]`` holds
    ``steps`` of its steps, ``N (1 - F_N(start)) = steps``: ``steps / strength`` for the
    ``start`` of :func:`start_time`. Without a terminal ``F`` does not depend on ``N``; with
    one, ``N`` is found by bracketing (``N = steps`` at ``start = 0``, growing with it)."""
    t0 = check_finite("start", start)
    m = check_positive_int("steps", steps)
    if t0 == 0.0:
        return float(m)
    if terminal is None:
        return m / (1.0 - float(base_cdf(t0, base_shift)))
    if not 0.0 < t0 < 1.0 - terminal:
        raise ValueError(f"with terminal {terminal:g} a run must start before t = {1.0 - terminal:g}, got {t0:g}")
    from scipy.optimize import brentq

    # in a = 1 / N: g(a) = 1 - m a - F_{1/a}(t0) falls from 1 - F(t0) > 0 (a -> 0) to <= 0 at a = 1 / m
    g = lambda a: 1.0 - m * a - float(base_cdf(t0, base_shift, terminal, 1.0 / a))  # noqa: E731
    hi = 1.0 / m
    if g(hi) >= 0.0:
        return float(m)
    lo = hi
    while g(lo) <= 0.0:
        lo /= 2.0
        if lo < 1e-12:
            raise ValueError(f"no base sampler holds {m} steps after t = {t0:g} (terminal {terminal:g})")
    return 1.0 / brentq(g, lo, hi, xtol=1e-15, rtol=1e-14)


def map_time(t, strength: float, base_shift: float, terminal: float | None = None, steps: int = 1):
    """Data-time ``t`` of a layout on the full range moved to the range of ``strength``: the
    same share of the base sampler's steps, ``F_{M/s}(t') = 1 - s + s F_M(t)`` (module
    docstring; ``steps`` is ``M``). ``t = 0`` goes to :func:`start_time`, ``t = 1`` stays."""
    s = check_strength(strength)
    m = check_positive_int("steps", steps)
    q = 1.0 - s + s * base_cdf(t, base_shift, terminal, float(m))
    out = base_ppf(q, base_shift, terminal, m / s)
    out = np.where(np.asarray(t) >= 1.0, 1.0, out)
    return out if np.ndim(out) else float(out)


def describe_cut(steps: int, strength: float, rounding: str, pipeline: str = "the pipeline") -> str:
    """``"int(4 x 0.6) ..."``-style words for an error message: what ``pipeline`` keeps."""
    kept = kept_steps(steps, strength, rounding)
    how = (f"int({steps} - {steps} x {strength:g})" if rounding == "img2img" else f"{steps} - int({steps} x {strength:g})")
    return f"{pipeline} drops {how} = {steps - kept} of {steps} steps and runs {kept}"
