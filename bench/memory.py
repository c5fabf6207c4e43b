"""Peak memory of RALU against FluxPipeline on the same random-weight FLUX, each run in a
fresh process.

    python bench/memory.py [--model proxy] [--sizes 1024 2048] [--batch 1]

On the CPU: the peak of live tensor memory during the run, from torch's profiler (every
allocation and free, summed in time order; what a GPU's caching allocator would have to
hold), and beside it the peak resident memory the run adds (``ru_maxrss``), which also
shows how the CPU allocator reuses freed pages. On CUDA: ``torch.cuda.max_memory_allocated``
above the loaded pipeline. Both runs decode their images (``output_type="pt"``), as a
user's run does.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def one(model, size, batch, run, steps):
    import resource

    import torch

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from latency import build

    from ralu_torch import RALU
    from ralu_torch.testing import prompt_embeds

    torch.set_grad_enabled(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe, text_tokens = build(model, device, torch.bfloat16 if device == "cuda" else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    emb = prompt_embeds(pipe, batch=batch, text_tokens=text_tokens)
    gens = [torch.Generator(device).manual_seed(i) for i in range(batch)]
    call = (lambda: pipe(**emb, height=size, width=size, num_inference_steps=steps, generator=gens,
                         output_type="pt")) if run == "pipeline" else \
        (lambda: RALU(pipe, run)(**emb, height=size, width=size, generator=gens, output_type="pt"))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        print((torch.cuda.max_memory_allocated() - base) / 2**20, "nan")
        return
    from torch.profiler import ProfilerActivity, profile

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    live = peak = 0
    for event in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    print(peak / 2**20, rss)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "proxy", "full"), default="proxy")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="FluxPipeline steps (peak memory does not grow with them)")
    ap.add_argument("--presets", nargs="+", default=["flux-dev-7x", "flux-dev-4x"])
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "RUN"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        return one(args.model, int(args.one[0]), args.batch, args.one[1], args.steps)
    runs = ["pipeline", *args.presets]
    print(f"model: {args.model} FLUX, batch {args.batch}; MiB: peak live tensors (peak resident memory added)\n")
    print("| size | FluxPipeline | " + " | ".join(f"RALU {p}" for p in args.presets) + " | largest RALU / FluxPipeline |")
    print("|---|---|" + "---|" * len(args.presets) + "---|")
    for size in args.sizes:
        got = {}
        for run in runs:
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--batch", str(args.batch),
                                  "--steps", str(args.steps), "--one", str(size), run],
                                 capture_output=True, text=True, check=True)
            got[run] = [float(v) for v in out.stdout.strip().splitlines()[-1].split()]
        worst = max(got[p][0] for p in args.presets)
        cells = [f"{got[r][0]:.1f} ({got[r][1]:.0f})" for r in runs]
        print(f"| {size} | " + " | ".join(cells) + f" | {worst / got['pipeline'][0]:.3f} |")


if __name__ == "__main__":
    main()
