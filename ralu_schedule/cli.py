"""``ralu-schedule``: presets, solving, plots, checks and costs from the command line.

Errors in the arguments print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .layout import Layout, Schedule
from .matching import Bounds, solve
from .presets import PARAMETERS, PRESETS, get_preset, preset

PROG = "ralu-schedule"


class UsageError(Exception):
    """Bad arguments: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
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
    p.add_argument("--base-shift", type=float, default=3.0, help="h0 of the sampler to match (default 3.0)")


def _add_solver_args(p):
    p.add_argument("--method", choices=["global", "single-start"], default="global")
    p.add_argument("--per-transition", action="store_true", help="one c per transition")
    p.add_argument("--shift-bounds", type=float, nargs=2, default=(0.5, 10.0), metavar=("LO", "HI"))
    p.add_argument("--z-bounds", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="bounds of Z = 1/sqrt(c) (default: 2 or the largest factor, to 100)")


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
    print(schedule.to_json() if args.json else format_schedule(schedule))


def _cmd_preset(args):
    if args.list:
        for name, p in sorted(PRESETS.items()):
            print(f"{name:<14} {p.model:<10} {p.resolution[0]}x{p.resolution[1]}  {p.description}")
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

    s = _schedule_from(args)
    plot_schedule(s, args.out)
    print(f"wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="RALU schedules: presets, NT-matching, export, costs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("preset", help="print a named schedule")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--parameters", choices=PARAMETERS, default="default")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser("solve", help="solve (c, h_k) for a layout")
    _add_layout_args(p)
    _add_solver_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser("check", help="validate a JSON schedule file and print it")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("plot", help="plot target vs matched timestep density")
    p.add_argument("--preset", help="a preset name")
    p.add_argument("--parameters", choices=PARAMETERS, default="default")
    p.add_argument("--schedule", help="a JSON schedule file")
    _add_layout_args(p, required=False)
    _add_solver_args(p)
    p.add_argument("--out", required=True, help="output image, e.g. density.png")
    p.set_defaults(func=_cmd_plot)

    from .cost import add_cost_parser

    add_cost_parser(sub, _add_layout_args, UsageError)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except (UsageError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except MissingDependency as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return 0


class MissingDependency(RuntimeError):
    pass


if __name__ == "__main__":
    sys.exit(main())
