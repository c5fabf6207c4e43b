"""``ralu demo``: RALU on the analytic Gaussian backend, no weights needed.

Samples exact Gaussian-field data with the full-resolution baseline, a baseline with the
preset's FLOPs and RALU itself, through the same sampler as FLUX, and writes one figure:
example samples, the token layout of the mixed stage, and each run's power spectrum
against the truth.
"""

from __future__ import annotations

from ralu_schedule import Layout, preset, solve

from ..backends.gaussian import GaussianBackend, GaussianField
from .quality import flop_matched_steps, radial_log_ratio, run, spectrum_metrics


def demo(out: str = "ralu_demo.png", name: str = "flux-dev-7x", seeds: int = 32, size: int = 64,
         baseline_steps: int = 50) -> dict:
    """Run the comparison and write the figure to ``out``; returns the metrics per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import draw_token_layout

    field = GaussianField(height=size, width=size)
    be = GaussianBackend(field)
    n_eq = flop_matched_steps(name)
    runs = {f"baseline {baseline_steps} steps": solve(Layout(steps=(baseline_steps,), ends=(1.0,))),
            f"baseline {n_eq} steps (same FLOPs)": solve(Layout(steps=(n_eq,), ends=(1.0,))),
            f"RALU {name}": preset(name)}
    results, curves, shown = {}, {}, {}
    record = None
    for label, sched in runs.items():
        x, res = run(be, sched, seeds)
        results[label] = spectrum_metrics(x, field)
        curves[label] = radial_log_ratio(x, field)
        shown[label] = x[:3]
        if res.transitions and res.transitions[0].estimate is not None:
            record = res.transitions[0]

    fig = plt.figure(figsize=(11, 6.2), dpi=110)
    grid = fig.add_gridspec(3, 5)
    for r, (label, xs) in enumerate(shown.items()):
        for c in range(min(3, xs.shape[0])):           # up to three samples (fewer with --seeds 2)
            ax = fig.add_subplot(grid[r, c])
            img = (xs[c, :3].permute(1, 2, 0).clamp(-3, 3) / 6 + 0.5).numpy()
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    if record is not None:
        draw_token_layout(fig.add_subplot(grid[0, 3:]), record, 0, be.pixels_per_token)
    ax = fig.add_subplot(grid[1:, 3:])
    for label, (k, v) in curves.items():
        ax.plot(k, v, label=f"{label}: FD {1e3 * results[label]['fd']:.1f}e-3")
    ax.axhline(0, color="k", lw=0.7)
    ax.set_xlabel("radial frequency (cycles per pixel)", fontsize=8)
    ax.set_ylabel("log10(power / true power)", fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle(f"RALU ({name}) on exact Gaussian data, {seeds} seeds: samples, mixed-stage tokens, spectra",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return results
