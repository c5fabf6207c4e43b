"""Any diffusers flow-matching scheduler as the solver of a RALU stage.

Each stage runs on a fresh copy of the scheduler made by :func:`stage_scheduler`: the
schedule's own sigmas are installed as they are (``shift = 1``, no dynamic shifting, no
re-spacing; :data:`ralu_schedule.export.EXACT_SIGMA_CONFIG`) and the step after the last one
lands on the stage's end instead of the 0 that diffusers appends. The copy pins them:
when a stock pipeline calls ``set_timesteps`` on it (with its own default sigmas, its
dynamic-shift ``mu``, or nothing), it gets the stage again, and any request for another
number of steps or other sigmas is refused with the number to ask for.

Why a fresh copy per stage: a multistep solver (DPM-Solver++, UniPC, DEIS) extrapolates
from the model outputs of earlier steps. Across a transition the state changes resolution
(new tokens, whose earlier outputs do not exist) and noise level (``x_s = a U(x_e) + b z``
jumps back up to ``sigma = 1 - s``), so earlier outputs describe another trajectory; using
them would extrapolate across the jump. Each stage therefore starts with the solver's
first-order warm-up, as a sampler run from that noise level would.

Euler is the built-in step (``x += (sigma' - sigma) v``) whenever the scheduler is plain
``FlowMatchEulerDiscreteScheduler``, so default results do not move by a bit.
"""

from __future__ import annotations

import copy as copy_module
import functools
import inspect

import numpy as np
import torch

from ralu_schedule import Plan, Schedule
from ralu_schedule.export import EXACT_SIGMA_CONFIG

#: ``solver=`` strings RALU accepts besides a scheduler instance or class.
SOLVER_NAMES = ("scheduler", "euler")


def _scheduler_types():
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    return SchedulerMixin


def check_flow_scheduler(scheduler) -> None:
    """Refuse a scheduler that does not integrate a flow-matching ODE, naming what to set."""
    cls, config = type(scheduler).__name__, scheduler.config
    if cls.startswith(("FlowMatch", "FlowMap")):
        return
    if "use_flow_sigmas" not in config:
        raise ValueError(f"{cls} is not a flow-matching scheduler, so it cannot run RALU's stages; use a FlowMatch* "
                         "scheduler, or a multistep solver (DPMSolverMultistepScheduler, UniPCMultistepScheduler, "
                         "DEISMultistepScheduler, ...) with use_flow_sigmas=True, prediction_type='flow_prediction'")
    if not config["use_flow_sigmas"] or config.get("prediction_type", "flow_prediction") != "flow_prediction":
        raise ValueError(f"{cls} is configured with use_flow_sigmas={config['use_flow_sigmas']}, prediction_type="
                         f"{config.get('prediction_type')!r}, so it does not integrate a flow-matching ODE; make it with "
                         f"{cls}.from_config(pipe.scheduler.config, use_flow_sigmas=True, "
                         "prediction_type='flow_prediction')")


def _stage_sigmas(schedule, stage: int) -> np.ndarray:
    plan = schedule.plan if isinstance(schedule, Schedule) else schedule
    if not isinstance(plan, Plan):
        raise ValueError(f"schedule must be a ralu_schedule.Schedule or Plan, got {type(schedule).__name__}")
    K = plan.layout.num_stages
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage < K:
        raise ValueError(f"stage must be an integer in 0..{K - 1} for this {K}-stage schedule, got {stage!r}")
    return np.asarray(plan.stages[stage].sigmas, dtype=np.float64)


def stage_scheduler(scheduler, schedule, stage: int, *, device=None):
    """A configured copy of ``scheduler`` (any diffusers flow-matching scheduler) that runs
    stage ``stage`` (0-based) of ``schedule`` exactly, in RALU or in a stock pipeline::

        pipe.scheduler = stage_scheduler(pipe.scheduler, schedule, k)
        pipe(..., latents=x, num_inference_steps=schedule.layout.steps[k], output_type="latent")

    ``set_timesteps`` has already been called (on ``device``) and may be called again.
    """
    if not isinstance(scheduler, _scheduler_types()):
        raise ValueError(f"scheduler must be a diffusers scheduler instance, got {type(scheduler).__name__}")
    check_flow_scheduler(scheduler)
    sigmas = _stage_sigmas(schedule, stage)
    base = type(scheduler)
    overrides = {k: v for k, v in EXACT_SIGMA_CONFIG.items() if k in scheduler.config}
    copy = _pinned(base).from_config(scheduler.config, **overrides)
    copy.ralu_stage, copy.ralu_sigmas = stage, sigmas
    copy.set_timesteps(device=device)
    _probe(copy)
    return copy


def _probe(scheduler) -> None:
    """Run a copy of the stage on a linear stand-in model (``v = x``): a scheduler whose own
    update is not finite on these sigmas (DEIS, for instance, takes ``log(alpha)`` with
    ``alpha = 1 - sigma = 0`` at the first stage's sigma 1) is refused here, by name."""
    trial = copy_module.deepcopy(scheduler)
    x = torch.ones(1, 4)
    kwargs = {"generator": torch.Generator().manual_seed(0)} if step_takes_generator(trial) else {}
    for t in trial.timesteps:
        x = trial.step(x, t, x, return_dict=False, **kwargs)[0]
    if not bool(torch.isfinite(x).all()):
        sig = scheduler.ralu_sigmas
        raise ValueError(f"{scheduler.ralu_base.__name__} cannot run RALU stage {scheduler.ralu_stage} (sigma "
                         f"{sig[0]:.4f} to {sig[-1]:.4f}): its update is not finite there; use "
                         "FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, DPMSolverMultistepScheduler "
                         "or UniPCMultistepScheduler")


@functools.lru_cache(maxsize=None)
def _pinned(base: type) -> type:
    """``base`` with ``set_timesteps`` pinned to the stage's sigmas (see module docstring)."""
    return type(f"RALUStage{base.__name__}", (base,), {"set_timesteps": _pinned_set_timesteps,
                                                       "__module__": __name__, "ralu_base": base})


def _pinned_set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None,
                          **kwargs):
    sig, k, name = self.ralu_sigmas, self.ralu_stage, self.ralu_base.__name__
    n = len(sig) - 1
    what = f"this {name} runs RALU stage {k}: {n} steps from sigma {sig[0]:.4f} to {sig[-1]:.4f}"
    if timesteps is not None:
        raise ValueError(f"{what}; it takes no explicit timesteps")
    asked = len(sigmas) if sigmas is not None else num_inference_steps
    if asked is not None and asked != n:
        raise ValueError(f"{what}; call the pipeline with num_inference_steps={n} (it asked for {asked})")
    if sigmas is not None:
        given = np.asarray(sigmas, dtype=np.float64).ravel()
        default = np.linspace(1.0, 1.0 / n, n)          # what FluxPipeline passes when given no sigmas
        if not (np.allclose(given, sig[:-1], atol=1e-6) or np.allclose(given, default, atol=1e-6)):
            raise ValueError(f"{what}; the sigmas passed differ from the stage's {np.round(sig[:-1], 4).tolist()}: "
                             "leave sigmas out")
    install_sigmas(self, self.ralu_base.set_timesteps, sig, device)


def install_sigmas(scheduler, set_timesteps, sigmas: np.ndarray, device=None) -> None:
    """Run ``set_timesteps(scheduler, n)`` for ``n = len(sigmas) - 1`` steps, then put
    ``sigmas`` (terminal included) in place of the scheduler's own. Knows the two layouts
    diffusers' schedulers use: ``n + 1`` sigmas for ``n`` timesteps, and Heun's interleaved
    ``2 n`` sigmas for ``2 n - 1`` timesteps; any other is refused. Sets
    ``scheduler.ralu_model_sigmas``: the sigma of each model call, on ``device``."""
    n = len(sigmas) - 1
    set_timesteps(scheduler, num_inference_steps=n, device=device)
    name = getattr(scheduler, "ralu_base", type(scheduler)).__name__
    s = torch.as_tensor(sigmas, dtype=torch.float32)
    old_s, old_t = scheduler.sigmas, scheduler.timesteps
    if len(old_s) == n + 1 and len(old_t) == n:
        new_s, model_s = s, s[:-1]
    elif len(old_s) == 2 * n and len(old_t) == 2 * n - 1:          # Heun: interior sigmas twice
        new_s = torch.cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]])
        model_s = new_s[:-1]
    else:
        raise ValueError(f"{name} cannot run a RALU stage exactly: after set_timesteps({n}) it holds "
                         f"{len(old_s)} sigmas and {len(old_t)} timesteps, not {n + 1} and {n} "
                         f"(or Heun's {2 * n} and {2 * n - 1}), so its steps cannot be put on the stage's sigmas")
    scheduler.sigmas = new_s.to(old_s.device)
    scheduler.timesteps = (model_s * scheduler.config.num_train_timesteps).to(old_t.device)
    scheduler.ralu_model_sigmas = model_s.to(device if device is not None else old_t.device)
    scheduler.ralu_host_sigmas = model_s.tolist()          # the same, on the host (no device read later)


def resolve_solver(solver, pipe_scheduler):
    """The scheduler RALU steps with, or ``None`` for the built-in Euler step.

    ``solver``: ``"scheduler"`` (default: whatever ``pipe.scheduler`` is), ``"euler"``, a
    scheduler instance, or a scheduler class (configured from ``pipe.scheduler.config``, with
    ``use_flow_sigmas=True, prediction_type="flow_prediction"`` where the class has them).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    SchedulerMixin = _scheduler_types()
    if isinstance(solver, str):
        if solver not in SOLVER_NAMES:
            raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVER_NAMES))}, a diffusers scheduler "
                             f"or a scheduler class, got {solver!r}")
        if solver == "euler":
            return None
        sched = pipe_scheduler
    elif isinstance(solver, type) and issubclass(solver, SchedulerMixin):
        params = inspect.signature(solver.__init__).parameters
        flow = {k: v for k, v in (("use_flow_sigmas", True), ("prediction_type", "flow_prediction")) if k in params}
        config = {k: v for k, v in pipe_scheduler.config.items() if k in params}   # no foreign keys
        sched = solver.from_config(config, **flow)
    elif isinstance(solver, SchedulerMixin):
        sched = solver
    else:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVER_NAMES))}, a diffusers scheduler or a "
                         f"scheduler class, got {type(solver).__name__}")
    check_flow_scheduler(sched)
    if type(sched) is FlowMatchEulerDiscreteScheduler and not sched.config.get("stochastic_sampling", False):
        return None                                     # the same Euler step, done in place with exact sigmas
    return sched


def step_takes_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters
