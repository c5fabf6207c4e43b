"""Figures of what the sampler did (matplotlib)."""

from __future__ import annotations

import numpy as np


def plot_token_layout(record, out, image: int = 0, pixels_per_token: int = 16, title: str | None = None):
    """Draw the mixed stage's token layout over the decoded clean estimate of a transition.

    ``record``: a :class:`ralu_torch.sampler.TransitionRecord` with an estimate (a partial
    transition), e.g. ``RALU(...)(...).transitions[0]``. Upsampled tokens are outlined and
    split into their children; tokens kept at low resolution are left plain.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if record.estimate is None:
        raise ValueError("this transition upsampled every token and decoded no estimate; pick a partial one")
    fig, ax = plt.subplots(figsize=(5, 5 * record.estimate.shape[-2] / record.estimate.shape[-1]), dpi=120)
    draw_token_layout(ax, record, image, pixels_per_token, title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def draw_token_layout(ax, record, image: int = 0, pixels_per_token: int = 16, title: str | None = None):
    """Draw a transition's token layout over its decoded estimate on matplotlib axes ``ax``."""
    from matplotlib.patches import Rectangle

    est = ((record.estimate[image].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    before = record.before
    D = before.coarsest
    px = pixels_per_token  # pixels of one coarse token in the decoded (coarse) image
    ax.imshow(est, extent=(0, est.shape[1], est.shape[0], 0))
    sel = record.selected[image].cpu().numpy()
    cells = before.cells[image].cpu().numpy() // D
    for (r, c), chosen in zip(cells, sel):
        if chosen:
            ax.add_patch(Rectangle((c * px, r * px), px, px, fill=True, fc=(1, 0.2, 0.1, 0.25), ec="red", lw=1.2))
            ax.plot([c * px + px / 2] * 2, [r * px, r * px + px], "r-", lw=0.6)
            ax.plot([c * px, c * px + px], [r * px + px / 2] * 2, "r-", lw=0.6)
        else:
            ax.add_patch(Rectangle((c * px, r * px), px, px, fill=False, ec=(1, 1, 1, 0.35), lw=0.4))
    n = int(np.sum(sel))
    ax.set_title(title or f"upsampled {n} of {len(sel)} low-resolution tokens (red: split into 4)", fontsize=9)
    ax.set_axis_off()
