"""Plot of the target and matched timestep densities with the stages marked (matplotlib)."""

from __future__ import annotations

import numpy as np

from ._errors import MissingDependency
from .layout import Schedule
from .metric import GRID, actual_density, target_density


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("plotting needs matplotlib: pip install 'ralu[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_schedule(schedule: Schedule, out, title: str | None = None):
    """Write a figure of ``P_target`` and the schedule's ``P(t)`` to ``out``."""
    plt = _pyplot()
    lay = schedule.layout
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=120)
    colours = plt.get_cmap("tab10")
    for i, st in enumerate(schedule.stages):
        ax.axvspan(st.start, st.end, ymin=0.0, ymax=0.06 + 0.05 * i, color=colours(i), alpha=0.35,
                   label=f"stage {i + 1}: [{st.start:.3f}, {st.end:.2f}], {st.steps} steps, h={st.shift:.2f}")
        ax.plot(st.timesteps, np.zeros_like(st.timesteps), "|", color=colours(i), ms=14, mew=2)
    starts = schedule.starts
    ax.plot(GRID, target_density(GRID, lay, starts), "k-", lw=2, label=f"target (h0 = {lay.base_shift:.3g})")
    ax.plot(GRID, actual_density(GRID, lay, starts, schedule.shifts), "C3--", lw=2, label="schedule")
    ax.set_xlabel("data-time t (0 = noise, 1 = data)")
    ax.set_ylabel("density")
    ax.set_xlim(0, 1)
    ax.set_title(title or f"{schedule.info.get('preset', 'schedule')}: JS distance {schedule.jsd:.4f}")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
