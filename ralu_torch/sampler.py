"""The RALU sampler: one short loop over the stages of a schedule (METHOD section 6).

State is float32 tokens on a :class:`~ralu_torch.tokens.TokenSet`; the backend adapts the
model. Symbols follow the paper: ``e`` where a stage ends, ``s`` where the next restarts,
``x_s = a U(x_e) + b z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ralu_schedule import Schedule

from .edges import edge_map, select_top, token_scores
from .noise import draw, reinjection_noise
from .tokens import TokenSet, check_mode, child_source, pack, to_latent, upsample_values


@dataclass
class TransitionRecord:
    """What happened at one transition (for figures and checks)."""

    before: TokenSet
    after: TokenSet
    selected: torch.Tensor              # (B, L_before) bool
    estimate: torch.Tensor | None       # decoded clean estimate at coarse resolution, or None


@dataclass
class SampleResult:
    latents: torch.Tensor               # (B, L, F) float32, raster order at full resolution
    tokens: TokenSet
    stage_tokens: list = field(default_factory=list)
    transitions: list = field(default_factory=list)


def sample(backend, schedule: Schedule, cond, *, batch: int, grid: tuple, generator, upsample: str = "latent",
           kept_noise: str = "exact", edge_thresholds=(0.1, 0.2), callback=None, progress=None) -> SampleResult:
    """Run every stage of ``schedule`` on a ``grid`` of full-resolution tokens."""
    check_mode(upsample)
    device, Fdim = backend.device, backend.features
    lay = schedule.layout
    D = lay.downsampling
    tokens = TokenSet.regular(batch, grid, D, device=device)
    # noise at the first stage's resolution, drawn as a latent like diffusers, then packed
    x = pack(draw((batch, backend.latent_channels, 2 * grid[0] // D, 2 * grid[1] // D), generator, device))
    result = SampleResult(latents=x, tokens=tokens)
    step = 0
    for k, stage in enumerate(schedule.stages):
        sig = torch.tensor(stage.sigmas, dtype=torch.float32, device=device)
        result.stage_tokens.append(tokens.length)
        bar = progress(stage.steps, k) if progress else None
        for i in range(stage.steps):                                  # Euler steps of stage k
            v = backend.velocity(x, tokens, sig[i], cond)
            x = x + (sig[i + 1] - sig[i]) * v
            if callback is not None:
                x = callback(step, k, sig[i], x)
            step += 1
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        if k == lay.num_stages - 1:
            break
        tr = schedule.transitions[k]
        select, estimate = tokens.is_coarse(), None                   # fraction 1: every low-res token
        if tr.fraction < 1.0:
            x1_hat = x - sig[-1] * v                                  # Tweedie with the stage's last velocity
            select, estimate = _select_by_edges(backend, x1_hat, tokens, tr.fraction, edge_thresholds)
        new, parent, slot = tokens.upsample(select, tr.factor)
        src = child_source(tr.factor, Fdim, upsample, device=device)
        w = draw((batch, new.length, Fdim), generator, device)
        z = reinjection_noise(w, parent, slot, src, tokens.length, tr.c, tr.factor, kept_noise)
        x = tr.a * upsample_values(x, parent, slot, src) + tr.b * z   # x_s = a U(x_e) + b z
        result.transitions.append(TransitionRecord(tokens, new, select, estimate))
        tokens = new
    result.latents, result.tokens = x, tokens
    return result


def _select_by_edges(backend, x1_hat, tokens: TokenSet, fraction: float, thresholds):
    """Decode the clean estimate at the coarsest resolution present and pick the top
    ``fraction`` of its low-resolution tokens by edge score; returns (mask, decoded estimate)."""
    coarse_latent = F.avg_pool2d(to_latent(x1_hat, tokens), tokens.coarsest)
    estimate = backend.decode(coarse_latent.to(backend.dtype)).float()
    scores = token_scores(edge_map(estimate, thresholds), backend.pixels_per_token)
    return select_top(tokens, scores, fraction), estimate
