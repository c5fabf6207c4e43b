"""Solve time and paper metric of our optimiser next to the authors' single L-BFGS-B start.

    python bench/solve.py

Both run here, one after the other, on the same layouts. Prints the markdown table that
docs/schedule.md quotes (tests/test_docs_numbers.py re-runs it and compares the metrics).
"""

from __future__ import annotations

import time

from ralu_schedule import Layout, solve

LAYOUTS = {
    "3-stage (7x preset)": Layout(steps=(2, 3, 5), ends=(0.2, 0.3, 1.0), fractions=(0.1, 1.0)),
    "3-stage (4x preset)": Layout(steps=(5, 6, 7), ends=(0.3, 0.45, 1.0), fractions=(0.3, 1.0)),
    "4-stage": Layout(steps=(2, 2, 3, 5), ends=(0.15, 0.25, 0.4, 1.0), fractions=(0.1, 0.3, 1.0)),
    "6-stage": Layout(steps=(1, 2, 2, 2, 3, 4), ends=(0.1, 0.2, 0.3, 0.45, 0.6, 1.0),
                      fractions=(0.05, 0.1, 0.2, 0.4, 1.0)),
}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    import scipy.optimize  # noqa: F401  (loaded on the first solve; not part of any row's time)

    print("| layout | single-start JSD | time s | global JSD | time s | per-transition c JSD | time s |")
    print("|---|---|---|---|---|---|---|")
    for name, lay in LAYOUTS.items():
        single, ts = timed(lambda: solve(lay, method="single-start"))
        best, tg = timed(lambda: solve(lay))
        own, tp = timed(lambda: solve(lay, per_transition=True))
        print(f"| {name} | {single.jsd:.5f} | {ts:.2f} | {best.jsd:.5f} | {tg:.2f} | {own.jsd:.5f} | {tp:.2f} |")


if __name__ == "__main__":
    main()
