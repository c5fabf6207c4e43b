"""Everything CUDA-specific in one command, within a time budget sized for a borrowed GPU.

    python bench/gpu_check.py --report gpu-report.md              # on a GPU, within --budget (450 s)
    python bench/gpu_check.py --report cpu-report.md              # without one: the CPU rows
    python bench/gpu_check.py --report r.md --budget 300          # a shorter lease: fewer rows, said so

Runs, in this order, each in a fresh process (so one row's memory or a crash cannot spoil the
next) and within what is left of ``--budget`` seconds:

1. the CUDA test set (``pytest -m cuda``: tests/test_devices.py on cuda in float32 and
   bfloat16: one-stage parity for every family, batch = singles, same bits, re-injection
   moments, calls per step, no host synchronisation, caches, solvers, ``latents=``,
   interrupts);
2. latency of FLUX.1-dev's full architecture (random weights, bfloat16, 1024x1024): the
   50-step baseline, the same-FLOPs baselines, flux-dev-7x and flux-dev-4x at batch 1 and
   4, and one stacked configuration (flux-dev-7x + TaylorSeer), each wall-time speed-up
   beside the cost model's FLOP ratio (``bench/latency.py``);
3. the same at batch 1 with ``torch.compile`` of the transformer's blocks;
4. peak memory of RALU against the stock pipeline (``bench/memory.py``);
5. the largest new family that fits in the card's memory (FLUX.2 [dev], 32B parameters,
   about 64 GiB in bfloat16; else Qwen-Image, 20B; else Chroma) at full size;
6. Wan 2.1 14B's architecture on a 33-frame 512x512 clip against WanPipeline (last: the
   first row the budget drops).

On a machine without CUDA the same sections run on the CPU with a small proxy at 512x512
(the test set is collected and reported as skipped), and the rows that need a GPU are listed
as skipped with the reason. The report (markdown, ``--report FILE``) starts with the card,
driver, CUDA, torch and diffusers versions, the date and the commit, then a summary (the
7x preset's wall speed-up over 50 steps beside its FLOP ratio), then each section's command,
wall time, status and tables.

Latency rows time each run three times in interleaved rounds and report minima
(``bench/latency.py``): the summary gives each speed-up's noise and says where the wall
speed-up departs from the FLOP ratio by more than that noise explains. A section that runs out
of its time says so in the summary and in its section, with the rows that did finish, never as
an empty table; ``bench/latency.py`` gets most of the section's time as its own
``--time-limit``, so that on a slow or loaded machine it reports fewer repeats rather than
nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ralu_schedule.timing import BEYOND, UNKNOWN

ROOT = Path(__file__).resolve().parents[1]

#: bench/latency.py's share of its section's time limit (``--time-limit``): the rest is for
#: building the models and for the round that is running when it expires
LATENCY_SHARE = 0.6
GIB = 1024 ** 3
#: full-size families by parameters (billions) and the memory their bfloat16 weights take with room
#: for activations at 1024x1024 (GiB); the first that fits is timed
FAMILIES = [("flux2", "FLUX.2 [dev]", 32.2, 72), ("qwen-image", "Qwen-Image", 20.4, 46), ("chroma", "Chroma", 8.9, 22)]


def environment(cuda: bool) -> list[str]:
    import diffusers
    import torch

    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- torch {torch.__version__}, diffusers {diffusers.__version__}, Python {sys.version.split()[0]}"]
    if cuda:
        props = torch.cuda.get_device_properties(0)
        driver = "unknown"
        if shutil.which("nvidia-smi"):
            r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
            driver = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else driver
        lines.insert(0, f"- card: {props.name}, {props.total_memory / GIB:.0f} GiB, driver {driver}, "
                        f"CUDA {torch.version.cuda}")
    else:
        lines.insert(0, "- card: none (no CUDA device): CPU rows only")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if commit.returncode == 0:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        lines.append(f"- commit: {commit.stdout.strip()}" + (" with uncommitted changes" if dirty else ""))
    return lines


def sections(cuda: bool, memory_gib: float) -> list[tuple]:
    """(title, argv or None, seconds it may take at most, why skipped if argv is None)."""
    py = [sys.executable]
    tests = ("CUDA test set", py + ["-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs"], 180, None)
    if not cuda:
        proxy = ["--model", "proxy", "--sizes", "512", "--batches", "1", "--repeats", "3"]
        return [tests,
                ("FLUX latency (CPU proxy, 512x512)", py + ["bench/latency.py", *proxy, "--taylorseer"], 150, None),
                ("FLUX latency, compiled", None, 0, "needs a GPU (compiled blocks are timed on the GPU only)"),
                ("Peak memory (CPU proxy, 512x512)", py + ["bench/memory.py", "--model", "proxy", "--sizes", "512"],
                 120, None),
                ("FLUX.2 latency (CPU proxy, 512x512)", py + ["bench/latency.py", "--family", "flux2", *proxy], 120,
                 None),
                ("Wan latency (CPU proxy, 256x256, 9 frames)",
                 py + ["bench/latency.py", "--family", "wan", "--model", "proxy", "--sizes", "256", "--frames", "9",
                       "--batches", "1", "--repeats", "3"], 90, None),
                ("FLUX.1-dev at full size (1024x1024, batch 1 and 4)", None, 0, "needs a GPU (12B parameters)"),
                ("Largest new family at full size", None, 0, "needs a GPU (FLUX.2 [dev]: about 64 GiB)"),
                ("Wan 2.1 14B at full size", None, 0, "needs a GPU (14B parameters, about 28 GiB)")]
    full = ["--model", "full", "--sizes", "1024", "--repeats", "1"]
    fits = [(key, name) for key, name, _, need in FAMILIES if need <= memory_gib]
    family = (f"{fits[0][1]} latency (full size, bfloat16, 1024x1024)",
              py + ["bench/latency.py", "--family", fits[0][0], *full, "--batches", "1"], 200, None) if fits else \
        ("Largest new family at full size", None, 0, f"none fits in {memory_gib:.0f} GiB")
    return [tests,
            ("FLUX.1-dev latency (full size, bfloat16, 1024x1024)",
             py + ["bench/latency.py", *full, "--batches", "1", "4", "--taylorseer"], 240, None),
            ("FLUX.1-dev latency, compiled blocks (batch 1)",
             py + ["bench/latency.py", *full, "--batches", "1", "--compile"], 200, None),
            ("Peak memory (FLUX.1-dev, 1024x1024)", py + ["bench/memory.py", "--model", "full", "--sizes", "1024"],
             150, None),
            family,
            ("Wan 2.1 14B latency (full size, bfloat16, 512x512, 33 frames)",
             py + ["bench/latency.py", "--family", "wan", "--model", "full", "--sizes", "512", "--frames", "33",
                   "--batches", "1", "--repeats", "1"], 200, None)]


KEPT = ("|", "device:", "RALU's time", "tiny", "model:", "peak", "each run:", "noise", f"{BEYOND}:", "time limit:")


def keep(output: str) -> str:
    """The tables and header lines of a benchmark's output (library notices dropped); a table
    with no rows (its run stopped before the first) is dropped, and so is its title line."""
    lines = [line for line in output.splitlines() if line.startswith(KEPT) or not line.strip()]
    out = []
    for i, line in enumerate(lines):
        header = line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---")
        if header and not (i + 2 < len(lines) and lines[i + 2].startswith("|")):
            lines[i + 1] = ""                                        # the separator goes with it
            while out and (not out[-1].strip() or out[-1].startswith(("RALU's time", "each run:"))):
                out.pop()
            continue
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def table_rows(text: str) -> int:
    """Rows of the tables in ``text`` (header and separator lines not counted)."""
    lines = text.splitlines()
    return sum(1 for i, line in enumerate(lines) if line.startswith("|") and not line.startswith("|---")
               and not (i + 1 < len(lines) and lines[i + 1].startswith("|---")))


def summary_of_tests(output: str) -> str:
    last = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected)", line)]
    return last[-1].strip("= ") if last else "no summary line"


def speedup_rows(text: str) -> list[str]:
    """The 7x preset's rows of the latency tables: wall speed-up and its noise beside the FLOP
    ratio, and whether the two depart by more than the noise explains."""
    out, head = [], None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or line.startswith("|---"):
            head = None if not line.startswith("|") else head
            continue
        if head is None:
            head = cells
            continue
        row = dict(zip(head, cells))
        run = row.get("run", "")
        if not ({"speed-up", "FLOP ratio", "wall / FLOP", "noise"} <= row.keys() and run.startswith("RALU")
                and "7x" in run and "TaylorSeer" not in run):
            continue
        value, _, mark = row["wall / FLOP"].partition(" ")
        verdict = {BEYOND: ": departs from the FLOP ratio by more than the noise explains",
                   UNKNOWN: ": one repeat, noise unknown"}.get(mark, ", within the noise")
        out.append(f"- {run} at {row['size']}x{row['size']}, batch {row['batch']}: {row['speed-up']} wall speed-up "
                   f"(noise {row['noise']}) over the 50-step baseline, FLOP ratio {row['FLOP ratio']} "
                   f"(wall / FLOP {value}{verdict})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", required=True, help="markdown file to write")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all sections together (default 450)")
    args = ap.parse_args(argv)
    report = Path(args.report)
    if report.parent and not report.parent.is_dir():
        ap.error(f"--report {report}: directory {report.parent} does not exist")

    import torch

    cuda = torch.cuda.is_available()
    memory = torch.cuda.get_device_properties(0).total_memory / GIB if cuda else 0.0
    start = time.perf_counter()
    parts, summary, skipped = [], [], []
    for title, command, limit, why in sections(cuda, memory):
        if command is None:
            skipped.append(f"- {title}: {why}")
            continue
        left = args.budget - (time.perf_counter() - start)
        if left < min(limit, 60):
            skipped.append(f"- {title}: the time budget ran out ({args.budget:.0f} s; rerun with a larger --budget)")
            continue
        limit = min(limit, left)
        if "bench/latency.py" in command:
            command = command + ["--time-limit", f"{LATENCY_SHARE * limit:.0f}"]
        shown = " ".join(["python" if c == sys.executable else c for c in command])
        print(f"== {title}: {shown}", flush=True)
        t0 = time.perf_counter()
        stopped = False
        try:                                     # unbuffered: what a stopped run printed is kept
            r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
            status = "ok" if r.returncode == 0 else f"failed (exit {r.returncode})"
            output = r.stdout + ("\n" + r.stderr if r.returncode != 0 else "")
        except subprocess.TimeoutExpired as err:
            output = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
            status, stopped = f"stopped at its time limit ({limit:.0f} s)", True
        seconds = time.perf_counter() - t0
        if title == "CUDA test set":
            body = summary_of_tests(output)
            if "failed" in body or status != "ok":
                failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
                body += "\n\n" + "\n".join(failures[:40])
            summary.append(f"- CUDA test set: {summary_of_tests(output)}")
        elif stopped:
            body = keep(output)
            rows = table_rows(body)
            status = (f"stopped at its time limit ({limit:.0f} s) " +
                      (f"with {rows} table row(s) done" if rows else "before any row finished") +
                      ": this machine was too slow or too loaded for the budget (rerun with a larger --budget, "
                      "or on a quiet machine)")
            body = body if rows else (body + "\n\n" if body else "") + "(no row finished within the time limit)"
            summary.append(f"- {title}: {status}")
            summary += speedup_rows(body)
        else:
            body = keep(output) if status == "ok" else "\n".join(output.strip().splitlines()[-25:])
            summary += speedup_rows(body)
            summary += [f"- {title}: {line}" for line in body.splitlines() if line.startswith("time limit:")]
        parts.append(f"## {title}\n\n`{shown}`: {status}, {seconds:.0f} s\n\n```\n{body}\n```\n")
        print(f"   {status}, {seconds:.0f} s", flush=True)
    text = "\n".join(["# GPU check report", "", *environment(cuda), "",
                      f"Total: {time.perf_counter() - start:.0f} s of a {args.budget:.0f} s budget.", "",
                      "## Summary", "", *(summary or ["- (no rows ran)"]), "", "## Skipped", "",
                      *(skipped or ["- nothing"]), "", *parts])
    report.write_text(text)
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
