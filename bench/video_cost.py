"""The cost of text-to-video (Wan, HunyuanVideo 1.5, LTX-2) with RALU layouts: TFLOPs of a whole
clip in both conventions, predicted speed-up against the model's full-resolution stock run, and attention's share of
the transformer FLOPs (per layout, and per stage).

    python bench/video_cost.py --layouts flux-dev-7x flux-dev-4x
    python bench/video_cost.py --model wan2.2-ti2v-5b --resolutions 704x1280 --frames 121 \\
        --layouts "2,3,5;0.2,0.3,1.0;0.1,1.0"

``--layouts`` takes preset names (their layouts; shifts do not change the cost) or inline
layouts ``STEPS;ENDS[;FRACTIONS]``, comma-separated within each part. Without it the table
prices the presets made for ``--model``. "720p" is 704x1280 here: a layout whose first stage
runs 2x coarser needs both sides to be multiples of 32 pixels (Wan 2.1 / A14B; 64 for
Wan 2.2 TI2V-5B), which 720 is not.
"""

from __future__ import annotations

import argparse
import sys

from ralu_schedule import PRESETS, Layout, get_preset
from ralu_schedule.cost import MODELS, layout_cost
from ralu_schedule.models import MODEL_INFO

RESOLUTIONS = ("480x832", "704x1280")


def parse_layout(text: str) -> tuple:
    """``(label, Layout)`` from a preset name or an inline ``STEPS;ENDS[;FRACTIONS]``."""
    if ";" not in text:
        return text, get_preset(text).layout
    parts = text.split(";")
    if len(parts) not in (2, 3):
        raise ValueError(f"an inline layout is STEPS;ENDS or STEPS;ENDS;FRACTIONS, got {text!r}")
    try:
        steps = tuple(int(v) for v in parts[0].split(","))
        ends = tuple(float(v) for v in parts[1].split(","))
        fractions = tuple(float(v) for v in parts[2].split(",")) if len(parts) == 3 else None
    except ValueError:
        raise ValueError(f"an inline layout holds comma-separated numbers, got {text!r}") from None
    return f"steps {parts[0]}; ends {parts[1]}" + (f"; fractions {parts[2]}" if len(parts) == 3 else ""), \
        Layout(steps=steps, ends=ends, fractions=fractions)


def video_table(layouts, model: str = "wan2.1-t2v-14b", resolutions=RESOLUTIONS, frames: int | None = None,
                baseline_steps: int | None = None) -> str:
    """A markdown table: for each resolution, the full-resolution stock run, then each layout.

    ``layouts``: ``{label: Layout}`` (or ``(label, Layout)`` pairs)."""
    spec = MODELS[model]
    if not spec.is_video:
        raise ValueError(f"{model} is an image model; bench/cost_table.py prices those")
    steps = baseline_steps or MODEL_INFO[model].default_steps
    items = list(layouts.items()) if isinstance(layouts, dict) else list(layouts)
    rows = ["| layout | resolution | frames (latent) | stage tokens | TFLOPs (paper) | TFLOPs (full) "
            "| speed-up (paper) | speed-up (full) | attention share | attention share per stage |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for res in resolutions:
        base = layout_cost(Layout(steps=(steps,), ends=(1.0,)), model, res, frames=frames, baseline_steps=steps)
        full = layout_cost(Layout(steps=(steps,), ends=(1.0,)), model, res, frames=frames, baseline_steps=steps,
                           convention="full")
        where = f"{base.resolution[0]}x{base.resolution[1]}"
        clip = f"{base.frames} ({base.latent_frames})"
        rows.append(f"| {steps} steps, full resolution | {where} | {clip} | {base.stages[0].tokens} "
                    f"| {base.tflops:.0f} | {full.tflops:.0f} | 1.00x | 1.00x | {base.attention_share:.1%} | |")
        for label, layout in items:
            p = layout_cost(layout, model, res, frames=frames, baseline_steps=steps)
            f = layout_cost(layout, model, res, frames=frames, baseline_steps=steps, convention="full")
            per_stage = ", ".join(f"{s.attention_share:.0%}" for s in p.stages)
            rows.append(f"| {label} | {where} | {clip} | {', '.join(str(s.tokens) for s in p.stages)} "
                        f"| {p.tflops:.0f} | {f.tflops:.0f} | {p.speedup:.2f}x | {f.speedup:.2f}x "
                        f"| {p.attention_share:.1%} | {per_stage} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    video = [n for n, s in MODELS.items() if s.is_video]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="wan2.1-t2v-14b", choices=video)
    ap.add_argument("--layouts", nargs="+", default=None,
                    help="preset names or inline STEPS;ENDS[;FRACTIONS] (default: the presets made for --model)")
    ap.add_argument("--resolutions", nargs="+", default=list(RESOLUTIONS), help="HEIGHTxWIDTH each")
    ap.add_argument("--frames", type=int, default=None,
                    help="video frames, k x the VAE's temporal factor + 1 (default: the model's)")
    ap.add_argument("--baseline-steps", type=int, default=None, help="default: the model's stock run")
    args = ap.parse_args(argv)
    try:
        if args.layouts is None:
            names = [n for n, p in PRESETS.items() if p.model == args.model]
            if not names:
                raise ValueError(f"no preset is made for {args.model} yet: name layouts with --layouts")
            args.layouts = names
        layouts = dict(parse_layout(t) for t in args.layouts)
        spec, steps = MODELS[args.model], args.baseline_steps or MODEL_INFO[args.model].default_steps
        table = video_table(layouts, args.model, args.resolutions, args.frames, args.baseline_steps)
        guidance = ("with its guidance (up to three calls a step)" if getattr(spec.transformer, "family", "") == "ltx2"
                    else "with CFG" if spec.cfg_batches == 2 else "without CFG")
        print(f"{args.model}, {args.frames or spec.default_frames} frames, against {steps} full-resolution steps "
              f"{guidance}; TFLOPs of the whole clip (transformer, text encoding, edge and final decodes). "
              f"Attention share: the attention products' share of the transformer's FLOPs (full convention).\n")
        print(table)
    except ValueError as err:
        print(f"video_cost: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
