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

from ralu_schedule import get_preset
from ralu_schedule.export import model_evaluations
from ralu_torch.analysis.quality import BANDS, ablation_configs, flop_matched_steps, radial_log_ratio
from ralu_torch.evaluation.analytic import field_for, run_rows
from ralu_torch.evaluation.configs import parse_config


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


def table(args):
    """(label, configuration) rows of the ablation tables: the data, the baseline, then each
    preset's ablations (None rows are the preset headings)."""
    rows = [("exact data samples (sampling floor)", "exact"),
            (f"baseline {args.baseline_steps} steps", f"baseline:{args.baseline_steps}")]
    for name in args.presets:
        rows.append((f"-- {name}", None))
        rows += list(ablation_configs(name).items())
    return rows


def rows_of(args, data: str, size: int):
    """Each (label, Row) of the ablation table on ``data``, run by ralu eval's analytic code path."""
    labelled = table(args)
    configs = [parse_config(text) for _, text in labelled if text is not None]
    runs = run_rows(configs, data, args.seeds, 0, size, args.exponent, texture_size=args.edged_size)
    for label, text in labelled:
        yield label, (None if text is None else next(runs))


def baseline_steps_for(calls: int, solver: str) -> int:
    """Steps of a one-stage run of ``solver`` with ``calls`` model evaluations (or just under)."""
    n = 1
    while model_evaluations(n + 1, solver) <= calls:
        n += 1
    return n


def solvers(args):
    """Each solver with each preset, against full-resolution runs of the same solver with the
    same number of model evaluations and with the same FLOPs (cost model, 1024x1024)."""
    band_names = [f"{lo:g}-{hi:g}" for lo, hi in BANDS]
    print()
    print(f"Solvers: Gaussian field {args.size}x{args.size}, spectrum ~ |k|^-{args.exponent:g}; {args.seeds} seeds per "
          "row; RALU with the preset's parameters; baselines: same solver at full resolution with the same model calls, "
          "and with the same FLOPs at 1024x1024 (cost model)")
    print()
    print("| preset | solver | run | model calls | FD x1e3 | " + " | ".join(band_names) + " | var |")
    print("|---|---|---|---:|---:|" + "---:|" * len(band_names) + "---:|")
    for name in args.presets:
        layout = get_preset(name).layout
        for label in ("euler", "heun", "dpm-multistep", "unipc"):
            calls = sum(model_evaluations(n, label) for n in layout.steps)
            n = baseline_steps_for(calls, label)
            n_flops = baseline_steps_for(flop_matched_steps(name, solver=label), label)
            runs = [("RALU", f"{name}+{label}")] + [(f"{m} steps, full res., same {what}", f"baseline:{m}+{label}")
                                                    for m, what in ((n, "calls"), (n_flops, "FLOPs"))]
            configs = [parse_config(text) for _, text in runs]
            rows = run_rows(configs, "gaussian", args.seeds, 0, args.size, args.exponent)
            for (run_name, _), row in zip(runs, rows):
                m = row.metrics
                c = sum(model_evaluations(k, label) for k in row.schedule.layout.steps)
                print(f"| {name} | {label} | {run_name} | {c} | {m['fd']:.2f} | "
                      + " | ".join(f"{m[f'band{k}']:+.3f}" for k in range(len(BANDS))) + f" | {m['var']:.3f} |")


def edged(args):
    """The texture-patch mixture: does the detail land where the data has it?"""
    n = args.edged_size
    if n % 8:
        raise SystemExit(f"--edged-size must be a multiple of 8, got {n}")
    field = field_for("texture", texture_size=n)
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
    for label, row in rows_of(args, "texture", args.size):
        if row is None:
            print(label)
            continue
        m = row.metrics
        hit = m["selected"]
        print(f"{label:<42} {m['fd']:>8.2f} {m['texture']:>+8.3f} {m['background']:>+8.3f} {m['var']:>6.3f} "
              f"{'' if hit is None else f'{hit:.3f}':>9}")


def stationary(args):
    band_names = [f"{lo:g}-{hi:g}" for lo, hi in BANDS]
    field = field_for("gaussian", args.size, args.exponent)
    print(f"Gaussian field {args.size}x{args.size}, 3 channels, spectrum ~ |k|^-{args.exponent:g}; "
          f"{args.seeds} seeds per row; h0 = 3")
    print(f"{'configuration':<42} {'FD x1e3':>8} " + " ".join(f"{b:>10}" for b in band_names) + f" {'var':>6}")
    curves = {}
    t0 = time.perf_counter()
    preset = None
    for label, row in rows_of(args, "gaussian", args.size):
        if row is None:
            print(label)
            preset = label[3:]
            continue
        m = row.metrics
        print(f"{label:<42} {m['fd']:>8.2f} " + " ".join(f"{m[f'band{k}']:>+10.3f}" for k in range(len(BANDS)))
              + f" {m['var']:>6.3f}")
        if (preset is None and label.startswith("baseline")) or preset == args.presets[0]:
            curves[label] = radial_log_ratio(row.samples, field)
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
