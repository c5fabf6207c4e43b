"""One sampler call for a batch of jobs: each image's generator from its seed, the call's
arguments from the flags and the jobs, the time it took on the device."""

from __future__ import annotations

import time
import traceback

from ralu_schedule._errors import UsageError

from ..backends.families import BY_NAME
from .inputs import call_inputs


def generators(torch, device: str, seeds):
    gen_device = "cpu" if device.startswith("mps") else device
    return [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]


def call_args(args, group: list, pipe, family=None) -> dict:
    """The pipeline's call arguments for a batch of jobs (``args`` the parsed command line): the
    size, guidance, negative prompts, frames, the clip's frame rate where ``family`` takes one
    (LTX-2), and an image-conditioned ``pipe``'s files and strength
    (:func:`~ralu_torch.generation.inputs.call_inputs`)."""
    kw = {"height": group[0].height, "width": group[0].width, "guidance_scale": args.guidance_scale,
          "max_sequence_length": args.max_sequence_length}
    if family is not None and family.fps_argument and args.fps is not None:
        kw[family.fps_argument] = args.fps              # LTX-2: the clip's time axis and its audio's length
    if group[0].negative_prompt is not None:
        kw["negative_prompt"] = [j.negative_prompt for j in group]
    if args.true_cfg is not None:
        kw["true_cfg_scale"] = args.true_cfg
    if args.num_frames is not None:
        kw["num_frames"] = args.num_frames
    return {**kw, **call_inputs(group, pipe)}


def run_batch(ralu, group: list, args, device: str, callback=None):
    """One sampler call for ``group``: (seconds, output). ``callback``: the pipeline's
    ``callback_on_step_end`` (the run's progress display)."""
    import torch

    gens = generators(torch, device, [j.seed for j in group])
    kwargs = {} if callback is None else {"callback_on_step_end": callback}
    start = clock(torch, device)
    try:
        out = ralu([j.prompt for j in group], generator=gens,
                   **call_args(args, group, ralu.pipe, BY_NAME[ralu.backend.name]), **kwargs)
    except (TypeError, RuntimeError) as err:
        if args.offload == "none" or not any("accelerate" in f.filename for f in traceback.extract_tb(err.__traceback__)):
            raise
        import accelerate

        raise UsageError(f"--offload {args.offload} failed inside accelerate {accelerate.__version__}'s offload hooks "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); the pipeline's own call goes "
                         "through the same hooks; try another --offload") from None
    return clock(torch, device) - start, out


def schedule_to_run(ralu, job):
    """The schedule a call of ``ralu`` for ``job`` will record (``out.schedule``), known before it
    runs: at the job's size, and for a pipeline that starts from its input, solved for the job's
    strength (the pipeline's default where it has none); a fixed schedule, which the call cuts, as
    it is."""
    from ralu_schedule import Schedule

    default = getattr(ralu.backend, "default_strength", None)
    if default is not None:
        sched = ralu.schedule_for(job.height, job.width, strength=default if job.strength is None else job.strength)
        if isinstance(sched, Schedule):
            return sched
    return ralu.schedule_for(job.height, job.width)


def ran_with(ralu, out, job) -> dict:
    """What a finished call adds to ``job``'s recipe: the schedule that ran (solved), the guidance
    scale used and, for a pipeline that starts from its input, the strength used (the job's, or
    the pipeline's default)."""
    rec = {"schedule": out.schedule.to_dict(), "guidance_used": ralu.guidance_scale}
    default = getattr(ralu.backend, "default_strength", None)
    if default is not None:
        rec["strength_used"] = default if job.strength is None else job.strength
    return rec


def clock(torch, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()


def versions() -> dict:
    import diffusers
    import torch

    import ralu_schedule

    return {"ralu": ralu_schedule.__version__, "diffusers": diffusers.__version__, "torch": torch.__version__}
