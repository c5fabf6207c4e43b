"""Latency of the 50-step baseline and the 4x and 7x presets on FLUX.1-dev, random weights.

    python bench/gpu_latency.py            # full-size FLUX.1-dev transformer + VAE, bf16, CUDA, 1024x1024
    python bench/gpu_latency.py --tiny     # a tiny FLUX on the CPU (the tests run this)

Builds the architecture from its config (no download) with random prompt embeddings, so
images are noise; the work per step is the real model's. All runs happen in one process,
same device, and the speed-ups are ratios of those runs. "outside" is the share of
wall time not spent inside the transformer (edge decode, Canny, noise, final decode).
"""

from __future__ import annotations

import argparse
import time

import torch

from ralu_schedule import Layout
from ralu_schedule.cost import layout_cost
from ralu_torch import RALU
from ralu_torch.testing import flux_pipeline, prompt_embeds


class TransformerClock:
    """Wall time spent inside ``module.forward`` (synchronising CUDA around each call)."""

    def __init__(self, module, device):
        self.total = 0.0
        self.cuda = torch.device(device).type == "cuda"
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _start(self, *_):
        self._sync()
        self._t0 = time.perf_counter()

    def _stop(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU")
    ap.add_argument("--size", type=int, default=None, help="image side (default 1024, tiny: 128)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline-steps", type=int, default=50)
    args = ap.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    size = args.size or (128 if args.tiny else 1024)
    pipe = flux_pipeline(tiny=args.tiny, device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    emb = prompt_embeds(pipe, text_tokens=8 if args.tiny else 512)
    clock = TransformerClock(pipe.transformer, device)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; model: {'tiny FLUX' if args.tiny else 'FLUX.1-dev (random weights)'}, {dtype}, "
          f"{size}x{size}, batch 1")
    runs = {f"baseline {args.baseline_steps} steps": Layout(steps=(args.baseline_steps,), ends=(1.0,)),
            "flux-dev-4x": "flux-dev-4x", "flux-dev-7x": "flux-dev-7x"}
    rows = []
    for label, sched in runs.items():
        ralu = RALU(pipe, sched)
        call = lambda: ralu(**emb, height=size, width=size, generator=torch.Generator(device).manual_seed(0),  # noqa: E731
                            output_type="pil")
        call()  # warm-up (and solve the baseline's shift once)
        best, inside = float("inf"), 0.0
        for _ in range(args.repeats):
            clock.total = 0.0
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            call()
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if dt < best:
                best, inside = dt, clock.total
        layout = ralu.schedule_for(size, size).layout
        predicted = layout_cost(layout, "flux-dev", (size, size), baseline_steps=args.baseline_steps).speedup
        rows.append((label, best, inside, predicted))
    base = rows[0][1]
    print(f"{'run':<20} {'latency s':>10} {'speed-up':>9} {'predicted (paper FLOPs)':>24} {'outside transformer':>20}")
    for label, t, inside, pred in rows:
        print(f"{label:<20} {t:>10.3f} {base / t:>8.2f}x {pred:>23.2f}x {100 * (t - inside) / t:>19.1f}%")
    return rows


if __name__ == "__main__":
    main()
