"""``ralu-schedule``: presets, solving, plots, checks and costs from the command line.

Errors in the arguments print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._errors import MissingDependency, UsageError
from ._files import output_path
from .caching import parse_cache
from .cost import CONVENTIONS, MODELS, REFERENCE_MODES, format_cost, layout_cost
from .export import FORMATS, SOLVERS, export
from .layout import DEFAULT_BASE_SHIFT, Layout, Schedule
from .matching import DEFAULT_SHIFT_BOUNDS, DEFAULT_Z_MAX, METHODS, Bounds, solve
from .models import MODEL_INFO
from .presets import EVIDENCE, PARAMETERS, PRESETS, get_preset, preset

PROG = "ralu-schedule"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)          # --base-shif is not --base-shift
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's own errors: one line, no usage block
        raise UsageError(message)


def _add_layout_args(p, required=True):
    p.add_argument("--steps", type=int, nargs="+", required=required, help="Euler steps per stage")
    p.add_argument("--ends", type=float, nargs="+", required=required,
                   help="data-time where each stage ends; strictly increasing, last = 1.0")
    p.add_argument("--fractions", type=float, nargs="+",
                   help="per transition: fraction of remaining low-res blocks upsampled (default 1.0)")
    p.add_argument("--factor", type=int, nargs="+", default=None,
                   help="upsampling factor per axis: one value, or one per transition (default 2)")
    p.add_argument("--base-shift", type=float, default=DEFAULT_BASE_SHIFT,
                   help=f"h0 of the sampler to match (default {DEFAULT_BASE_SHIFT})")


def _add_solver_args(p):
    p.add_argument("--method", choices=METHODS, default=METHODS[0])
    p.add_argument("--per-transition", action="store_true", help="one c per transition")
    p.add_argument("--shift-bounds", type=float, nargs=2, default=DEFAULT_SHIFT_BOUNDS, metavar=("LO", "HI"))
    p.add_argument("--z-bounds", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help=f"bounds of Z = 1/sqrt(c) (default: 2 or the largest factor, to {DEFAULT_Z_MAX:g})")


def _add_format_args(p):
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="json: the schedule contract; sigmas: one line of sigmas per stage (end included); "
                        "diffusers: per-stage scheduler settings; k-diffusion: sigma lists and transitions "
                        "(default: a readable table)")
    p.add_argument("--json", action="store_true", help="same as --format json")


def _layout_from(args) -> Layout:
    k = len(args.steps) - 1
    factors = args.factor
    if factors is not None and len(factors) == 1:
        factors = factors * k
    return Layout(steps=args.steps, ends=args.ends, fractions=args.fractions, factors=factors,
                  base_shift=args.base_shift)


def _schedule_from(args) -> Schedule:
    """A preset, a JSON file, or a layout solved now, whichever the arguments name."""
    if getattr(args, "preset", None):
        return preset(args.preset, args.parameters)
    if getattr(args, "schedule", None):
        return Schedule.load(args.schedule)
    if args.steps is None or args.ends is None:
        raise UsageError("name a preset, a --schedule file, or a layout with --steps and --ends")
    return solve(_layout_from(args), method=args.method, per_transition=args.per_transition,
                 bounds=Bounds(shift=tuple(args.shift_bounds), z=args.z_bounds))


def format_schedule(s: Schedule) -> str:
    lay = s.layout
    name = s.info.get("preset", "schedule")
    extra = f" ({s.info['parameters']} parameters)" if "parameters" in s.info else ""
    lines = [f"{name}{extra}: {lay.num_stages} stages, {lay.total_steps} steps, base shift h0 = "
             f"{lay.base_shift:.4g}, paper metric (JSD) = {s.jsd:.4f}", "",
             f"{'stage':>5} {'start':>7} {'end':>7} {'steps':>5} {'shift':>7}  timesteps t"]
    for i, st in enumerate(s.stages, 1):
        ts = " ".join(f"{t:.4f}" for t in st.timesteps)
        lines.append(f"{i:>5} {st.start:>7.4f} {st.end:>7.4f} {st.steps:>5} {st.shift:>7.3f}  {ts}")
    if s.transitions:
        lines += ["", f"{'trans':>5} {'at e':>7} {'restart s':>9} {'a':>7} {'b':>7} {'c':>8} "
                      f"{'Z':>7} {'factor':>6} {'fraction':>8}"]
        for i, t in enumerate(s.transitions, 1):
            lines.append(f"{i:>5} {t.at:>7.4f} {t.restart:>9.4f} {t.a:>7.4f} {t.b:>7.4f} {t.c:>8.5f} "
                         f"{t.c ** -0.5:>7.3f} {t.factor:>6} {t.fraction:>8.3g}")
    return "\n".join(lines)


def _emit(args, schedule: Schedule):
    fmt = args.format
    if args.json:
        if fmt not in (None, "json"):
            raise UsageError(f"--json is --format json; it cannot be combined with --format {fmt}")
        fmt = "json"
    print(format_schedule(schedule) if fmt is None else export(schedule, fmt))


def _cmd_preset(args):
    if args.list:
        width = max(map(len, PRESETS))
        mw = max(len(p.model) for p in PRESETS.values())
        print(f"{'preset':<{width}}  {'model':<{mw}}  {'evidence':<18}  description")
        for name, p in sorted(PRESETS.items()):
            print(f"{name:<{width}}  {p.model:<{mw}}  {p.evidence:<18}  {p.description}")
        print()
        for kind, meaning in EVIDENCE.items():
            print(f"{kind}: {meaning}")
        return
    if not args.name:
        raise UsageError("name a preset (or --list); known presets: " + ", ".join(sorted(PRESETS)))
    get_preset(args.name)
    _emit(args, preset(args.name, args.parameters))


def _cmd_solve(args):
    _emit(args, _schedule_from(args))


def _cmd_check(args):
    s = Schedule.load(args.file)
    _emit(args, s)


def _cmd_plot(args):
    from .plot import plot_schedule

    out = output_path(args.out, "density.png", overwrite=args.overwrite)     # before any work
    s = _schedule_from(args)
    plot_schedule(s, out)
    print(f"wrote {out}")


def _cmd_cost(args):
    if args.preset:
        if args.steps is not None or args.ends is not None:
            raise UsageError("give a preset or --steps/--ends, not both")
        pre = get_preset(args.preset)
        layout, model = pre.layout, args.model or pre.model
        res = args.resolution or (pre.resolution if model == pre.model else None)   # None: the model's default
    else:
        if args.steps is None or args.ends is None:
            raise UsageError("name a preset, or a layout with --steps and --ends")
        layout, model, res = _layout_from(args), args.model or "flux-dev", args.resolution   # None: the model's default
    steps = args.baseline_steps
    if steps is None:
        steps = MODEL_INFO[model].default_steps if model in MODEL_INFO else 50
    c = layout_cost(layout, model, res, convention=args.convention, baseline_steps=steps,
                    solver=args.solver, cache=None if args.cache is None else parse_cache(args.cache),
                    text_tokens=args.text_tokens, frames=args.frames, references=args.references,
                    reference_images=args.reference_images)
    print(json.dumps(c.to_dict(), indent=2) if args.json else format_cost(c))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="RALU schedules: presets, NT-matching, export, costs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("preset", help="print a named schedule")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--parameters", choices=PARAMETERS, default="default")
    _add_format_args(p)
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser("solve", help="solve (c, h_k) for a layout")
    _add_layout_args(p)
    _add_solver_args(p)
    _add_format_args(p)
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser("check", help="validate a JSON schedule file and print it")
    p.add_argument("file")
    _add_format_args(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("plot", help="plot target vs matched timestep density")
    p.add_argument("--preset", help="a preset name")
    p.add_argument("--parameters", choices=PARAMETERS, default="default")
    p.add_argument("--schedule", help="a JSON schedule file")
    _add_layout_args(p, required=False)
    _add_solver_args(p)
    p.add_argument("--out", required=True, help="output image, e.g. density.png, or a directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("cost", help="FLOPs and predicted speed-up of a preset or layout")
    p.add_argument("preset", nargs="?", help="a preset name (or give --steps and --ends)")
    _add_layout_args(p, required=False)
    p.add_argument("--model", default=None, help=f"one of {', '.join(MODELS)} (default: the preset's, else flux-dev)")
    p.add_argument("--resolution", default=None,
                   help="HEIGHTxWIDTH (default: the preset's, else the model's default size)")
    p.add_argument("--frames", type=int, default=None,
                   help="video models: the clip's frames, 4k + 1 (default: the model's, e.g. 81)")
    p.add_argument("--convention", choices=CONVENTIONS, default="paper")
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="steps of the full-resolution baseline (default: the model's stock run, e.g. 50 for "
                        "flux-dev, 4 for flux-schnell, 35 for chroma)")
    p.add_argument("--solver", choices=tuple(SOLVERS), default="euler",
                   help="per-stage solver: sets transformer calls per step (heun: 2 n - 1)")
    p.add_argument("--cache", default=None, metavar="NAME[:key=value,...]",
                   help="a fixed-pattern step cache restarted per stage, e.g. taylorseer:interval=3,warmup=3")
    p.add_argument("--text-tokens", type=int, default=None,
                   help="prompt tokens (max_sequence_length where the pipeline pads to it) instead of the "
                        "model's default")
    p.add_argument("--references", choices=REFERENCE_MODES, default=None,
                   help="models with reference images (flux-kontext-dev, qwen-image-edit, ...): every stage sees "
                        "them at full resolution (default) or at the stage's resolution")
    p.add_argument("--reference-images", type=int, default=None,
                   help="reference images to price (default: the model's, e.g. 1; FLUX.2 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_cost)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except ValueError as err:              # UsageError included
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except MissingDependency as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
