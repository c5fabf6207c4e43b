"""``ralu-schedule``: presets, solving, plots, checks and costs from the command line.

Errors in the arguments print one line on stderr and exit with status 2: among them an
empty (or blank) string option, and options that contradict each other or that the chosen
input would ignore (a preset and a layout, ``--method`` with a solved schedule, ...), so that
nothing given is silently dropped.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._errors import UsageError
from ._files import output_path
from ._main import run_main
from .caching import CACHES, parse_cache
from .cost import CONVENTIONS, MODELS, REFERENCE_MODES, format_cost, layout_cost
from .export import FORMATS, SOLVERS, export
from .layout import DEFAULT_BASE_SHIFT, Layout, Schedule
from .matching import DEFAULT_SHIFT_BOUNDS, DEFAULT_Z_MAX, METHODS, Z_SPAN, Bounds, solve
from .models import MODEL_INFO
from .presets import EVIDENCE, PARAMETERS, PRESETS, get_preset, preset

PROG = "ralu-schedule"


def _text(allowed: str):
    """An argparse ``type`` for a string option: refuses an empty or blank value in one line
    that says what is allowed (``argument --model: must not be empty; one of ...``)."""
    def text(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"must not be empty; {allowed}, got {value!r}")
        return value
    return text


PRESET_NAME = _text("known presets: " + ", ".join(sorted(PRESETS)))
SCHEDULE_FILE = _text("the path of a JSON schedule file")
OUT = _text("an image file such as density.png, or a directory")

#: Options that describe a layout, and options of the solver: given with a preset or a schedule
#: file (already solved) they would be ignored, so they are refused instead.
LAYOUT_OPTIONS = {"steps": "--steps", "ends": "--ends", "fractions": "--fractions", "factor": "--factor",
                  "base_shift": "--base-shift"}
SOLVER_OPTIONS = {"method": "--method", "per_transition": "--per-transition", "shift_bounds": "--shift-bounds",
                  "z_bounds": "--z-bounds", "strength": "--strength"}


def _given(args, options: dict) -> list:
    """The flags of ``options`` that the command line set (their defaults are ``None``/``False``)."""
    return [flag for dest, flag in options.items() if getattr(args, dest, None) not in (None, False)]


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
    p.add_argument("--base-shift", type=float, default=None,
                   help=f"h0 of the sampler to match (default {DEFAULT_BASE_SHIFT})")


def _add_solver_args(p):
    p.add_argument("--method", choices=METHODS, default=None, help=f"(default {METHODS[0]})")
    p.add_argument("--per-transition", action="store_true", help="one c per transition")
    p.add_argument("--shift-bounds", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="bounds of each shift h_k (default %g %g)" % DEFAULT_SHIFT_BOUNDS)
    p.add_argument("--z-bounds", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help=f"bounds of Z = 1/sqrt(c) (default: f to {Z_SPAN:g} f for the largest factor f, "
                        f"{DEFAULT_Z_MAX:g} at f = 2)")


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
    base_shift = DEFAULT_BASE_SHIFT if args.base_shift is None else args.base_shift
    return Layout(steps=args.steps, ends=args.ends, fractions=args.fractions, factors=factors,
                  base_shift=base_shift)


def _source(args, sources: str) -> str:
    """Which one input names the schedule: ``"preset"``, ``"schedule"`` (a JSON file) or
    ``"layout"``. Refuses none, several, and options the named input would ignore; ``sources``
    says in words what this command accepts."""
    named = []
    if getattr(args, "preset", None) is not None:
        named.append(("preset", f"a preset ({args.preset})"))
    if getattr(args, "schedule", None) is not None:
        named.append(("schedule", f"a --schedule file ({args.schedule})"))
    layout = _given(args, LAYOUT_OPTIONS)
    if layout:
        named.append(("layout", "a layout (" + ", ".join(layout) + ")"))
    if len(named) > 1:
        raise UsageError(f"name one schedule, {sources}; got " + " and ".join(w for _, w in named))
    if not named:
        raise UsageError(f"name one schedule, {sources}")
    kind = named[0][0]
    if kind == "layout" and (args.steps is None or args.ends is None):
        raise UsageError(f"a layout needs both --steps and --ends; got only {', '.join(layout)}")
    solver = _given(args, SOLVER_OPTIONS)
    if kind != "layout" and solver:
        raise UsageError(f"{', '.join(solver)} only apply when solving a layout; {named[0][1]} is already solved")
    if kind != "preset" and getattr(args, "parameters", None) is not None:
        raise UsageError(f"--parameters chooses a preset's parameters; {named[0][1]} is not a preset")
    return kind


def _schedule_from(args) -> Schedule:
    """A preset, a JSON file, or a layout solved now, whichever one the arguments name."""
    kind = _source(args, "a --preset, a --schedule file or a layout (--steps and --ends)")
    if kind == "preset":
        return preset(args.preset, "default" if args.parameters is None else args.parameters)
    if kind == "schedule":
        return Schedule.load(args.schedule)
    layout = _layout_from(args)
    if getattr(args, "strength", None) is not None:
        layout = layout.for_strength(args.strength)
    return solve(layout, method=METHODS[0] if args.method is None else args.method, per_transition=args.per_transition,
                 bounds=Bounds(shift=tuple(DEFAULT_SHIFT_BOUNDS if args.shift_bounds is None else args.shift_bounds), z=args.z_bounds))


def format_schedule(s: Schedule) -> str:
    lay = s.layout
    name = s.info.get("preset", "schedule")
    extra = f" ({s.info['parameters']} parameters)" if "parameters" in s.info else ""
    start = f", starting at t = {lay.start:.4f}" if lay.start else ""
    lines = [f"{name}{extra}: {lay.num_stages} stages, {lay.total_steps} steps{start}, base shift h0 = "
             f"{lay.base_shift:.4g}, paper metric (JSD) = {s.jsd:.4f}", "",
             f"{'stage':>5} {'start':>7} {'end':>7} {'steps':>5} {'shift':>7}  timesteps t"]
    for i, st in enumerate(s.stages, 1):
        ts = " ".join(f"{t:.4f}" for t in st.timesteps)
        lines.append(f"{i:>5} {st.start:>7.4f} {st.end:>7.4f} {st.steps:>5} {st.shift:>7.3f}  {ts}")
    if s.transitions:
        lines += ["", f"{'trans':>5} {'at e':>7} {'restart s':>9} {'a':>7} {'b':>7} {'c':>8} "
                      f"{'Z':>7} {'factor':>6} {'fraction':>8}"]
        for i, t in enumerate(s.transitions, 1):
            lines.append(f"{i:>5} {t.at:>7.4f} {t.restart:>9.4g} {t.a:>7.4g} {t.b:>7.4f} {t.c:>8.4g} "
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
        extra = [what for what, on in [(f"preset name ({args.name})", args.name is not None),
                                       ("--parameters", args.parameters is not None),
                                       ("--format", args.format is not None), ("--json", args.json)] if on]
        if extra:
            raise UsageError(f"--list prints the table of presets; it takes no {', '.join(extra)}")
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
    _emit(args, preset(args.name, "default" if args.parameters is None else args.parameters))


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
    if _source(args, "a preset or a layout (--steps and --ends)") == "preset":
        pre = get_preset(args.preset)
        layout = pre.layout
        model = pre.model if args.model is None else args.model
        res = args.resolution
        if res is None and model == pre.model:
            res = pre.resolution                                      # None: the model's default
    else:
        layout, model, res = _layout_from(args), "flux-dev" if args.model is None else args.model, args.resolution
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
    p.add_argument("name", nargs="?", type=PRESET_NAME)
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--parameters", choices=PARAMETERS, default=None, help="(default: default)")
    _add_format_args(p)
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser("solve", help="solve (c, h_k) for a layout")
    _add_layout_args(p)
    _add_solver_args(p)
    p.add_argument("--strength", type=float, default=None,
                   help="start from an image at this strength, in (0, 1]: the layout (ends on the full range) moves "
                        "onto the range an image-to-image pipeline covers and all its steps run there")
    _add_format_args(p)
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser("check", help="validate a JSON schedule file and print it")
    p.add_argument("file", type=SCHEDULE_FILE)
    _add_format_args(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("plot", help="plot target vs matched timestep density")
    p.add_argument("--preset", type=PRESET_NAME, help="a preset name")
    p.add_argument("--parameters", choices=PARAMETERS, default=None, help="with --preset (default: default)")
    p.add_argument("--schedule", type=SCHEDULE_FILE, help="a JSON schedule file")
    _add_layout_args(p, required=False)
    _add_solver_args(p)
    p.add_argument("--out", required=True, type=OUT, help="output image, e.g. density.png, or a directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("cost", help="FLOPs and predicted speed-up of a preset or layout")
    p.add_argument("preset", nargs="?", type=PRESET_NAME, help="a preset name (or give --steps and --ends)")
    _add_layout_args(p, required=False)
    p.add_argument("--model", default=None, type=_text("one of " + ", ".join(MODELS)),
                   help=f"one of {', '.join(MODELS)} (default: the preset's, else flux-dev)")
    p.add_argument("--resolution", default=None, type=_text("HEIGHTxWIDTH, e.g. 1024x1024"),
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
                   type=_text(f"one of {', '.join(CACHES)}, with options as NAME:key=value,..."),
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
    def body():
        args = build_parser().parse_args(argv)
        args.func(args)

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
