"""RALU stacked with temporal caching and FLUX.1-schnell: the paper's stacked TFLOPs rows
recomputed with the cost model, and (``--quality``) stacked quality on the analytic backend.

    python bench/compose.py               # the TFLOPs table next to the paper's (the cost model only)
    python bench/compose.py --quality     # plus FD on exact Gaussian data (sampling)

Stacked rows: the paper's 5x layout is not published; the cost model finds it (3+7+5 steps,
10% of tokens at the first transition; bench/compose.py --search lists every layout within
1% of 540.5 TFLOPs). TaylorSeer's pattern is diffusers' rule (ralu_schedule.caching),
restarted in every stage, predicted steps counted free as the paper does.
"""

from __future__ import annotations

import argparse
import itertools

from ralu_schedule import Layout, get_preset, preset, solve
from ralu_schedule.caching import TaylorSeerPolicy
from ralu_schedule.cost import layout_cost

FIVE_X = Layout(steps=(3, 7, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1, 1.0))
SCHNELL_4 = Layout(steps=(4,), ends=(1.0,), base_shift=1.0)

# (label, layout, model, cache, paper TFLOPs, paper speed-up, command)
ROWS = [
    ("FLUX.1-dev 50 steps", Layout(steps=(50,), ends=(1.0,)), "flux-dev", None, 2991.0, 1.00,
     "ralu-schedule cost --steps 50 --ends 1.0"),
    ("RALU 5x", FIVE_X, "flux-dev", None, 540.5, None,
     "ralu-schedule cost --steps 3 7 5 --ends 0.2 0.3 1.0 --fractions 0.1 1.0"),
    ("RALU 5x + TaylorSeer (W=3)", FIVE_X, "flux-dev", TaylorSeerPolicy(interval=3, warmup=3), 410.7, 7.28,
     "... --cache taylorseer:interval=3,warmup=3"),
    ("RALU 5x + TaylorSeer (W=2)", FIVE_X, "flux-dev", TaylorSeerPolicy(interval=3, warmup=2), 331.4, 9.03,
     "... --cache taylorseer:interval=3,warmup=2"),
    ("FLUX.1-schnell 4 steps", SCHNELL_4, "flux-schnell", None, 252.9, 11.83,
     "ralu-schedule cost --steps 4 --ends 1.0 --model flux-schnell --text-tokens 512"),
    ("FLUX.1-schnell + RALU (flux-schnell-16x)", get_preset("flux-schnell-16x").layout, "flux-schnell", None, 187.9,
     15.91, "ralu-schedule cost flux-schnell-16x --text-tokens 512"),
    ("flux-dev-10x (this project)", get_preset("flux-dev-10x").layout, "flux-dev", None, None, None,
     "ralu-schedule cost flux-dev-10x"),
    ("flux-dev-10x + TaylorSeer (W=2)", get_preset("flux-dev-10x").layout, "flux-dev",
     TaylorSeerPolicy(interval=3, warmup=2), None, None, "... --cache taylorseer:interval=3,warmup=2"),
]


def tflops_table():
    print("| configuration | TFLOPs | speed-up | paper TFLOPs | paper speed-up | gap |")
    print("|---|---:|---:|---:|---:|---:|")
    base = layout_cost(Layout(steps=(1,), ends=(1.0,)), "flux-dev").baseline_tflops
    for label, lay, model, cache, paper, paper_x, _ in ROWS:
        c = layout_cost(lay, model, cache=cache, text_tokens=512)
        gap = "" if paper is None else f"{100 * (c.tflops - paper) / paper:+.2f}%"
        print(f"| {label} | {c.tflops:.1f} | {base / c.tflops:.2f}x | {'' if paper is None else f'{paper:.1f}'} | "
              f"{'' if paper_x is None else f'{paper_x:.2f}x'} | {gap} |")


def search():
    """Every 3-stage layout (steps 1..10, fraction 0.1..0.5) within 1% of the paper's 5x row."""
    print("| steps | fraction | TFLOPs | + TaylorSeer W=3 | + TaylorSeer W=2 |")
    print("|---|---:|---:|---:|---:|")
    for n in itertools.product(range(1, 11), repeat=3):
        for r in (0.1, 0.2, 0.3, 0.4, 0.5):
            lay = Layout(steps=n, ends=(0.2, 0.3, 1.0), fractions=(r, 1.0))
            c = layout_cost(lay)
            if abs(c.tflops - 540.5) / 540.5 < 0.01:
                w3 = layout_cost(lay, cache=TaylorSeerPolicy(interval=3, warmup=3)).tflops
                w2 = layout_cost(lay, cache=TaylorSeerPolicy(interval=3, warmup=2)).tflops
                print(f"| {n} | {r} | {c.tflops:.1f} | {w3:.1f} | {w2:.1f} |")


def quality(seeds: int, size: int):
    """FD of RALU alone and stacked with a TaylorSeer-style velocity cache (analytic backend)."""
    from ralu_torch.analysis.quality import TaylorVelocity, run, spectrum_metrics
    from ralu_torch.backends.gaussian import GaussianBackend, GaussianField

    field = GaussianField(height=size, width=size)
    print()
    print(f"Stacked quality: Gaussian field {size}x{size}, {seeds} seeds; TaylorSeer = the velocity extrapolated "
          "to first order from the last full steps, restarted per stage")
    print()
    print("| schedule | cache | model calls (full + predicted) | TFLOPs (cost model) | FD x1e3 |")
    print("|---|---|---:|---:|---:|")
    runs = [("flux-dev-7x", preset("flux-dev-7x")), ("flux-dev-10x", solve(get_preset("flux-dev-10x").layout))]
    for n in (5, 7):
        runs.append((f"{n} steps, full resolution", solve(Layout(steps=(n,), ends=(1.0,)))))
    for label, sched in runs:
        for name, policy in (("none", None), ("TaylorSeer W=3", TaylorSeerPolicy(interval=3, warmup=3)),
                             ("TaylorSeer W=2", TaylorSeerPolicy(interval=3, warmup=2))):
            be = GaussianBackend(field)
            if policy is not None:
                be = TaylorVelocity(be, policy)
            x, _ = run(be, sched, seeds)
            calls = sum(sched.layout.steps)
            full = be.full if policy is not None else calls
            cost = layout_cost(sched.layout, cache=policy).tflops
            print(f"| {label} | {name} | {full} + {calls - full} | {cost:.1f} | "
                  f"{1e3 * spectrum_metrics(x, field)['fd']:.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--search", action="store_true")
    ap.add_argument("--seeds", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    tflops_table()
    if args.search:
        print()
        search()
    if args.quality:
        quality(args.seeds, args.size)


if __name__ == "__main__":
    main()
