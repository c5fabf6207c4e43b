"""What ``ralu eval`` writes: ``eval.csv``, ``eval.md``, the speed-up vs quality plot and the
contact sheet, from a list of summary rows (one per configuration)."""

from __future__ import annotations

import csv
import math
import shlex
from pathlib import Path

import numpy as np


def interval(values) -> tuple:
    """``(mean, low, high, n)``: the mean of ``values`` (one per prompt) and its 95% Student-t
    interval (scipy.stats); ``low``/``high`` are NaN for fewer than two values or an infinite
    mean (PSNR of identical images)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2 or not np.all(np.isfinite(v)):
        return mean, math.nan, math.nan, n
    sem = float(stats.sem(v))
    if sem == 0.0:
        return mean, mean, mean, n
    lo, hi = stats.t.interval(0.95, df=n - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi), n


def cell(mean, lo=math.nan, hi=math.nan, fmt="{:.3f}") -> str:
    """``mean [lo, hi]`` (or what of it is known)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if isinstance(mean, float) and math.isinf(mean):
        return "inf" if mean > 0 else "-inf"
    text = fmt.format(mean)
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


def speedup(ref, value) -> str:
    if ref is None or value is None or not value:
        return ""
    return f"{ref / value:.2f}x"


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})


def markdown(header: list, rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def plot(path: Path, points: list[dict], metrics: list, title: str) -> bool:
    """One panel per metric: speed-up in TFLOPs (x) against the metric's mean with its 95%
    interval (y), one point per configuration. ``points``: dicts with ``label``, ``speedup``
    and per metric ``(mean, low, high)``. False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(math.isfinite(p[m[0]][0]) for p in points if p.get("speedup"))]
    if not metrics:
        return False
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=110, squeeze=False)
    for ax, (key, label, higher) in zip(axes.flat, metrics):
        for i, p in enumerate(points):               # one colour per configuration in every panel
            mean, lo, hi = p[key]
            if p.get("speedup") is None or not math.isfinite(mean):
                continue
            err = None if math.isnan(lo) else [[max(0.0, mean - lo)], [max(0.0, hi - mean)]]
            ax.errorbar([p["speedup"]], [mean], yerr=err, fmt="o", capsize=3, color=f"C{i % 10}")
            ax.annotate(p["label"], (p["speedup"], mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("speed-up (TFLOPs)")
        ax.set_ylabel(f"{label} ({'higher' if higher else 'lower'} is better)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return True


def contact_sheet(path: Path, rows: list[tuple], thumb: int = 256) -> None:
    """``rows``: ``(prompt, [(image path, caption lines)])``: a row of thumbnails per prompt,
    the prompt above it, each thumbnail's caption under it."""
    from PIL import Image, ImageDraw

    from ..generation.write import font as _font, side_by_side as _side_by_side

    size = max(10, thumb // 20)
    font = _font(size)
    strips = []
    for prompt, cells in rows:
        images = []
        for p, _ in cells:
            with Image.open(p) as im:
                im = im.convert("RGB")
                scale = thumb / max(im.size)
                images.append(im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale)))))
        strip = _side_by_side(images, [lines for _, lines in cells])
        head = int(size * 1.8)
        framed = Image.new("RGB", (strip.width, strip.height + head), "white")
        ImageDraw.Draw(framed).text((4, 2), prompt[:200], fill="black", font=font)
        framed.paste(strip, (0, head))
        strips.append(framed)
    width = max(s.width for s in strips)
    sheet = Image.new("RGB", (width, sum(s.height for s in strips)), "white")
    y = 0
    for s in strips:
        sheet.paste(s, (0, y))
        y += s.height
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(path)


def command_line(args) -> str:
    """The command as given (``ralu eval ...``), for the report."""
    argv = getattr(args, "argv", None)
    return "ralu " + " ".join(shlex.quote(str(a)) for a in argv) if argv else "ralu eval"
