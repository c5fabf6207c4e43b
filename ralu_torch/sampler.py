"""The RALU sampler: one short loop over the stages of a schedule (METHOD section 6).

State is float32 tokens on a :class:`~ralu_torch.tokens.TokenSet`; the backend (any
:class:`~ralu_torch.backends.base.SamplerBackend`) adapts the model. Symbols follow the
paper: ``e`` where a stage ends, ``s`` where the next restarts, ``x_s = a U(x_e) + b z``.

Two parts are pluggable, in the manner of k-diffusion's ``noise_sampler``: ``select``, the
policy that picks the tokens a partial transition upsamples (:mod:`ralu_torch.selection`),
and ``noise_sampler``, a callable ``(shape, generator, device) -> float32 tensor`` of
standard normals that the sampler's noise (the first noise, each re-injection) goes through.

A stage's solver is the built-in Euler step, a diffusers flow-matching scheduler, or a
:class:`StageLoop`: a solver that runs its own loop over a stage's sigmas (a node UI's
k-diffusion style sampler, such as ComfyUI's UniPC), given the model as a velocity function.

A joint model may denoise a second stream beside the tokens (LTX-2's audio): the
conditioning then carries a :class:`SideStream` (``cond.side``), which stays at its own full
resolution throughout and follows the tokens' noise level: its first noise is drawn right
after theirs, each step moves it with the velocity the backend's call left in it (the same
Euler step, or its own copy of the stage's scheduler), and each transition re-noises it as
RALU re-noises the tokens it keeps (``a y + b z``, ``z`` of variance ``1 - c``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch

from ralu_schedule import Plan, Schedule
from ralu_schedule.layout import check_schedule_finite

from .noise import check_generators, draw, kept_scale, reinjection_noise
from .selection import check_mask, selection_policy
from .solvers import stage_scheduler, step_takes_generator
from .tokens import (TokenSet, child_source, latent_tokens, noise_shape, noise_tokens, paint_full, pooled_latent,
                     raster_latent, upsample_mode, upsample_values)


@runtime_checkable
class StageLoop(Protocol):
    """A solver that runs a whole stage itself (see :func:`run_stage_loop`)."""

    def calls(self, steps: int) -> int:
        """Model calls of a stage of ``steps`` steps."""

    def run_stage(self, velocity: Callable, x: torch.Tensor, sigmas: torch.Tensor, on_step: Callable) -> torch.Tensor:
        """``x`` at ``sigmas[0]`` to ``x`` at ``sigmas[-1]``: ``velocity(x, sigma)`` is the model
        (``sigma`` a scalar tensor), ``on_step(i, x)`` is called after step ``i`` with its state."""


@dataclass
class TransitionRecord:
    """What happened at one transition (for figures and checks)."""

    before: TokenSet
    after: TokenSet
    selected: torch.Tensor              # (B, L_before) bool
    estimate: torch.Tensor | None       # decoded clean estimate at coarse resolution, or None


@dataclass
class SideStream:
    """A stream of tokens a joint model denoises beside the sampler's (LTX-2's audio), at one
    resolution throughout (module docstring). ``shape``: how its first noise is drawn (the
    pipeline's own shape); ``to_tokens``: that noise as ``(B, L, F)`` tokens, the pipeline's
    packing. The backend's ``velocity`` reads ``state`` and leaves the stream's velocity in
    ``velocity`` (float32)."""

    shape: tuple
    to_tokens: object
    state: torch.Tensor | None = None
    velocity: torch.Tensor | None = None

    def start(self, noise, generator, device) -> None:
        self.state = self.to_tokens(noise(self.shape, generator, device))
        self.velocity = None

    def euler(self, dt) -> None:
        self.state = self.state + dt * self.velocity

    def reinject(self, tr, generator, noise, kept_noise: str) -> None:
        """``a y + b z`` at a transition, ``z`` the kept tokens' re-injection noise."""
        w = noise(tuple(self.state.shape), generator, self.state.device)
        self.state = tr.a * self.state + tr.b * (kept_scale(tr.c, kept_noise) * w)


@dataclass
class SampleResult:
    latents: torch.Tensor               # (B, L, F) float32, raster order at full resolution
    tokens: TokenSet
    stage_tokens: list = field(default_factory=list)
    transitions: list = field(default_factory=list)
    interrupted: bool = False


def sample(backend, schedule: Schedule | Plan, cond, *, batch: int, grid: tuple, generator, upsample: str = "latent",
           kept_noise: str = "exact", select="edges", edge_thresholds=(0.1, 0.2), noise_sampler=None,
           solver=None, callback=None, progress=None, record: bool = False, scope=None,
           latents=None, start=None) -> SampleResult:
    """Run every stage of ``schedule`` (a :class:`~ralu_schedule.Schedule` or an edited
    :class:`~ralu_schedule.Plan`) on a ``grid`` of full-resolution tokens. ``record=True``
    keeps a :class:`TransitionRecord` per transition (token sets, selection, decoded
    estimate); by default nothing outlives its transition. ``solver``: ``None`` for the
    built-in Euler step, or a diffusers flow-matching scheduler, of which each stage runs a
    fresh copy over its own sigmas (:func:`ralu_torch.solvers.stage_scheduler`), or a
    :class:`StageLoop` that runs each stage's loop itself (:func:`run_stage_loop`). ``scope``
    (:class:`ralu_torch.caches.StageScope`) scopes diffusers' cache hooks to stages, wraps
    each model call, and can interrupt the run after any step; an interrupted run returns
    its current state painted on the full-resolution grid (``interrupted=True``).

    ``start``: the clean latent ``(B, C, 2 rows, 2 cols)`` (model space, full resolution) of an
    image to start from. The first stage then starts from it brought to its token set
    (:func:`~ralu_torch.tokens.latent_tokens`: average-pooled to the stage's resolution) and
    noised to the stage's first sigma as diffusers' ``scale_noise`` does,
    ``x = sigma * noise + (1 - sigma) * latent``, with the noise drawn at that resolution (or
    ``latents``) as for a run from noise."""
    check_generators(generator, batch)          # whether or not caller latents leave it unused
    patch = getattr(backend, "patch", 2)             # latent pixels per token side (1: HunyuanVideo 1.5, Qwen-Image 2.1)
    upsample = upsample_mode(upsample, patch)
    plan = schedule.plan if isinstance(schedule, Schedule) else schedule
    if not isinstance(plan, Plan):
        raise ValueError(f"schedule must be a ralu_schedule.Schedule or Plan, got {type(schedule).__name__}")
    check_schedule_finite(plan)             # an edited Plan too: never an all-NaN image
    policy = selection_policy(select, backend.pixels_per_token, edge_thresholds)
    noise = _checked(noise_sampler or draw)
    device = backend.device
    lay = plan.layout
    D = lay.downsampling
    tokens = TokenSet.regular(batch, grid, D, device=device)
    # noise at the first stage's resolution, drawn in the pipeline's own layout, as tokens
    shape = noise_shape(backend.noise_layout, batch, backend.features, grid[0] // D, grid[1] // D)
    x = (noise_tokens(backend.noise_layout, noise(shape, generator, device)) if latents is None
         else _initial_latents(latents, shape, backend.noise_layout, device))
    if start is not None:
        x = noised_start(start, x, tokens, plan.stages[0].sigmas[0])
    side = getattr(cond, "side", None)
    if side is not None:                                          # drawn after the tokens' noise, as the pipeline does
        side.start(noise, generator, device)
    result = SampleResult(latents=x, tokens=tokens)
    # every stage's scheduler before the first model call, so a solver that cannot run one is refused up front
    loop = isinstance(solver, StageLoop)
    if loop and scope is not None:
        raise ValueError("a solver that runs its own stage loop cannot take a cache scope (caches and interruption "
                         "act between the steps of a loop RALU runs)")
    scheds = [None if solver is None or loop else stage_scheduler(solver, plan, k, device=device)
              for k in range(lay.num_stages)]
    calls = [solver.calls(st.steps) if loop else st.steps if sched is None else len(sched.timesteps)
             for st, sched in zip(plan.stages, scheds)]
    if scope is not None:
        scope.begin(calls)
    step = 0
    for k, stage in enumerate(plan.stages):
        sig = torch.tensor(stage.sigmas, dtype=torch.float32, device=device)
        positions = backend.prepare(tokens, cond)                     # once per stage: no bookkeeping in steps
        result.stage_tokens.append(tokens.length)
        sched = scheds[k]
        bar = progress(calls[k], k) if progress else None
        if scope is not None:
            scope.start_stage(k, calls[k], tokens.length)
        if loop:
            x, v = run_stage_loop(backend, x, positions, solver, sig, cond, stage=k, first_step=step,
                                  callback=callback, bar=bar)
        elif sched is None:
            x, v = run_steps(backend, x, positions, sig, cond, stage=k, first_step=step, callback=callback, bar=bar,
                             scope=scope, host=stage.sigmas, steps=lay.total_steps)
        else:
            x, v = run_scheduler(backend, x, positions, sched, cond, generator, stage=k, first_step=step,
                                 callback=callback, bar=bar, scope=scope, steps=lay.total_steps)
        step += calls[k]
        if bar is not None:
            bar.close()
        if scope is not None and scope.interrupted:
            if k < lay.num_stages - 1:                                # paint the mixed state at full resolution
                x = paint_full(x, tokens, patch)
                tokens = TokenSet.regular(batch, grid, 1, device=device)
            result.interrupted = True
            break
        if k == lay.num_stages - 1:
            break
        tr = plan.transitions[k]
        mask, estimate = tokens.is_coarse(), None                     # fraction 1: every low-res token
        if tr.fraction < 1.0:
            x1_hat = x - sig[-1] * v                                  # Tweedie with the stage's last velocity
            mask, estimate = _select(backend, policy, x1_hat, tokens, tr.fraction, generator)
        x, new = apply_transition(x, tokens, mask, tr, generator, noise=noise, upsample=upsample,
                                  kept_noise=kept_noise)
        if side is not None:
            side.reinject(tr, generator, noise, kept_noise)
        if record:
            result.transitions.append(TransitionRecord(tokens, new, mask, estimate))
        del estimate, mask
        tokens = new
    result.latents, result.tokens = x, tokens
    return result


def noised_start(start: torch.Tensor, noise: torch.Tensor, tokens: TokenSet, sigma: float) -> torch.Tensor:
    """The first stage's state of a run from an image: the image's full-resolution latent
    ``start`` read on the stage's ``tokens`` (the one rule, :func:`~ralu_torch.tokens.latent_tokens`),
    noised to ``sigma`` with ``noise`` (tokens of the same set): ``sigma noise + (1 - sigma) image``."""
    expected = (tokens.batch, noise.shape[-1] // 4, 2 * tokens.grid[0], 2 * tokens.grid[1])
    if not isinstance(start, torch.Tensor) or tuple(start.shape) != expected:
        raise ValueError(f"the image to start from must be a latent of shape {expected}, got "
                         f"{type(start).__name__} {tuple(getattr(start, 'shape', ()))}")
    image = latent_tokens(start.to(device=noise.device, dtype=torch.float32), tokens)
    sigma = float(sigma)
    return sigma * noise + (1.0 - sigma) * image


def run_steps(backend, x, positions, sig, cond, *, stage=0, first_step=0, callback=None, bar=None, scope=None,
              host=None, steps=None):
    """Euler steps over ``sig`` (the stage's sigmas on the device) at prepared ``positions``;
    returns the state and the last velocity. Nothing here synchronises with the host (the
    tests run it under :class:`ralu_torch.testing.HostSyncDetector`), so a step can be
    captured in a CUDA graph. ``host``: the same sigmas as Python numbers, and ``steps`` the
    run's step count, for a backend whose call depends on the noise level or the step
    (``before_call``: Wan 2.2's experts, SD3's skip-layer guidance)."""
    v = None
    side = getattr(cond, "side", None)
    for i in range(len(sig) - 1):
        v = _velocity(backend, x, positions, sig[i], cond, scope, i, None if host is None else host[i],
                      first_step + i, steps)
        x = x + (sig[i + 1] - sig[i]) * v
        if side is not None:
            side.euler(sig[i + 1] - sig[i])
        if callback is not None:
            x = callback(first_step + i, stage, sig[i], x)
        if bar is not None:
            bar.update()
        if scope is not None and scope.interrupted:
            break
    return x, v


def _velocity(backend, x, positions, sigma, cond, scope, index, host_sigma=None, step=None, steps=None):
    hook = getattr(backend, "before_call", None)
    if hook is not None:
        hook(host_sigma, step, steps)
    if scope is None:
        return backend.velocity(x, positions, sigma, cond)
    with scope.call(index, sigma):
        return backend.velocity(x, positions, sigma, cond)


def run_scheduler(backend, x, positions, sched, cond, generator, *, stage=0, first_step=0, callback=None, bar=None,
                  scope=None, steps=None):
    """One stage on a stage scheduler (:func:`~ralu_torch.solvers.stage_scheduler`): a model
    call per entry of ``sched.timesteps`` at the sigma it stands for, then the scheduler's
    own ``step``. Returns the state and the last velocity."""
    kwargs = {"generator": generator} if step_takes_generator(sched) else {}
    v = None
    host = getattr(sched, "ralu_host_sigmas", None)
    side = getattr(cond, "side", None)
    side_sched = None if side is None else copy.deepcopy(sched)      # its own copy, as the pipeline keeps one
    for i, t in enumerate(sched.timesteps):
        sigma = sched.ralu_model_sigmas[i]
        v = _velocity(backend, x, positions, sigma, cond, scope, i, None if host is None else host[i],
                      first_step + i, steps)
        x = sched.step(v, t, x, return_dict=False, **kwargs)[0]
        if side is not None:
            side.state = side_sched.step(side.velocity, t, side.state, return_dict=False, **kwargs)[0]
        if callback is not None:
            x = callback(first_step + i, stage, sigma, x)
        if bar is not None:
            bar.update()
        if scope is not None and scope.interrupted:
            break
    return x, v


def run_stage_loop(backend, x, positions, solver: StageLoop, sig, cond, *, stage=0, first_step=0, callback=None,
                   bar=None):
    """One stage on a :class:`StageLoop`: the solver's own loop over the stage's sigmas ``sig``,
    the model given to it as ``velocity(x, sigma)`` at prepared ``positions``. Returns the state
    and the last velocity (the Tweedie estimate's, as for the other solvers). The loop hands
    sigmas as tensors, so each call's sigma is read on the host here (for ``before_call``). A
    ``callback`` sees each step's state; the loop owns the state, so one that returns another
    is refused."""
    last = []

    def velocity(xi, sigma):
        v = _velocity(backend, xi, positions, sigma, cond, None, len(last), float(sigma))
        last[:] = [v]
        return v

    def on_step(i, xi):
        if callback is not None and callback(first_step + i, stage, sig[i], xi) is not xi:
            raise ValueError("a step callback of a stage run by its solver's own loop must return the state it "
                             "was given (the loop owns it)")
        if bar is not None:
            bar.update()

    x = solver.run_stage(velocity, x, sig.clone(), on_step)
    return x, last[0]


def apply_transition(x, tokens: TokenSet, mask, tr, generator, *, noise=draw, upsample: str = "latent",
                     kept_noise: str = "exact"):
    """``x_s = a U(x_e) + b z`` for the tokens where ``mask`` is true (METHOD section 3): the
    new token set's values and the set itself. ``tr`` is a
    :class:`ralu_schedule.Transition`; ``noise`` draws the i.i.d. normals that
    :func:`~ralu_torch.noise.reinjection_noise` correlates."""
    batch, _, Fdim = x.shape
    new, parent, slot = tokens.upsample(mask, tr.factor)
    src = child_source(tr.factor, Fdim, upsample, device=x.device)
    w = noise((batch, new.length, Fdim), generator, x.device)
    z = reinjection_noise(w, parent, slot, src, tokens.length, tr.c, tr.factor, kept_noise)
    return tr.a * upsample_values(x, parent, slot, src) + tr.b * z, new


def _select(backend, policy, x1_hat, tokens: TokenSet, fraction: float, generator):
    """Decode the clean estimate at the coarsest resolution present and let the policy pick
    ``fraction`` of its low-resolution tokens; returns (mask, decoded estimate). A policy that
    says it reads no estimate (``needs_estimate = False``: the condition's edges) is spared the
    decode and gets ``None``."""
    if not getattr(policy, "needs_estimate", True):
        return check_mask(policy(None, tokens, fraction, generator), tokens, fraction), None
    D = tokens.coarsest
    if tokens.uniform:          # every token at the coarsest size: its latent directly, no full-size round trip
        coarse_latent = raster_latent(x1_hat, tokens, D)
    else:
        coarse_latent = pooled_latent(x1_hat, tokens, D, getattr(backend, "patch", 2))
    estimate = backend.decode(coarse_latent.to(backend.dtype)).float()
    return check_mask(policy(estimate, tokens, fraction, generator), tokens, fraction), estimate


def _initial_latents(latents, shape, layout, device):
    """The caller's starting noise at the first stage's resolution, in the shape the pipeline
    draws it (``(B, C, H/D, W/D)``, or FLUX.2's patchified ``(B, 4 C, H/2D, W/2D)``), or as
    raster-order tokens ``(B, H/2D * W/2D, 4 C)``."""
    n = shape[0]
    features = shape[1] * (4 if layout == "latent" else 1)
    packed = (n, shape[2] * shape[3] // (4 if layout == "latent" else 1), features)
    if not isinstance(latents, torch.Tensor) or tuple(latents.shape) not in (shape, packed):
        raise ValueError(f"latents must be the first stage's noise, a tensor of shape {shape} (or {packed} packed), "
                         f"got {type(latents).__name__} {tuple(getattr(latents, 'shape', ()))}")
    x = latents.to(device=device, dtype=torch.float32)
    return noise_tokens(layout, x) if x.dim() == 4 else x


def _checked(noise_sampler):
    """Wrap a noise sampler so that a wrong shape is reported where it happens."""
    def draw_checked(shape, generator, device):
        z = noise_sampler(shape, generator, device)
        if not isinstance(z, torch.Tensor) or tuple(z.shape) != tuple(shape):
            raise ValueError(f"noise_sampler must return a tensor of shape {tuple(shape)}, "
                             f"got {type(z).__name__} {tuple(getattr(z, 'shape', ()))}")
        return z.to(device=device, dtype=torch.float32)
    return draw_checked
