"""Hypothesis strategies for RALU layouts, schedules, transitions and resolutions.

For property-based verification of the derivation on your own layouts (``pip install
'ralu[verify]'``); the project's own property tests draw from these. Every strategy yields
valid objects only: drawing one never raises.

    from hypothesis import given
    from ralu_schedule.strategies import schedules
    from ralu_schedule.verify import check_json_round_trip

    @given(schedules())
    def test_round_trip(s):
        check_json_round_trip(s)
"""

from __future__ import annotations

from ._errors import MissingDependency

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - exercised only without hypothesis
    raise MissingDependency("ralu_schedule.strategies needs hypothesis: pip install 'ralu[verify]'") from None

import numpy as np

from .grid import PIXELS_PER_TOKEN
from .layout import Layout, Schedule
from .matching import DEFAULT_SHIFT_BOUNDS
from .reinjection import max_correlation

__all__ = ["layouts", "resolutions", "schedules", "shifted_times", "transitions"]


@st.composite
def layouts(draw, max_stages: int = 5, max_steps: int = 8, factors=(2,), base_shifts=(0.5, 5.0)) -> Layout:
    """Layouts of 1 to ``max_stages`` stages with 1 to ``max_steps`` steps each, ends apart by
    at least 1e-3, fractions in ``[0.05, 1]`` (the last one 1), one factor from ``factors``
    shared by every transition, and ``h0`` in ``base_shifts``."""
    k = draw(st.integers(1, max_stages))
    steps = draw(st.lists(st.integers(1, max_steps), min_size=k, max_size=k))
    cuts = sorted(draw(st.lists(st.floats(0.05, 0.95), min_size=k - 1, max_size=k - 1, unique=True)))
    if any(b - a < 1e-3 for a, b in zip(cuts, cuts[1:])):
        cuts = list(np.linspace(0.1, 0.9, k - 1))
    fractions = draw(st.lists(st.floats(0.05, 1.0), min_size=k - 1, max_size=k - 1))
    if k > 1:
        fractions[-1] = 1.0
    factor = draw(st.sampled_from(factors))
    return Layout(steps=steps, ends=cuts + [1.0], fractions=fractions, factors=[factor] * (k - 1),
                  base_shift=draw(st.floats(*base_shifts)))


@st.composite
def schedules(draw, layout=None, shifts=DEFAULT_SHIFT_BOUNDS, min_c: float = 1e-4) -> Schedule:
    """Schedules on layouts drawn from ``layout`` (a strategy; default :func:`layouts`) with
    shifts in ``shifts`` and each ``c`` in ``[min_c, 1/n]``: any parameters, not only optimal ones."""
    lay = draw(layout if layout is not None else layouts())
    k = lay.num_stages
    hs = draw(st.lists(st.floats(*shifts), min_size=k, max_size=k))
    cs = [draw(st.floats(min_c, max_correlation(f))) for f in lay.factors]
    return Schedule(layout=lay, shifts=hs, correlations=cs)


@st.composite
def transitions(draw, factors=(2, 3, 4)) -> tuple:
    """``(factor, e, c)`` of one transition: ``e`` in ``[0.01, 0.99]``, ``c`` in ``(0, 1/factor^2]``."""
    f = draw(st.sampled_from(factors))
    e = draw(st.floats(0.01, 0.99))
    c = draw(st.floats(1e-4, 1.0)) * max_correlation(f)
    return f, e, c


@st.composite
def shifted_times(draw, shifts=(0.1, 20.0)) -> tuple:
    """``(h, start, end)`` of a truncated shifted-time distribution, ``end - start >= 0.02``."""
    h = draw(st.floats(*shifts))
    a = draw(st.floats(0.0, 0.95))
    b = draw(st.floats(a + 0.02, 1.0))
    return h, a, b


@st.composite
def resolutions(draw, layout: Layout | None = None, max_side: int = 2048,
                pixels_per_token: int = PIXELS_PER_TOKEN) -> tuple:
    """``(height, width)`` in pixels that ``layout`` can split (multiples of ``16 D``), up to ``max_side``."""
    unit = pixels_per_token * (layout.downsampling if layout is not None else 1)
    most = max(1, max_side // unit)
    return draw(st.integers(1, most)) * unit, draw(st.integers(1, most)) * unit
