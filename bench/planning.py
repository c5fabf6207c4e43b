"""What asking for many images costs before the first one is written, side by side.

    python bench/planning.py                       # 1, 10**3, 10**6 and 10**9 images
    python bench/planning.py --counts 1 1000000000

Each count runs ``ralu generate --num-images N`` in a fresh process on the same tiny random
FLUX (saved once, as ``from_pretrained`` reads it) into an empty directory, and stops that
process as soon as its first image is on disk. The table gives the process's peak resident
memory (``ru_maxrss``, which includes Python, torch and the model) and the wall time from
the start of ``main`` to the first image, with each count's ratio to the first count's: the
minimum over ``--repeats`` processes per count, the counts run in interleaved rounds, with the
ratio's noise (:mod:`ralu_schedule.timing`).
Planning is lazy (``ralu_torch.jobs.Plan``: image ``i``'s prompt, seed and file are computed
when asked for), so neither should grow with the count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ralu_schedule.timing import format_noise, interleaved, ratio_noise

CHILD = """
import json, resource, sys, time
from pathlib import Path
import ralu_torch.generation.write as gen
from ralu_torch.cli import main

model, out, count = sys.argv[1], sys.argv[2], sys.argv[3]
original = gen.save
class First(Exception):
    pass
def save_then_stop(image, path, recipe, audio=None):
    original(image, path, recipe, audio)
    raise First
gen.save = save_then_stop
start = time.perf_counter()
try:
    main(["generate", "--model", model, "--prompt", "a red cat", "--num-images", count, "--out-dir", out,
          "--height", "64", "--width", "64", "--max-sequence-length", "16", "--device", "cpu"])
except First:
    pass
else:
    sys.exit("the run ended without writing an image")
seconds = time.perf_counter() - start
files = sorted(p.name for p in Path(out).iterdir())
print(json.dumps({"seconds": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "files": files}))
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10**3, 10**6, 10**9])
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per count, the counts interleaved (default 3); the minimum is reported")
    args = parser.parse_args(argv)

    from ralu_torch.testing import flux_pipeline_with_text

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny-flux"
        flux_pipeline_with_text().save_pretrained(model)
        clock, memory = [0.0], {count: [] for count in args.counts}

        def first_image(k, count):
            """One fresh process asked for ``count`` images; its own time to the first image
            moves ``clock`` on, so that interleaved() reads the child's time, not start-up's."""
            def run():
                out = Path(tmp) / f"out-{k}-{len(memory[count])}"
                r = subprocess.run([sys.executable, "-c", CHILD, str(model), str(out), str(count)],
                                   capture_output=True, text=True, timeout=600)
                if r.returncode != 0:
                    raise SystemExit(f"--num-images {count} failed: {r.stderr.strip().splitlines()[-1]}")
                result = json.loads(r.stdout.strip().splitlines()[-1])
                if result["files"] != ["00000.png"]:
                    raise SystemExit(f"--num-images {count} left {result['files']}, expected only 00000.png")
                clock[0] += result["seconds"]
                memory[count].append(result["rss_mib"])
            return run

        timings = interleaved([(count, first_image(k, count)) for k, count in enumerate(args.counts)], args.repeats,
                              clock=lambda: clock[0])

    first, rss0 = timings[args.counts[0]], min(memory[args.counts[0]])
    print(f"tiny random FLUX, 64x64, CPU; each count in a fresh process, stopped after its first image; "
          f"the minimum of {args.repeats} process(es) per count, the counts interleaved\n")
    print("| images asked for | peak memory MiB | memory vs first | time to first image s | time vs first | noise |")
    print("|---|---|---|---|---|---|")
    for count in args.counts:
        t, rss = timings[count], min(memory[count])
        noise = ratio_noise(first, t) if count != args.counts[0] else first.spread
        print(f"| {count:,} | {rss:.0f} | {rss / rss0:.2f}x | {t.best:.2f} | {t.best / first.best:.2f}x | "
              f"{format_noise(noise)} |")


if __name__ == "__main__":
    main()
