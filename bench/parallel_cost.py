"""One generation on several GPUs, priced: the bytes each rank receives under diffusers' context
parallelism (Ulysses' all-to-alls or ring's passes, and the output gather), and the predicted
speed-up over one GPU at a link bandwidth, next to the FLOP ratio
(:mod:`ralu_schedule.communication`; docs/cost.md).

    python bench/parallel_cost.py
    python bench/parallel_cost.py --ranks 2 4 8 --links 3600 400 --gpu-tflops 400 --ring

Rows: FLUX.1-dev at 1024x1024 with ``flux-dev-7x`` and Wan 2.1 14B at 704x1280 ("720p": the
sides a 2x-coarser first stage needs), 81 frames, with ``wan-720p-7x``; ``ralu-schedule cost
PRESET --context-parallel N --link-gbps B`` prints one of them stage by stage.
"""

from __future__ import annotations

import argparse
import sys

from ralu_schedule import get_preset
from ralu_schedule.communication import parallel_cost

#: (preset, model, resolution, frames)
RUNS = (("flux-dev-7x", "flux-dev", (1024, 1024), None), ("wan-720p-7x", "wan2.1-t2v-14b", (704, 1280), 81))


def table(ranks=(2, 4, 8), links=(3600.0, 400.0), gpu_tflops: float = 400.0, mode: str = "ulysses") -> str:
    rows = ["| preset | model | resolution | frames | GPUs | link Gb/s | GB received per rank | link s | compute s "
            "| one GPU s | FLOP ratio | speed-up |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for preset, model, res, frames in RUNS:
        for link in links:
            for n in ranks:
                p = parallel_cost(get_preset(preset).layout, model, res, ranks=n, link_gbps=link, mode=mode,
                                  gpu_tflops=gpu_tflops, frames=frames)
                rows.append(f"| {preset} | {model} | {res[0]}x{res[1]} | {p.frames} | {p.gpus} | {link:g} "
                            f"| {p.bytes / 1e9:.1f} | {p.link_seconds:.2f} | {p.compute_seconds:.2f} "
                            f"| {p.one_gpu_seconds:.2f} | {p.flop_ratio:.2f}x | {p.speedup:.2f}x |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--links", type=float, nargs="+", default=[3600.0, 400.0], help="Gb/s per GPU and direction")
    ap.add_argument("--gpu-tflops", type=float, default=400.0, help="sustained TFLOP/s per GPU (an assumption)")
    ap.add_argument("--ring", action="store_true", help="ring attention instead of Ulysses")
    args = ap.parse_args(argv)
    print(f"context parallelism ({'ring' if args.ring else 'Ulysses'}), bf16 activations, "
          f"{args.gpu_tflops:g} TFLOP/s per GPU\n")
    print(table(args.ranks, args.links, args.gpu_tflops, "ring" if args.ring else "ulysses"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
