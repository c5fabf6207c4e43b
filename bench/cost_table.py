"""The cost model's tables: the FLUX.1 presets' layouts on FLUX.1 and SD3, each newer family's
presets against its own stock run, the image-conditioned models' presets in both reference
modes, and predicted speed-up against resolution (written as a PNG when --plot is given).

    python bench/cost_table.py [--plot docs/img/speedup_vs_resolution.png]
"""

from __future__ import annotations

import argparse

from ralu_schedule import PRESETS, Layout
from ralu_schedule.cost import MODELS, REFERENCE_MODES, layout_cost
from ralu_schedule.models import MODEL_INFO

RESOLUTIONS = [(512, 512), (768, 768), (1024, 1024), (1536, 1536), (2048, 2048), (3072, 3072)]
#: The models of the first table: FLUX.1 and SD3, on which the FLUX.1 presets' layouts are priced.
FLUX1_SD3 = ("flux-dev", "flux-schnell", "sd3-medium", "sd3.5-medium", "sd3.5-large")


def distinct_layouts():
    """One FLUX.1 preset per layout (the SD3 presets reuse the FLUX layouts; their cost is the same)."""
    seen, out = set(), {}
    for name, p in sorted(PRESETS.items()):
        key = (p.layout.steps, p.layout.ends, p.layout.factors, p.layout.fractions)
        if p.model in FLUX1_SD3 and key not in seen:
            seen.add(key)
            out[name] = p
    return out


def family_table(resolutions=((1024, 1024), (2048, 2048))):
    """Each newer family's presets against its own stock run (its default step count)."""
    rows = ["| preset | model | resolution | stage tokens | TFLOPs (paper) | stock run | stock TFLOPs "
            "| speed-up (paper) | speed-up (full) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, p in PRESETS.items():
        if p.model in FLUX1_SD3 or p.frames > 1 or conditioned(p.model):   # video: bench/video_cost.py
            continue
        n = MODEL_INFO[p.model].default_steps
        for res in resolutions:
            c = layout_cost(p.layout, p.model, res, baseline_steps=n)
            f = layout_cost(p.layout, p.model, res, baseline_steps=n, convention="full")
            rows.append(f"| {name} | {p.model} | {res[0]}x{res[1]} | {', '.join(str(s.tokens) for s in c.stages)} "
                        f"| {c.tflops:.1f} | {n} steps | {c.baseline_tflops:.1f} | {c.speedup:.2f}x "
                        f"| {f.speedup:.2f}x |")
    return "\n".join(rows)


def conditioned(model: str) -> bool:
    """Whether ``model`` is image-conditioned (reference tokens, an image encoder, a condition encoded)."""
    spec = MODELS[model]
    return spec.references is not None and spec.default_references > 0 or spec.condition is not None


def conditioned_table():
    """The image-conditioned models' presets against their stock runs (references and image
    encoders counted), in both reference modes where the model has references; the video models
    on their presets' clips, in the convention their presets are named by (``full``)."""
    rows = ["| preset | model | references | resolution | frames | stage tokens (+ reference tokens) | TFLOPs (paper) "
            "| stock run | stock TFLOPs (paper) | speed-up (paper) | speed-up (full) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in PRESETS.items():
        if not conditioned(p.model):
            continue
        n = MODEL_INFO[p.model].default_steps
        frames = p.frames if p.frames > 1 else None
        for mode in (REFERENCE_MODES if MODELS[p.model].references is not None else (None,)):
            kw = dict(baseline_steps=n, frames=frames, references=mode)
            c = layout_cost(p.layout, p.model, p.resolution, **kw)
            f = layout_cost(p.layout, p.model, p.resolution, convention="full", **kw)
            tokens = ", ".join(f"{s.tokens} + {s.reference_tokens}" if s.reference_tokens else str(s.tokens)
                               for s in c.stages)
            rows.append(f"| {name} | {p.model} | {mode or '-'} | {p.resolution[0]}x{p.resolution[1]} | {c.frames} "
                        f"| {tokens} | {c.tflops:.1f} | {n} steps | {c.baseline_tflops:.1f} | {c.speedup:.2f}x "
                        f"| {f.speedup:.2f}x |")
    return "\n".join(rows)


def conditioning_table():
    """What conditioning costs each image-conditioned model in one stock call (paper convention):
    the prompt's encoding (the negative prompt's too under CFG, with the reference's vision tower
    where the text encoder sees it), what encodes the conditioning images once per call, and one
    full-resolution step with the references' tokens, at the model's default size."""
    rows = ["| model | resolution | frames | reference tokens | text tokens | text encoding | image encoding "
            "| one step | stock run | image encoding share |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, spec in MODELS.items():
        if not conditioned(name):
            continue
        n = MODEL_INFO[name].default_steps
        c = layout_cost(Layout(steps=(n,), ends=(1.0,)), name, baseline_steps=n)
        refs = spec.default_references
        text = spec.text_tokens + (spec.references.prompt_tokens(refs) if refs else 0)
        rows.append(f"| {name} | {c.resolution[0]}x{c.resolution[1]} | {c.frames} | {c.stages[0].reference_tokens} "
                    f"| {text} | {c.text_encoding_tflops:.2f} | {c.image_encoding_tflops:.2f} "
                    f"| {c.stages[0].tflops / n:.2f} | {c.tflops:.1f} | {c.image_encoding_tflops / c.tflops:.2%} |")
    return "\n".join(rows)


def table(resolutions=((1024, 1024), (2048, 2048))):
    rows = ["| preset (layout) | model | resolution | stage tokens | TFLOPs (paper) | baseline 50 steps "
            "| speed-up (paper) | speed-up (full) |", "|---|---|---|---|---|---|---|---|"]
    for name, p in distinct_layouts().items():
        for model in FLUX1_SD3:
            for res in resolutions:
                c = layout_cost(p.layout, model, res)
                f = layout_cost(p.layout, model, res, convention="full")
                rows.append(f"| {name} | {model} | {res[0]}x{res[1]} | {', '.join(str(s.tokens) for s in c.stages)} "
                            f"| {c.tflops:.1f} | {c.baseline_tflops:.1f} | {c.speedup:.2f}x | {f.speedup:.2f}x |")
    return "\n".join(rows)


def plot(out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    px = [r[0] for r in RESOLUTIONS]
    for name, p in distinct_layouts().items():
        for conv, style in [("paper", "-"), ("full", "--")]:
            sp = [layout_cost(p.layout, "flux-dev", r, convention=conv).speedup for r in RESOLUTIONS]
            ax.plot(px, sp, style, marker="o", label=f"{name} ({conv})")
    ax.set_xlabel("image side (pixels), FLUX.1-dev, square")
    ax.set_ylabel("predicted speed-up vs 50 steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--plot", help="write the speed-up against resolution plot here")
    args = ap.parse_args(argv)
    print(table())
    print()
    print(family_table())
    print()
    print(conditioning_table())
    print()
    print(conditioned_table())
    print()
    layouts = distinct_layouts()
    print("| resolution | " + " | ".join(f"{n} paper | {n} full" for n in layouts) + " |")
    print("|---|" + "---|---|" * len(layouts))
    for r in RESOLUTIONS:
        cells = []
        for n, p in layouts.items():
            cells += [f"{layout_cost(p.layout, 'flux-dev', r, convention=c).speedup:.2f}x" for c in ("paper", "full")]
        print(f"| {r[0]}x{r[1]} | " + " | ".join(cells) + " |")
    if args.plot:
        plot(args.plot)


if __name__ == "__main__":
    main()
