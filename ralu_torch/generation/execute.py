"""One sampler call for a batch of jobs: each image's generator from its seed, the call's
arguments from the flags and the jobs, the time it took on the device."""

from __future__ import annotations

import time
import traceback

from ralu_schedule._errors import UsageError

from ..backends.families import BY_NAME


def generators(torch, device: str, seeds):
    gen_device = "cpu" if device.startswith("mps") else device
    return [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]


def call_args(args, group: list, family=None) -> dict:
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
    return kw


def run_batch(ralu, group: list, args, device: str, callback=None):
    """One sampler call for ``group``: (seconds, output). ``callback``: the pipeline's
    ``callback_on_step_end`` (the run's progress display)."""
    import torch

    gens = generators(torch, device, [j.seed for j in group])
    kwargs = {} if callback is None else {"callback_on_step_end": callback}
    start = clock(torch, device)
    try:
        out = ralu([j.prompt for j in group], generator=gens, **call_args(args, group, BY_NAME[ralu.backend.name]),
                   **kwargs)
    except (TypeError, RuntimeError) as err:
        if args.offload == "none" or not any("accelerate" in f.filename for f in traceback.extract_tb(err.__traceback__)):
            raise
        import accelerate

        raise UsageError(f"--offload {args.offload} failed inside accelerate {accelerate.__version__}'s offload hooks "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); the pipeline's own call goes "
                         "through the same hooks; try another --offload") from None
    return clock(torch, device) - start, out


def clock(torch, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()


def versions() -> dict:
    import diffusers
    import torch

    import ralu_schedule

    return {"ralu": ralu_schedule.__version__, "diffusers": diffusers.__version__, "torch": torch.__version__}
