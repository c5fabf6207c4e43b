"""Image-quality evidence without weights: RALU's parts, one at a time, on exact Gaussian data.

    python bench/quality.py [--seeds 128] [--size 64] [--plot docs/img/quality_spectra.png]

Prints, for the 7x and 4x presets, the spectral Frechet distance to the true data
distribution, band-wise power errors and the variance of each configuration (see
ralu_torch.quality), all run side by side in one process on the same seeds.
"""

from __future__ import annotations

import argparse
import time

import torch

from ralu_schedule import Layout, solve
from ralu_torch.backends.gaussian import GaussianBackend, GaussianField
from ralu_torch.quality import BANDS, configurations, radial_log_ratio, run, spectrum_metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=128)
    ap.add_argument("--size", type=int, default=64, help="field side in pixels")
    ap.add_argument("--exponent", type=float, default=2.0)
    ap.add_argument("--presets", nargs="+", default=["flux-dev-7x", "flux-dev-4x"])
    ap.add_argument("--baseline-steps", type=int, default=50)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
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
