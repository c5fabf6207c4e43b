"""Quality without weights: RALU and its ablations on the analytic Gaussian backend.

Every configuration runs through :func:`ralu_torch.sampler.sample` on
:class:`~ralu_torch.backends.gaussian.GaussianField` data, whose true distribution is known
exactly. Metrics, from many seeds:

- ``fd``: the Frechet distance to the data distribution per value, for stationary
  zero-mean Gaussians ``sum_k (sqrt(lambda_hat_k) - sqrt(lambda_k))^2 / (C H W)``, with
  ``lambda_hat`` the samples' per-mode power (exact for stationary Gaussian samples; a
  summary otherwise);
- band errors: the mean ``log10(lambda_hat / lambda)`` of the radially averaged spectrum in
  frequency bands (negative = missing power); aliasing from late upsampling shows in the
  band above the low-resolution grid's Nyquist frequency (0.25 cycles per pixel);
- ``var``: the samples' variance per value (the data have 1).

The "exact" row samples the data distribution itself with the same number of draws: the
floor that finite sampling leaves in every metric.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ralu_schedule import Layout, Plan, Schedule, get_preset, solve
from ralu_schedule.cost import get_model, layout_cost
from ralu_schedule.layout import Stage

from ..backends.gaussian import GaussianBackend, GaussianField
from ..sampler import sample
from ..tokens import unpack

BANDS = ((0.0, 0.0625), (0.0625, 0.125), (0.125, 0.25), (0.25, 0.75))


def without_reinjection(s: Schedule) -> Plan:
    """Naive late upsampling: ``x = U(x_e)``, the next stage starts where the last ended."""
    stages = tuple(Stage(st.start if k == 0 else s.layout.ends[k - 1], st.end, st.steps, st.shift)
                   for k, st in enumerate(s.stages))
    trans = tuple(dataclasses.replace(t, restart=t.at, a=1.0, b=0.0) for t in s.transitions)
    return Plan(layout=s.layout, stages=stages, transitions=trans)


def uncorrelated_noise(s: Schedule) -> Plan:
    """Re-injection with the same ``s, a, b`` but i.i.d. noise (``c = 0`` in the covariance)."""
    return dataclasses.replace(s.plan, transitions=tuple(dataclasses.replace(t, c=0.0) for t in s.transitions))


def unmatched_timesteps(s: Schedule) -> Schedule:
    """Correlated noise, but every stage keeps the base shift ``h0`` (no NT-matching)."""
    return Schedule(layout=s.layout, shifts=(s.layout.base_shift,) * s.layout.num_stages,
                    correlations=s.correlations, info={"ablation": "no timestep matching"})


def without_mixed_stage(s: Schedule) -> Schedule:
    """Mixed resolution off: the first two stages merge into one low-resolution stage."""
    lay = s.layout
    merged = Layout(steps=(lay.steps[0] + lay.steps[1],) + lay.steps[2:], ends=lay.ends[1:],
                    factors=lay.factors[1:], fractions=lay.fractions[1:], base_shift=lay.base_shift)
    return solve(merged)


def flop_matched_steps(name: str, model: str = "flux-dev", solver: str = "euler") -> int:
    """Model calls of a full-resolution baseline with the preset's FLOPs (cost model,
    1024x1024) when the preset runs with ``solver``; Euler steps for the default solver."""
    p = get_preset(name)
    c = layout_cost(p.layout, model, (1024, 1024), solver=solver)
    per_step = get_model(model).step(4096).total("paper") / 1e12
    return max(1, round((c.tflops - c.text_encoding_tflops - c.decode_tflops) / per_step))


#: The ablation table of a preset: row label -> ``ralu eval`` configuration ({name}: the preset,
#: {n}: the full-resolution steps with its FLOPs), run by ``bench/quality.py`` and ``ralu eval``.
ABLATION_TABLE = (
    ("baseline {n} steps (same FLOPs)", "baseline:{n}"),
    ("naive late upsampling (no noise)", "{name}+ablation:naive-upsampling"),
    ("re-injection, uncorrelated noise", "{name}+ablation:uncorrelated-noise"),
    ("correlated noise, no timestep matching", "{name}+ablation:unmatched-timesteps"),
    ("RALU, authors' parameters", "{name}"),
    ("RALU, re-optimised parameters", "{name}+parameters:optimised"),
    ("RALU, token-repeat upsampling", "{name}+upsample:token"),
    ("RALU, kept tokens variance 1 (authors)", "{name}+kept-noise:unit"),
    ("RALU, mixed resolution off", "{name}+ablation:no-mixed-stage"),
)


def ablation_configs(name: str) -> dict:
    """The ablation table for preset ``name``: label -> ``ralu eval`` configuration string."""
    n = flop_matched_steps(name)
    return {label.format(n=n): text.format(name=name, n=n) for label, text in ABLATION_TABLE}


def spectrum_metrics(samples: torch.Tensor, field: GaussianField) -> dict:
    """FD, band errors and variance of ``samples`` (N, C, H, W) against ``field``."""
    x = samples.to(torch.float64)
    H, W = x.shape[-2:]
    power = (torch.fft.fft2(x).abs() ** 2 / (H * W)).mean(dim=(0, 1))
    lam = field.spectrum(1)
    fd = float(((power.sqrt() - lam.sqrt()) ** 2).sum() / (H * W))
    ky = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(W, dtype=torch.float64)[None, :]
    kr = (ky**2 + kx**2).sqrt()
    ratio = (power / lam).log10()
    bands = [float(ratio[(kr >= lo) & (kr < hi)].mean()) for lo, hi in BANDS]
    return {"fd": fd, "bands": bands, "var": float(x.var())}


def detail(x: torch.Tensor) -> torch.Tensor:
    """What a grid of half the resolution cannot hold: ``x - U(pool(x))`` (2x2 pooling, nearest ``U``)."""
    coarse = torch.nn.functional.avg_pool2d(x, 2)
    return x - coarse.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def region_metrics(samples: torch.Tensor, field) -> dict:
    """Detail energy where a :class:`TexturePatchField` sample has its texture, and elsewhere.

    ``texture``: per sample, the mean squared :func:`detail` in the candidate region where it
    is largest (the region the sample textured); ``background``: outside all candidate
    regions. Compare against exact data samples (the region-adaptive part of RALU exists
    to get the first right without spending tokens on the second).
    """
    d2 = (detail(samples.to(torch.float64)) ** 2).mean(dim=1)               # (N, H, W)
    masks = field.masks()
    per_region = torch.einsum("nhw,khw->nk", d2, masks) / masks.sum(dim=(1, 2))
    outside = (masks.sum(dim=0) == 0).to(torch.float64)
    return {"texture": float(per_region.max(dim=1).values.mean()),
            "background": float((d2 * outside).sum(dim=(1, 2)).mean() / outside.sum())}


def selection_hit_rate(result, samples: torch.Tensor, field) -> float | None:
    """Share of the tokens upsampled at the first partial transition whose centre lies in the
    region each final sample textured (``None`` without a partial transition). The region's
    share of the field is the rate of a blind choice."""
    rec = next((r for r in result.transitions if r.estimate is not None), None)
    if rec is None:
        return None
    masks = field.masks()
    d2 = (detail(samples.to(torch.float64)) ** 2).mean(dim=1)
    region = torch.einsum("nhw,khw->nk", d2, masks).argmax(dim=1)
    ppt = 2                                                    # pixels per full-resolution token
    size = rec.before.size.to(torch.float64)
    centre = (rec.before.cells.to(torch.float64) + size[..., None] / 2) * ppt
    y = centre[..., 0].long().clamp(max=field.height - 1)
    x = centre[..., 1].long().clamp(max=field.width - 1)
    inside = masks[region][torch.arange(len(region))[:, None], y, x]   # (N, L)
    return float((inside * rec.selected).sum() / rec.selected.sum())


def radial_log_ratio(samples: torch.Tensor, field: GaussianField, bins: int = 24):
    """Radially averaged ``log10(power / lambda)`` against frequency, for plots."""
    x = samples.to(torch.float64)
    H, W = x.shape[-2:]
    power = (torch.fft.fft2(x).abs() ** 2 / (H * W)).mean(dim=(0, 1))
    kr = (torch.fft.fftfreq(H, dtype=torch.float64)[:, None] ** 2
          + torch.fft.fftfreq(W, dtype=torch.float64)[None, :] ** 2).sqrt()
    edges = np.linspace(0, 0.5, bins + 1)
    ratio = (power / field.spectrum(1)).log10().numpy()
    k = kr.numpy()
    centres, values = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (k >= lo) & (k < hi) & (k > 0)
        if m.any():
            centres.append(0.5 * (lo + hi))
            values.append(ratio[m].mean())
    return np.array(centres), np.array(values)


def run(backend: GaussianBackend, schedule, n: int, seed: int = 0, **options):
    """``n`` samples ``(n, C, H, W)`` and the sampler's result (one batch, one generator per image)."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    res = sample(backend, schedule, None, batch=n, grid=backend.grid, generator=gens, record=True, **options)
    return unpack(res.latents, backend.grid), res


class TaylorVelocity:
    """A backend whose velocity is cached the TaylorSeer way: on the full steps of
    ``policy`` (:class:`ralu_schedule.caching.TaylorSeerPolicy`) the wrapped backend computes
    it; on the others it is extrapolated from the last full steps by finite differences in the
    step index, to ``policy.order`` (order 0 reuses the last velocity). History restarts with
    every stage (``prepare``), as RALU resets diffusers' caches. Everything else is the
    wrapped backend's. Counts ``full`` and ``predicted`` calls."""

    def __init__(self, backend, policy):
        self._backend, self.policy = backend, policy
        self.full = self.predicted = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def prepare(self, tokens, cond=None):
        self._step, self._history = 0, []
        self._full_steps = None
        return self._backend.prepare(tokens, cond)

    def velocity(self, x, positions, sigma, cond=None):
        j = self._step
        self._step += 1
        if self._full_steps is None:
            self._full_steps = set(self.policy.full_steps(10_000))
        if j in self._full_steps or not self._history:
            v = self._backend.velocity(x, positions, sigma, cond)
            self._history = (self._history + [(j, v)])[-(self.policy.order + 1):]
            self.full += 1
            return v
        self.predicted += 1
        return _extrapolate(self._history, j)


def _extrapolate(history, j):
    """Newton forward extrapolation through the points ``(step, value)`` of ``history``."""
    steps = [s for s, _ in history]
    values = [v for _, v in history]
    out, coeff = values[-1], 1.0
    diffs = list(values)
    for order in range(1, len(history)):
        diffs = [(diffs[i + 1] - diffs[i]) / (steps[i + order] - steps[i]) for i in range(len(diffs) - 1)]
        coeff = coeff * (j - steps[-order])
        out = out + coeff * diffs[-1]
    return out
