"""Correlated re-injection noise: ours (O(values)) against a dense-covariance sampler
(Cholesky of the M x M covariance I - c U U^T, M = token count, one draw per channel, as
the authors' code does), side by side in one run, for a full upsampling of every token.

    python bench/noise.py [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch

from ralu_schedule import PIXELS_PER_TOKEN, token_grid
from ralu_schedule.timing import format_noise, interleaved, ratio_noise
from ralu_torch.noise import reinjection_noise
from ralu_torch.tokens import TokenSet, child_source

C = 0.0255          # the 7x preset's c
FEATURES = 64       # FLUX token features


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def ours(pixels, device, fraction=1.0):
    grid = token_grid(pixels, pixels)
    ts = TokenSet.regular(1, grid, 2, device=device)
    mask = ts.is_coarse()
    if fraction < 1.0:                       # a mixed transition: every k-th token upsampled
        mask = torch.zeros_like(mask)
        mask[:, ::round(1 / fraction)] = True
    new, parent, slot = ts.upsample(mask, 2)
    src = child_source(2, FEATURES, "token", device=device)
    g = torch.Generator(device=device).manual_seed(0)

    def run():
        w = torch.randn(1, new.length, FEATURES, generator=g, device=device)
        return reinjection_noise(w, parent, slot, src, ts.length, C, 2)
    return run


def dense(pixels, device):
    grid = token_grid(pixels, pixels)
    M = grid[0] * grid[1]
    g = torch.Generator(device=device).manual_seed(0)
    rows = torch.arange(grid[0], device=device).repeat_interleave(grid[1])
    cols = torch.arange(grid[1], device=device).repeat(grid[0])
    parent = (rows // 2) * (grid[1] // 2) + cols // 2

    def run():
        same = (parent[:, None] == parent[None, :]).float()            # U U^T for token repetition
        cov = torch.eye(M, device=device) - C * same
        L = torch.linalg.cholesky(cov)
        return (L @ torch.randn(M, FEATURES, generator=g, device=device)).T   # one draw per channel
    return run


def timed(calls, device, repeats) -> dict:
    """``{label: Timing}``: one warm-up call each, then ``repeats`` interleaved rounds."""
    for _, fn in calls:
        fn()
    sync(device)
    return interleaved(calls, repeats, sync=lambda: sync(device))


def peak(pixels: int, fraction: float) -> None:
    """Print the peak memory one re-injection adds above what its inputs hold (run in a fresh
    process: ``ru_maxrss`` only rises), next to the size of its result (CPU)."""
    import resource

    run = ours(pixels, "cpu", fraction)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    z = run()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{(after - before) / 1024:.1f} {z.numel() * z.element_size() / 2**20:.1f}")


def memory_table(sizes) -> None:
    import subprocess
    import sys

    print("| pixels | transition | tokens M | result MiB | peak above inputs MiB | peak / result |")
    print("|---|---|---|---|---|---|")
    for px in sizes:
        for fraction, what in ((1.0, "all tokens"), (0.1, "10% of tokens")):
            out = subprocess.run([sys.executable, __file__, "--peak", str(px), "--fraction", str(fraction)],
                                 capture_output=True, text=True, check=True)
            extra, result = (float(v) for v in out.stdout.split())
            print(f"| {px} | {what} | {(px // PIXELS_PER_TOKEN) ** 2} | {result:.1f} | {extra:.1f} | "
                  f"{extra / result:.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--memory", type=int, nargs="+", metavar="PIXELS",
                    help="instead of timing: peak memory of one re-injection at these sizes (CPU)")
    ap.add_argument("--peak", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 1536])
    ap.add_argument("--ours-only", type=int, nargs="*", default=[4096])
    args = ap.parse_args(argv)
    if args.peak:
        return peak(args.peak, args.fraction)
    if args.memory:
        return memory_table(args.memory)
    name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"each: the minimum of {args.repeats} repeat(s), ours and dense interleaved; noise: both spreads")
    print(f"{'pixels':>7} {'tokens M':>9} {'ours ms':>10} {'dense ms':>11} {'dense/ours':>10} {'noise':>8}")
    for px in args.sizes:
        t = timed([("ours", ours(px, args.device)), ("dense", dense(px, args.device))], args.device, args.repeats)
        o, d = t["ours"].best, t["dense"].best
        print(f"{px:>7} {(px // PIXELS_PER_TOKEN) ** 2:>9} {o * 1e3:>10.2f} {d * 1e3:>11.1f} {d / o:>10.0f} "
              f"{format_noise(ratio_noise(t['ours'], t['dense'])):>8}")
    for px in args.ours_only:
        o = timed([("ours", ours(px, args.device))], args.device, args.repeats)["ours"].best
        M = (px // PIXELS_PER_TOKEN) ** 2
        print(f"{px:>7} {M:>9} {o * 1e3:>10.2f} {'n/a':>11} {'':>10}  (dense covariance: {M * M * 4 / 2**30:.0f} GiB)")


if __name__ == "__main__":
    main()
