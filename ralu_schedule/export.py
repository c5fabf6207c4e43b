"""Schedules for other samplers: diffusers schedulers, sigma lists, k-diffusion.

A RALU stage is an ordinary flow-matching run over a short sigma list that ends *above*
zero (except the last stage). Two habits of stock samplers break that silently:

- diffusers' flow-matching schedulers shift the sigmas they are given (a static ``shift``,
  or FLUX's resolution-dependent dynamic shift), so a stage's already-shifted sigmas are
  shifted twice;
- they append a terminal sigma of 0, so every stage would denoise to the end.

The export therefore states, per stage, the sigmas *and* the settings that run them
exactly: ``shift = 1``, dynamic shifting and Karras/exponential/beta re-spacing off, and
the stage's own terminal sigma in place of the appended 0. :func:`diffusers_stages` gives
them as data; ``ralu_torch.stage_scheduler`` applies them to any diffusers scheduler.

Solvers. A layout's ``steps`` are solver steps; how many model evaluations a step costs
depends on the solver: one for Euler and the multistep solvers (DPM-Solver++, UniPC,
DEIS, SA-Solver), and for diffusers' ``FlowMatchHeunDiscreteScheduler`` two per step
except the last, which is an Euler step (``2 n - 1``).
"""

from __future__ import annotations

import json

from .layout import Plan, Schedule

#: Solver names of the cost model, with the diffusers scheduler each stands for.
SOLVERS = {
    "euler": "FlowMatchEulerDiscreteScheduler",
    "heun": "FlowMatchHeunDiscreteScheduler",
    "dpm-multistep": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}

#: Output formats of ``ralu-schedule preset/solve/check --format``.
FORMATS = ("json", "sigmas", "diffusers", "k-diffusion")

#: Scheduler configuration that makes a diffusers scheduler take sigmas as given. Keys a
#: scheduler does not have are skipped; ``flow_shift`` is the multistep solvers' name for
#: ``shift``.
EXACT_SIGMA_CONFIG = {
    "shift": 1.0,
    "flow_shift": 1.0,
    "use_dynamic_shifting": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "shift_terminal": None,
    "invert_sigmas": False,
}


def solver_name(scheduler_class: str) -> str:
    """The cost model's solver for a diffusers scheduler class name (``"dpm-multistep"``
    stands for any one-evaluation-per-step solver)."""
    for name, cls in SOLVERS.items():
        if cls == scheduler_class:
            return name
    return "dpm-multistep"


def model_evaluations(steps: int, solver: str = "euler") -> int:
    """Model evaluations of ``steps`` solver steps (Heun: ``2 steps - 1``, see module docstring)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    return 2 * steps - 1 if solver == "heun" else steps


def _plan(schedule) -> Plan:
    if isinstance(schedule, Schedule):
        return schedule.plan
    if isinstance(schedule, Plan):
        return schedule
    raise ValueError(f"expected a ralu_schedule.Schedule or Plan, got {type(schedule).__name__}")


def diffusers_stages(schedule) -> list:
    """Per stage, what a diffusers flow-matching scheduler needs to run it exactly.

    Each entry: ``stage`` (0-based), ``num_inference_steps``, ``sigmas`` (the
    ``num_inference_steps`` sigmas to pass to ``set_timesteps(sigmas=...)``),
    ``terminal_sigma`` (what the step after the last one reaches: write it over the
    scheduler's appended ``sigmas[-1]`` after ``set_timesteps``), ``scheduler_config``
    (overrides for ``Scheduler.from_config(config, **overrides)``) and ``downsampling``:
    how much coarser per axis than the full resolution the stage's uniform tokens are
    (``None`` for a mixed-resolution stage, which no stock pipeline can run).
    """
    plan = _plan(schedule)
    lay = plan.layout
    level, sizes = lay.downsampling, [lay.downsampling]
    for tr in plan.transitions:       # a transition with fraction 1 closes a level: one size again
        if tr.fraction >= 1.0:
            level //= tr.factor
        sizes.append(level if tr.fraction >= 1.0 else None)
    out = []
    for k, st in enumerate(plan.stages):
        sig = [float(x) for x in st.sigmas]
        out.append({"stage": k, "num_inference_steps": st.steps, "sigmas": sig[:-1], "terminal_sigma": sig[-1],
                    "scheduler_config": dict(EXACT_SIGMA_CONFIG), "downsampling": sizes[k]})
    return out


def sigma_lists(schedule) -> list:
    """One list per stage: its ``steps + 1`` sigmas, descending, the stage's end included
    (the form node-based UIs and k-diffusion samplers take)."""
    return [[float(x) for x in st.sigmas] for st in _plan(schedule).stages]


def kdiffusion_schedule(schedule) -> dict:
    """The flattened form for k-diffusion-style samplers: a sigma list per stage (run each
    with the sampler, the model wrapped as ``denoised = x - sigma * v``) and between stages
    the transition ``x_s = a U(x_e) + b z`` with ``z ~ N(0, I - c U U^T)``."""
    plan = _plan(schedule)
    return {"parameterization": "flow: x = (1 - sigma) x0 + sigma noise; denoised = x - sigma * velocity",
            "stages": sigma_lists(plan),
            "transitions": [{"a": t.a, "b": t.b, "c": t.c, "factor": t.factor, "fraction": t.fraction,
                             "at": t.at, "restart": t.restart} for t in plan.transitions]}


def export(schedule, fmt: str = "json") -> str:
    """``schedule`` as text in one of :data:`FORMATS`: ``json`` (the schedule contract),
    ``sigmas`` (one line of comma-separated sigmas per stage), ``diffusers``
    (:func:`diffusers_stages` as JSON) or ``k-diffusion`` (:func:`kdiffusion_schedule`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "json":
        if not isinstance(schedule, Schedule):
            raise ValueError("the json format needs a solved Schedule, not an edited Plan")
        return schedule.to_json()
    if fmt == "sigmas":
        return "\n".join(", ".join(repr(x) for x in sig) for sig in sigma_lists(schedule))
    if fmt == "diffusers":
        return json.dumps(diffusers_stages(schedule), indent=2)
    return json.dumps(kdiffusion_schedule(schedule), indent=2)
