"""``--compare``: the full-step pipeline and RALU from the same seed, side by side in one picture."""

from __future__ import annotations

from pathlib import Path

from ralu_schedule.models import MODEL_INFO

from .. import console as _console
from ..backends.families import BY_NAME, read_pipeline_config
from ..jobs import Job
from .execute import call_args, clock, generators, ran_with, run_batch, versions
from .write import RunFailure, save, side_by_side


def compare(args, pipe, ralu, job: Job, path: Path, recipe: dict, device: str) -> None:
    """The full-step pipeline and RALU from the same seed, timed after one untimed RALU call
    (which pays the first call's one-off costs for both), side by side in one picture."""
    import torch

    family = BY_NAME[ralu.backend.name]
    variant = family.variant(read_pipeline_config(pipe))
    steps = args.baseline_steps or MODEL_INFO[variant].default_steps   # the model's stock run (FLUX.1-dev: 50)
    kw = call_args(args, [job], pipe, family)
    if "negative_prompt" in kw:
        kw["negative_prompt"] = kw["negative_prompt"][0]
    console = _console.current()
    progress = console.progress(3, unit="call")    # RALU untimed, the baseline, RALU timed: one display
    try:
        run_batch(ralu, [job], args, device, progress.steps(1, ralu.layout.total_steps))
        progress.advance(1, "RALU, untimed")
        callback = progress.steps(1, steps)
        start = clock(torch, device)
        base = pipe(job.prompt, num_inference_steps=steps, generator=generators(torch, device, [job.seed])[0],
                    **{k: v for k, v in kw.items() if v is not None},
                    **({} if callback is None else {"callback_on_step_end": callback}))
        base_s = clock(torch, device) - start
        progress.advance(1, f"baseline, {steps} steps")
        seconds, out = run_batch(ralu, [job], args, device, progress.steps(1, ralu.layout.total_steps))
        progress.advance(1, "RALU")
    finally:
        progress.close()
    # RALU's last stage runs at full resolution on every token, as each baseline step does: the
    # sampler's own count of one of its calls (guidance and text tokens included) prices a step
    full = out.stage_calls[-1]
    base_tf = steps * full.tflops / full.executed
    ralu_tf = sum(st.tflops for st in out.stage_calls)
    lay = out.schedule.layout
    name = (out.schedule.info or {}).get("preset") or "schedule"
    rows = [(f"baseline, {steps} steps", base_s, base_tf),
            (f"RALU {name}, {'+'.join(map(str, lay.steps))} steps", seconds, ralu_tf)]
    picture = side_by_side([base.images[0], out.images[0]],
                           [[label, f"{s:.2f} s, {tf:.4g} transformer TFLOPs"] for label, s, tf in rows])
    rec = {**recipe, **ran_with(ralu, out, job), "versions": versions(),
           "compare": {"baseline_steps": steps, "baseline_seconds": base_s, "ralu_seconds": seconds,
                       "baseline_tflops": base_tf, "ralu_tflops": ralu_tf}}
    try:
        save(picture, path, rec)
    except OSError as err:
        raise RunFailure(f"cannot write {path}: {err.strerror or err}; nothing partial is left") from None
    console.say(f"{'':<34} {'seconds':>9} {'TFLOPs':>10}")
    for label, s, tf in rows:
        console.say(f"{label:<34} {s:>9.2f} {tf:>10.4g}")
    console.result(f"speed-up {base_s / seconds:.2f}x in time, {base_tf / ralu_tf:.2f}x in TFLOPs; wrote {path}")
