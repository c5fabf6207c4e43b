"""torch.compile with RALU: recompiles across runs, and compiled-vs-eager differences next to
FluxPipeline's own, on the same random-weight model.

    python bench/compile.py [--model tiny] [--backend inductor] [--size 256]

Compiles the transformer blocks (``RALU(..., compile=...)``: regional, dynamic shapes) and
runs FluxPipeline and RALU (7x) at batch 2 and at batch 1 (dynamo specialises size-1
dimensions, so each compiles its own graphs), then again at batch 1, 2, 3 and 4 and at
another image size; a graph counted after those first runs is a recompile. The differences are the largest
absolute differences of decoded images in [0, 1] between the compiled and the eager model,
for FluxPipeline and for RALU: if both are of one size, the compiler's rounding (amplified
by random weights) explains them, not RALU.
"""

from __future__ import annotations

import argparse

import torch
from torch._dynamo.utils import counters

from ralu_torch import RALU
from ralu_torch.testing import flux_pipeline, prompt_embeds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (eager: guards only)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="FluxPipeline steps")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    eager = flux_pipeline(tiny=True, device=device)
    compiled = flux_pipeline(tiny=True, device=device)       # same seed: the same weights
    for p in (eager, compiled):
        p.set_progress_bar_config(disable=True)
    torch._dynamo.reset()
    ralu_c = RALU(compiled, "flux-dev-7x", compile={"backend": args.backend})
    ralu_e = RALU(eager, "flux-dev-7x")

    def images(pipe_or_ralu, batch, steps=None):
        kw = dict(**prompt_embeds(eager, batch=batch), height=args.size, width=args.size, output_type="pt",
                  generator=[torch.Generator(device).manual_seed(i) for i in range(batch)])
        if steps is not None:
            kw["num_inference_steps"] = steps
        return pipe_or_ralu(**kw).images

    diff = {"FluxPipeline": (images(compiled, 2, args.steps) - images(eager, 2, args.steps)).abs().max().item(),
            "RALU flux-dev-7x": (images(ralu_c, 2) - images(ralu_e, 2)).abs().max().item()}
    images(ralu_c, 1)
    images(compiled, 1, args.steps)
    graphs = counters["stats"]["unique_graphs"]
    for batch in (1, 2, 3, 4):
        images(ralu_c, batch)
        images(compiled, batch, args.steps)
    args.size //= 2
    images(ralu_c, 2)
    added = counters["stats"]["unique_graphs"] - graphs
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {device_name}; tiny random FLUX, {2 * args.size}x{2 * args.size}, backend {args.backend}\n")
    print("| run | max abs difference, compiled vs eager (images in [0, 1]) |")
    print("|---|---|")
    for label, d in diff.items():
        print(f"| {label} | {d:.2e} |")
    print(f"\ngraphs compiled in the first runs (batch 2, then batch 1): {graphs}; graphs added by later runs "
          f"at batch 1, 2, 3, 4 and at half the size: {added}")


if __name__ == "__main__":
    main()
