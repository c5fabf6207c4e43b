"""How often the two selection rules of image-conditioned pipelines agree: ``"condition"`` (the
edges of the condition image, known before the first step) and ``"edges"`` (the edges of the
decoded clean estimate at the first transition).

    python bench/condition_selection.py

Two tables of the overlap (the share of the condition rule's tokens that the estimate rule
picks too) at upsampled fractions r, with its chance level (two independent uniform choices of
k of n tokens overlap by k/n on average):

- real photographs that packages ship (scikit-image's ``skimage.data``, matplotlib's sample
  photograph), resized to the output frame as the pipelines' processors resize a condition.
  No model here: the estimate is stood in for by the photograph itself at the coarse stage's
  resolution, the decode a model would give if its coarse estimate *were* the photograph. This
  isolates what the rules see differently (the full-resolution image against its coarse
  version) and bounds the agreement from above: a real estimate also differs from its condition;
- the tiny random-weight conditioned pipelines (``ralu_torch.testing.conditioned_pipeline``)
  conditioned on a photograph, each rule's own first transition of a 3-stage run with the same
  seed. Their estimates are noise (random weights), so chance agreement is what to expect;
  the rows show that the pipelines run both rules, not how a trained model behaves.
"""

from __future__ import annotations

import argparse

import torch

from ralu_schedule import Layout, upsample_count
from ralu_torch.analysis.selection import overlap
from ralu_torch.selection import ConditionSelection, EdgeSelection
from ralu_torch.tokens import TokenSet

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "grace_hopper", "hubble_deep_field", "motorcycle", "rocket")
FRACTIONS = (0.1, 0.25, 0.5)
PIXELS_PER_TOKEN = 16          # FLUX.1 and Wan 2.1/2.2 A14B: 8x VAE, 2x2 patches
D = 2                          # the presets' downsampling: a coarse token is 2x2 tokens


def photograph(name: str):
    """An RGB PIL image: ``skimage.data``'s photographs (no download: they ship in the wheel),
    its stereo pair's left motorcycle, and matplotlib's sample photograph."""
    from PIL import Image

    if name == "grace_hopper":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("bench/condition_selection.py reads scikit-image's sample photographs: "
                         "pip install scikit-image") from None
    array = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return Image.fromarray(array).convert("RGB")


def pixels(image, height: int, width: int) -> torch.Tensor:
    """``(1, 3, height, width)`` in ``[-1, 1]``: the image resized as the pipelines' processors resize it."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(vae_scale_factor=PIXELS_PER_TOKEN).preprocess(image, height=height, width=width)


class Condition:
    """What ``ConditionSelection.bind`` reads of a call's conditioning."""

    def __init__(self, selection_pixels):
        self.selection_pixels = selection_pixels


def photo_row(name: str, size: int, fractions) -> list:
    """Overlap of the two rules on a photograph at ``size x size`` (estimate: the photograph at 1/D)."""
    image = photograph(name)
    full, coarse = pixels(image, size, size), pixels(image, size // D, size // D)
    tokens = TokenSet.regular(1, (size // PIXELS_PER_TOKEN, size // PIXELS_PER_TOKEN), D)
    by_condition = ConditionSelection(PIXELS_PER_TOKEN).bind(Condition(full))
    by_estimate = EdgeSelection(PIXELS_PER_TOKEN)
    return [overlap(by_condition(None, tokens, r), by_estimate(coarse, tokens, r)) for r in fractions]


def tiny_row(model: str, fractions, seed: int = 0) -> tuple:
    """(coarse tokens, overlaps) of the two rules' first transitions on a tiny conditioned pipeline."""
    from PIL import Image

    from ralu_torch import RALU
    from ralu_torch.testing import conditioned_pipeline, tiny_inputs

    pipe = conditioned_pipeline(model)
    video = model.startswith("wan")
    size = 512 if model == "wan2.2-ti2v-5b" else 256     # 64 coarse tokens an image, 128 a clip (two latent frames)
    image = photograph("astronaut").resize((size, size))
    kw = {**tiny_inputs(pipe, 1), "height": size, "width": size, "output_type": "latent", "record_transitions": True}
    if model == "flux-fill":
        mask = Image.new("L", (size, size))
        mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
        kw.update(image=image, mask_image=mask)
    elif model == "flux-control":
        kw["control_image"] = image
    else:
        kw.update(image=image, num_frames=5)
        if model == "wan2.1-flf2v":
            kw["last_image"] = photograph("chelsea").resize((size, size))
    row, coarse = [], None
    for r in fractions:
        picks = []
        for select in ("condition", "edges"):
            ralu = RALU(pipe, Layout(steps=(2, 2, 2), ends=(0.3, 0.5, 1.0), fractions=(r, 1.0)), select=select)

            def stop(owner, step, t, tensors, ralu=ralu):   # the first transition is all this needs
                if tensors["stage"] >= 1:
                    ralu._interrupt = True
                return {}

            out = ralu(**kw, generator=torch.Generator().manual_seed(seed), callback_on_step_end=stop,
                       callback_on_step_end_tensor_inputs=["stage"])
            picks.append(out.transitions[0].selected)
            coarse = int(out.transitions[0].before.is_coarse().sum())
        row.append(overlap(*picks))
    return coarse, row, "clip" if video else "image"


def chance(n: int, r: float) -> float:
    return upsample_count(n, r) / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="output frame side of the photographs (pixels)")
    ap.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    ap.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS), help="upsampled fractions r")
    ap.add_argument("--models", nargs="*", default=None,
                    help="tiny conditioned pipelines to run (default: all; none: the photographs only)")
    args = ap.parse_args(argv)
    from ralu_torch.testing import CONDITIONED_MODELS

    models = list(CONDITIONED_MODELS) if args.models is None else args.models
    bad = set(models) - set(CONDITIONED_MODELS)
    if bad:
        raise SystemExit(f"--models takes {', '.join(CONDITIONED_MODELS)}, got {', '.join(sorted(bad))}")
    n = (args.size // PIXELS_PER_TOKEN // D) ** 2
    fractions = args.fractions
    heads = " | ".join(f"overlap r = {r:g} (chance {chance(n, r):.2f})" for r in fractions)
    print(f"Photographs at {args.size}x{args.size}, {n} coarse tokens; estimate = the photograph at 1/{D}\n")
    print(f"| photograph | {heads} |")
    print("|---|" + "---|" * len(fractions))
    rows = []
    for name in args.photos:
        rows.append(photo_row(name, args.size, fractions))
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in rows[-1]) + " |")
    mean = [sum(col) / len(col) for col in zip(*rows)]
    print("| mean | " + " | ".join(f"{v:.2f}" for v in mean) + " |")
    if not models:
        return
    print("\nTiny random-weight pipelines conditioned on a photograph (first transition of a 3-stage run)\n")
    print("| pipeline | condition | coarse tokens | " + " | ".join(f"overlap r = {r:g} (chance)" for r in fractions)
          + " |")
    print("|---|---|---|" + "---|" * len(fractions))
    for model in models:
        coarse, row, kind = tiny_row(model, fractions)
        cells = " | ".join(f"{v:.2f} ({chance(coarse, r):.2f})" for v, r in zip(row, fractions))
        print(f"| {model} | {kind} | {coarse} | {cells} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
