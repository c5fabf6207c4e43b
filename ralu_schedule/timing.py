"""Wall times measured side by side, and how far a measured speed-up may trust them.

A benchmark that compares runs (a stock pipeline against RALU) times every run several times,
**interleaved**: round 1 runs A, B, C, round 2 runs B, C, A, and so on, so that load from
other processes, which comes and goes, falls on every run alike instead of on whichever run
happened to be timed during it. Each run is then reported by its **minimum** (the time least
disturbed by anything else) and its **spread**, ``(max - min) / min`` over its repeats: the
noise of this machine, for this run, while it was measured.

A wall-time speed-up ``base.best / run.best`` is uncertain by about the two runs' spreads
together (:func:`ratio_noise`). Where the cost model predicts the same ratio in FLOPs,
:func:`agreement` says whether the wall ratio departs from the FLOP ratio by more than that
noise explains; a departure beyond the noise is real for that machine (attention that the
paper's convention leaves out, fixed costs per call, memory traffic) or load that every
repeat saw, and deserves a look before it is quoted. With one repeat the noise is unknown and
nothing can be said. A run that was stopped by a time limit before its repeats finished is
reported with the repeats it has.

Torch-free: ``bench/latency.py``, ``bench/gpu_check.py``, ``bench/noise.py`` and
``bench/planning.py`` use it; the tests drive it with injected clocks and times.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

#: :func:`agreement`'s marks: the wall ratio agrees with the FLOP ratio within the noise,
#: departs from it by more than the noise explains, or the noise is unknown (one repeat).
WITHIN, BEYOND, UNKNOWN = "", "*", "?"

#: The legend a table with :func:`agreement` marks prints under it.
LEGEND = (f"{BEYOND}: wall / FLOP departs from 1 by more than the repeats' noise explains (a real difference on "
          f"this machine, or load every repeat saw); {UNKNOWN}: one repeat, noise unknown")


@dataclass(frozen=True)
class Timing:
    """The wall times of one run's repeats, in seconds."""

    times: tuple

    def __post_init__(self):
        times = tuple(float(t) for t in self.times)
        if not times or not all(math.isfinite(t) and t > 0 for t in times):
            raise ValueError(f"a timing needs at least one positive, finite time, got {times}")
        object.__setattr__(self, "times", times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def repeats(self) -> int:
        return len(self.times)

    @property
    def spread(self) -> float | None:
        """``(max - min) / min`` over the repeats; ``None`` with one repeat (unknown)."""
        return None if len(self.times) < 2 else (max(self.times) - self.best) / self.best


def ratio_noise(*timings: Timing) -> float | None:
    """Relative uncertainty of a ratio of the timings' minima: their spreads added (``None``
    when any has one repeat)."""
    spreads = [t.spread for t in timings]
    return None if any(s is None for s in spreads) else sum(spreads)


def agreement(wall_ratio: float, flop_ratio: float, noise: float | None) -> str:
    """:data:`WITHIN` when ``wall_ratio / flop_ratio`` lies within ``[1 / (1 + noise), 1 + noise]``,
    :data:`BEYOND` when outside, :data:`UNKNOWN` when ``noise`` is ``None``."""
    if noise is None:
        return UNKNOWN
    return WITHIN if abs(math.log(wall_ratio / flop_ratio)) <= math.log1p(noise) else BEYOND


def interleaved(calls: Sequence[tuple[str, Callable[[], object]]], repeats: int, *,
                clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] = lambda: None,
                before: Callable[[str], None] = lambda label: None,
                after: Callable[[str, float], None] = lambda label, seconds: None,
                deadline: float | None = None) -> dict:
    """Time each ``(label, call)`` ``repeats`` times in rounds, the order rotated by one each
    round (A B C, B C A, C A B, ...), with ``sync()`` before the clock is read on either side
    of a call (CUDA: ``torch.cuda.synchronize``). ``before(label)`` and ``after(label, seconds)``
    run around each timed call (a breakdown's timers). A round is not begun once ``clock()``
    has passed ``deadline``, but at least one is run. Returns ``{label: Timing}``."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    times = {label: [] for label, _ in calls}
    for r in range(repeats):
        if r and deadline is not None and clock() > deadline:
            break
        k = r % len(calls)
        for label, call in list(calls[k:]) + list(calls[:k]):
            before(label)
            sync()
            t0 = clock()
            call()
            sync()
            seconds = clock() - t0
            times[label].append(seconds)
            after(label, seconds)
    return {label: Timing(tuple(ts)) for label, ts in times.items()}


def format_noise(noise: float | None) -> str:
    """``"±3.1%"``, or ``"n/a"`` for one repeat."""
    return "n/a" if noise is None else f"±{100 * noise:.1f}%"
