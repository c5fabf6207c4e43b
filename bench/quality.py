"""Image-quality evidence without weights: RALU's parts, one at a time, on exact Gaussian data.

    python bench/quality.py [--seeds 128] [--size 64] [--plot docs/img/quality_spectra.png]
    python bench/quality.py --data solvers        # the per-stage solver table only

Prints, for the 7x and 4x presets, the spectral Frechet distance to the true data
distribution, band-wise power errors and the variance of each configuration (see
ralu_torch.analysis.quality), all run side by side in one process on the same seeds.
The solver table runs each preset with each diffusers flow-matching solver against a
full-resolution baseline of the same solver and the same number of model evaluations.
"""

from __future__ import annotations

import argparse
import time

import torch

from ralu_schedule import Layout, preset, solve
from ralu_schedule.export import model_evaluations
from ralu_torch.backends.gaussian import GaussianBackend, GaussianField, TexturePatchField
from ralu_torch.analysis.quality import (BANDS, configurations, flop_matched_steps, radial_log_ratio, region_metrics, run, selection_hit_rate,
                                spectrum_metrics)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=128)
    ap.add_argument("--size", type=int, default=64, help="field side in pixels")
    ap.add_argument("--exponent", type=float, default=2.0)
    ap.add_argument("--presets", nargs="+", default=["flux-dev-7x", "flux-dev-4x"])
    ap.add_argument("--baseline-steps", type=int, default=50)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--data", nargs="+", choices=["gaussian", "edged", "solvers"],
                    default=["gaussian", "edged", "solvers"])
    ap.add_argument("--edged-size", type=int, default=32, help="side of the edged field (dense covariances)")
    args = ap.parse_args(argv)
    if "gaussian" in args.data:
        stationary(args)
    if "edged" in args.data:
        edged(args)
    if "solvers" in args.data:
        solvers(args)


def solver_schedulers() -> dict:
    """Cost-model solver name -> the diffusers scheduler RALU steps with (None: built-in Euler)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler

    flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
    return {"euler": None, "heun": FlowMatchHeunDiscreteScheduler(),
            "dpm-multistep": DPMSolverMultistepScheduler(**flow), "unipc": UniPCMultistepScheduler(**flow)}


def baseline_steps_for(calls: int, solver: str) -> int:
    """Steps of a one-stage run of ``solver`` with ``calls`` model evaluations (or just under)."""
    n = 1
    while model_evaluations(n + 1, solver) <= calls:
        n += 1
    return n


def solvers(args):
    """Each solver with each preset, against full-resolution runs of the same solver with the
    same number of model evaluations and with the same FLOPs (cost model, 1024x1024)."""
    field = GaussianField(height=args.size, width=args.size, exponent=args.exponent)
    be = GaussianBackend(field)
    band_names = [f"{lo:g}-{hi:g}" for lo, hi in BANDS]
    print()
    print(f"Solvers: Gaussian field {args.size}x{args.size}, spectrum ~ |k|^-{args.exponent:g}; {args.seeds} seeds per "
          "row; RALU with the preset's parameters; baselines: same solver at full resolution with the same model calls, "
          "and with the same FLOPs at 1024x1024 (cost model)")
    print()
    print("| preset | solver | run | model calls | FD x1e3 | " + " | ".join(band_names) + " | var |")
    print("|---|---|---|---:|---:|" + "---:|" * len(band_names) + "---:|")
    for name in args.presets:
        sched = preset(name)
        for label, scheduler in solver_schedulers().items():
            calls = sum(model_evaluations(n, label) for n in sched.layout.steps)
            n = baseline_steps_for(calls, label)
            n_flops = baseline_steps_for(flop_matched_steps(name, solver=label), label)
            rows = [("RALU", sched)] + [(f"{m} steps, full res., same {what}", solve(Layout(steps=(m,), ends=(1.0,))))
                                        for m, what in ((n, "calls"), (n_flops, "FLOPs"))]
            for run_name, s in rows:
                c = sum(model_evaluations(k, label) for k in s.layout.steps)
                x, _ = run(be, s, args.seeds, solver=scheduler)
                m = spectrum_metrics(x, field)
                print(f"| {name} | {label} | {run_name} | {c} | {1e3 * m['fd']:.2f} | "
                      + " | ".join(f"{v:+.3f}" for v in m["bands"]) + f" | {m['var']:.3f} |")


def edged(args):
    """The texture-patch mixture: does the detail land where the data has it?"""
    n = args.edged_size
    if n % 8:
        raise SystemExit(f"--edged-size must be a multiple of 8, got {n}")
    a, b = n // 8, n // 2     # four candidate regions of side 3n/8, one per quadrant
    field = TexturePatchField(height=n, width=n, region=3 * n // 8, positions=((a, a), (a, b), (b, a), (b, b)),
                              k0=1.0 / n)
    be = GaussianBackend(field)
    truth = region_metrics(field.sample(1024, torch.Generator().manual_seed(20_000)), field)
    print()
    print(f"Texture-patch field {args.edged_size}x{args.edged_size}: smooth background (|k|^-3) plus a rough texture "
          f"(variance {field.texture_variance:g}) in one of {len(field.positions)} {field.region}x{field.region} "
          f"regions; {args.seeds} seeds per row")
    print("detail = x - U(pool2(x)); columns: log10(mean detail energy / the data's), in the textured region and "
          "outside the candidate regions")
    share = field.region**2 / (field.height * field.width)
    print(f"'selected': share of tokens upsampled at the partial transition that lie in the textured region "
          f"(blind choice: {share:.3f})")
    print(f"{'configuration':<42} {'FD x1e3':>8} {'texture':>8} {'backgr.':>8} {'var':>6} {'selected':>9}")

    def row(label, samples, result=None):
        m = spectrum_metrics(samples, field)
        r = region_metrics(samples, field)
        lt = torch.log10(torch.tensor(r["texture"] / truth["texture"])).item()
        lb = torch.log10(torch.tensor(r["background"] / truth["background"])).item()
        hit = selection_hit_rate(result, samples, field) if result is not None else None
        print(f"{label:<42} {1e3 * m['fd']:>8.2f} {lt:>+8.3f} {lb:>+8.3f} {m['var']:>6.3f} "
              f"{'' if hit is None else f'{hit:.3f}':>9}")

    row("exact data samples (sampling floor)", field.sample(args.seeds, torch.Generator().manual_seed(10_000)))
    x, _ = run(be, solve(Layout(steps=(args.baseline_steps,), ends=(1.0,))), args.seeds)
    row(f"baseline {args.baseline_steps} steps", x)
    for name in args.presets:
        print(f"-- {name}")
        for label, (sched, opts) in configurations(name).items():
            x, res = run(be, sched, args.seeds, **opts)
            row(label, x, res)


def stationary(args):
    field = GaussianField(height=args.size, width=args.size, exponent=args.exponent)
    be = GaussianBackend(field)
    band_names = [f"{lo:g}-{hi:g}" for lo, hi in BANDS]
    print(f"Gaussian field {args.size}x{args.size}, 3 channels, spectrum ~ |k|^-{args.exponent:g}; "
          f"{args.seeds} seeds per row; h0 = 3")
    print(f"{'configuration':<42} {'FD x1e3':>8} " + " ".join(f"{b:>10}" for b in band_names) + f" {'var':>6}")

    def row(label, samples):
        m = spectrum_metrics(samples, field)
        print(f"{label:<42} {1e3 * m['fd']:>8.2f} " + " ".join(f"{v:>+10.3f}" for v in m["bands"])
              + f" {m['var']:>6.3f}")
        return m

    curves = {}
    exact = field.sample(args.seeds, torch.Generator().manual_seed(10_000))
    row("exact data samples (sampling floor)", exact)
    base = solve(Layout(steps=(args.baseline_steps,), ends=(1.0,)))
    t0 = time.perf_counter()
    x, _ = run(be, base, args.seeds)
    row(f"baseline {args.baseline_steps} steps", x)
    curves[f"baseline {args.baseline_steps} steps"] = radial_log_ratio(x, field)
    for name in args.presets:
        print(f"-- {name}")
        for label, (sched, opts) in configurations(name).items():
            x, _ = run(be, sched, args.seeds, **opts)
            row(label, x)
            if name == args.presets[0]:
                curves[label] = radial_log_ratio(x, field)
    print(f"(all rows: {time.perf_counter() - t0:.0f} s)")
    if args.plot:
        plot(curves, args.plot, args.presets[0])


def plot(curves, out, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for label, (k, v) in curves.items():
        style = "-" if label.startswith(("baseline", "RALU, authors", "RALU, re-opt")) else "--"
        ax.plot(k, v, style, label=label, lw=1.5)
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0.25, color="grey", lw=0.8, ls=":")
    ax.text(0.255, ax.get_ylim()[0] * 0.9, "low-res Nyquist", fontsize=7, color="grey")
    ax.set_xlabel("radial frequency (cycles per pixel)")
    ax.set_ylabel("log10(sample power / true power)")
    ax.set_title(f"{name} and its ablations on exact Gaussian data", fontsize=10)
    ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
