"""How the flux-dev-10x and flux-schnell presets were chosen: a layout search measured on
the analytic quality benchmark (exact Gaussian data, ralu_torch.analysis.quality).

    python bench/preset_search.py [--seeds 128] [--size 64] [--which dev-10x schnell]

dev-10x: 3- and 4-stage layouts whose cost-model TFLOPs (FLUX.1-dev, 1024x1024) are at least
10x below the 50-step baseline, each solved with ralu_schedule (h0 = 3, as the FLUX presets),
against the full-resolution baseline of the same FLOPs and flux-dev-7x. schnell: 4-step
layouts at shift 1.0 (FLUX.1-schnell's static shift; no guidance), against schnell's own
4-step run. FD: spectral Frechet distance to the data, x1e3 (lower is better).
"""

from __future__ import annotations

import argparse

from ralu_schedule import Layout, preset, solve
from ralu_schedule.cost import layout_cost
from ralu_torch.analysis.quality import run, spectrum_metrics
from ralu_torch.backends.gaussian import GaussianBackend, GaussianField

DEV_CANDIDATES = [
    # steps, ends, fractions, factors
    ((2, 2, 3), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 2, 3), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 2, 3), (0.3, 0.45, 1.0), (0.2, 1.0), (2, 2)),
    ((3, 2, 3), (0.3, 0.45, 1.0), (0.1, 1.0), (2, 2)),
    ((2, 3, 3), (0.2, 0.35, 1.0), (0.1, 1.0), (2, 2)),
    ((1, 2, 3), (0.2, 0.3, 1.0), (0.1, 1.0), (2, 2)),
    ((3, 1, 3), (0.3, 0.4, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 4), (0.45, 1.0), (1.0,), (2,)),
    ((4, 4), (0.5, 1.0), (1.0,), (2,)),
    ((2, 2, 2, 3), (0.15, 0.3, 0.4, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((3, 2, 2, 3), (0.2, 0.35, 0.45, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((3, 3, 2, 3), (0.2, 0.4, 0.5, 1.0), (1.0, 0.2, 1.0), (2, 2, 2)),
    ((4, 3, 3), (0.25, 0.45, 1.0), (1.0, 1.0), (2, 2)),
    ((3, 3, 3), (0.25, 0.45, 1.0), (1.0, 1.0), (2, 2)),
    # second round, around the best of the first
    ((4, 3, 3), (0.2, 0.4, 1.0), (1.0, 1.0), (2, 2)),
    ((4, 3, 3), (0.3, 0.5, 1.0), (1.0, 1.0), (2, 2)),
    ((3, 1, 3), (0.25, 0.35, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 1, 3), (0.35, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((3, 2, 1, 3), (0.2, 0.35, 0.45, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((4, 2, 1, 3), (0.2, 0.35, 0.45, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((4, 2, 1, 3), (0.25, 0.4, 0.5, 1.0), (1.0, 0.1, 1.0), (2, 2, 2)),
    ((4, 2, 2, 3), (0.15, 0.3, 0.45, 1.0), (1.0, 1.0, 1.0), (2, 2, 2)),
]

SCHNELL_CANDIDATES = [
    ((1, 1, 2), (0.2, 0.3, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.3, 0.45, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.4, 0.55, 1.0), (0.3, 1.0), (2, 2)),
    ((2, 2), (0.3, 1.0), (1.0,), (2,)),
    ((2, 2), (0.45, 1.0), (1.0,), (2,)),
    ((1, 3), (0.3, 1.0), (1.0,), (2,)),
    # second round
    ((1, 1, 2), (0.45, 0.6, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.5, 0.65, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 1, 2), (0.55, 0.7, 1.0), (0.3, 1.0), (2, 2)),
    ((1, 3), (0.45, 1.0), (1.0,), (2,)),
    ((1, 3), (0.6, 1.0), (1.0,), (2,)),
]


def fd(be, field, schedule, seeds):
    x, _ = run(be, schedule, seeds)
    return 1e3 * spectrum_metrics(x, field)["fd"]


def table(title, candidates, model, base_shift, seeds, size, refs):
    field = GaussianField(height=size, width=size)
    be = GaussianBackend(field, base_shift=base_shift)
    print()
    print(title)
    print()
    print("| layout (steps; ends; fractions) | TFLOPs | speed-up vs FLUX.1-dev 50 steps | FD x1e3 |")
    print("|---|---:|---:|---:|")
    for label, sched, lay in refs:
        c = layout_cost(lay, model, text_tokens=512)
        print(f"| {label} | {c.tflops:.1f} | {c.speedup:.2f}x | {fd(be, field, sched, seeds):.2f} |")
    for steps, ends, fractions, factors in candidates:
        lay = Layout(steps=steps, ends=ends, fractions=fractions, factors=factors, base_shift=base_shift)
        c = layout_cost(lay, model, text_tokens=512)
        label = f"{steps}; {ends}; {fractions}".replace("(", "").replace(")", "").replace(",;", ";")
        print(f"| {label} | {c.tflops:.1f} | {c.speedup:.2f}x | {fd(be, field, solve(lay), seeds):.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--which", nargs="+", choices=["dev-10x", "schnell"], default=["dev-10x", "schnell"])
    args = ap.parse_args(argv)
    if "dev-10x" in args.which:
        refs = [("flux-dev-7x (authors' parameters)", preset("flux-dev-7x"), preset("flux-dev-7x").layout)]
        for n in (4, 5):
            lay = Layout(steps=(n,), ends=(1.0,))
            refs.append((f"baseline {n} steps, full resolution", solve(lay), lay))
        table("FLUX.1-dev, h0 = 3: candidates for flux-dev-10x", DEV_CANDIDATES, "flux-dev", 3.0, args.seeds,
              args.size, refs)
    if "schnell" in args.which:
        lay = Layout(steps=(4,), ends=(1.0,), base_shift=1.0)
        refs = [("schnell 4 steps, full resolution", solve(lay), lay)]
        table("FLUX.1-schnell, shift 1.0, 512 text tokens: 4-step layouts", SCHNELL_CANDIDATES, "flux-schnell", 1.0,
              args.seeds, args.size, refs)


if __name__ == "__main__":
    main()
