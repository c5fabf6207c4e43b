"""Stage layouts and solved schedules: frozen, validated, JSON round-trip.

A :class:`Layout` says how many Euler steps each stage takes, where each stage ends, and
how each transition upsamples (factor per axis, fraction of the remaining low-resolution
blocks). A :class:`Schedule` adds what the matching solved for: a shift per stage and a
noise correlation ``c`` per transition; everything else (restart times, ``a``, ``b``,
timesteps, sigmas, the paper metric) is derived from those, never stored twice.

Upsampling structure: all blocks start at the coarsest level. A transition upsamples the
top ``fraction`` of the blocks still at the coarsest level by ``factor`` per axis;
``fraction = 1`` upsamples all that remain and so closes that level. Transitions that act
on one level share its factor, and the last transition must close the last level, so
every token is at full resolution in the last stage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ._errors import brief, check_finite, check_positive_int, check_sequence, check_shift, fmt
from ._files import read_text
from .distributions import ShiftedTime, StretchedTime
from .metric import paper_metric
from .reinjection import Reinjection, check_correlation, reinjection
from .strength import base_steps, check_rounding, check_strength, cut_index, describe_cut, map_time, start_time

FORMAT = "ralu-schedule/1"


#: ``h0`` of a layout that names none: the static shift of SD3 and of the authors' presets.
DEFAULT_BASE_SHIFT = 3.0

#: Limits checked before any work (documented in docs/schedule.md): stages of a layout, and
#: steps in all. The solver's work grows with the stages (an 8-stage layout took 8.3 s of CPU
#: time, measured on a loaded 2-core machine); no published schedule uses more than 3 stages
#: or 50 steps.
MAX_STAGES = 8
MAX_STEPS = 1000

#: Largest upsampling factor per axis (documented in docs/schedule.md). A factor ``f`` needs a
#: full-resolution latent of at least ``f`` tokens per side (``16 f`` pixels for FLUX), so
#: 65536 is beyond any image; below it the solver's box ``Z in [f, 50 f]`` and ``c = 1/Z^2``
#: stay far inside double precision (they overflow near ``f = 1e152``), and every factor in
#: ``[2, MAX_FACTOR]`` solves (``tests/test_matching.py`` draws them).
MAX_FACTOR = 65536


def upsample_count(remaining: int, fraction: float) -> int:
    """How many of ``remaining`` low-resolution blocks a transition upsamples: all of them
    for ``fraction = 1``, else ``fraction * remaining`` rounded to the nearest integer (half up).

    The one count rule: the sampler (every selection policy, ``"authors"`` included) and the
    cost model both call it, so their token counts agree. Nearest rather than the authors'
    floor because it realises the fraction a layout names as closely as any integer can, and
    keeps the mixed stage non-empty on small grids (``0.1 x 6`` tokens gives 1, not 0). At the
    paper's 1024x1024 both rules give the same counts (102 and 307 tokens for the 7x and 4x
    presets), so the published numbers are unaffected; elsewhere they differ by at most one
    token, where the fractional part of ``fraction * remaining`` is at least one half.
    """
    if fraction >= 1.0:
        return int(remaining)
    return int(math.floor(fraction * remaining + 0.5))


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Steps, stage ends and upsampling of a RALU schedule (METHOD section 2).

    ``factors`` and ``fractions`` have one entry per transition (``len(steps) - 1``) and
    default to 2 and 1.0. ``base_shift`` is ``h0``, the shift of the original sampler whose
    timestep distribution the schedule matches; take it from the model's scheduler at the
    target resolution (:class:`ralu_schedule.ShiftRule`). ``terminal`` is that sampler's
    ``shift_terminal`` (Qwen-Image: 0.02), or ``None``: the base sampler's grid and the last
    stage's grid (with at least 2 steps) are then stretched so that their last step starts at
    ``sigma = terminal`` (:class:`ralu_schedule.distributions.StretchedTime`). The base sampler
    is the model's own, run with the layout's ``total_steps``.

    ``start`` is where the first stage starts (0: from pure noise). A layout that starts later
    runs all its steps on ``[start, 1]``, as an image-to-image run does from its strength
    point, and is matched to the base sampler truncated to that range (:mod:`ralu_schedule.strength`;
    :meth:`for_strength` makes one from a strength).
    """

    steps: tuple
    ends: tuple
    factors: tuple | None = None
    fractions: tuple | None = None
    base_shift: float = DEFAULT_BASE_SHIFT
    terminal: float | None = None
    start: float = 0.0

    def __post_init__(self):
        steps, ends = check_sequence("steps", self.steps), check_sequence("ends", self.ends)
        if not steps:
            raise ValueError("steps must name at least one stage, got []")
        if len(steps) > MAX_STAGES:
            raise ValueError(f"a layout may have at most {MAX_STAGES} stages, got {len(steps)}")
        steps = tuple(check_positive_int("each step count", s) for s in steps)
        if sum(steps) > MAX_STEPS:
            raise ValueError(f"a layout may have at most {MAX_STEPS} steps in all, got {sum(steps)}")
        ends = tuple(check_finite("each end", e) for e in ends)
        if len(ends) != len(steps):
            raise ValueError(f"steps and ends must have the same length, got {len(steps)} steps "
                             f"{fmt(steps)} and {len(ends)} ends {fmt(ends)}")
        if any(b <= a for a, b in zip(ends, ends[1:])) or not 0.0 < ends[0] or ends[-1] != 1.0:
            raise ValueError(f"ends must increase strictly within (0, 1] and finish at 1.0, got {fmt(ends)}")
        k = len(steps) - 1
        factors = (2,) * k if self.factors is None else check_sequence("factors", self.factors)
        fractions = (1.0,) * k if self.fractions is None else check_sequence("fractions", self.fractions)
        if len(factors) != k:
            raise ValueError(f"factors must have one entry per transition ({k}), got {fmt(factors)}")
        if len(fractions) != k:
            raise ValueError(f"fractions must have one entry per transition ({k}), got {fmt(fractions)}")
        factors = tuple(check_positive_int("each factor", f, minimum=2) for f in factors)
        if any(f > MAX_FACTOR for f in factors):
            raise ValueError(f"each factor must be at most {MAX_FACTOR} (a factor f needs a latent of at least "
                             f"f tokens per side), got {brief(max(factors))}")
        fractions = tuple(check_finite("each fraction", r) for r in fractions)
        if any(not 0.0 < r <= 1.0 for r in fractions):
            raise ValueError(f"fractions must lie in (0, 1], got {fmt(fractions)}")
        if k and fractions[-1] != 1.0:
            raise ValueError("the last transition must upsample all remaining blocks (fraction 1.0), "
                             f"got fractions {fmt(fractions)}")
        for group in _levels(fractions):
            if len({factors[i] for i in group}) > 1:
                raise ValueError("transitions that upsample the same level must share its factor, got "
                                 f"factors {fmt([factors[i] for i in group])} for transitions {fmt(group)}")
        base_shift = check_shift("base shift", self.base_shift)
        terminal = None
        if self.terminal is not None:
            terminal = check_finite("terminal", self.terminal)
            if not 0.0 < terminal < 1.0:
                raise ValueError(f"terminal (the base sampler's shift_terminal) must lie in (0, 1), got {terminal:g}")
            if k and ends[-2] >= 1.0 - terminal:
                raise ValueError(f"with terminal {terminal:g} every stage but the last must end before "
                                 f"t = {1.0 - terminal:g}, where the stretched last step begins; got ends {fmt(ends)}")
        start = check_finite("start", self.start)
        if not 0.0 <= start < ends[0]:
            raise ValueError(f"start must lie in [0, {ends[0]:g}) (before the first stage's end), got {start:g}")
        if terminal is not None and start >= 1.0 - terminal:
            raise ValueError(f"with terminal {terminal:g} a layout must start before t = {1.0 - terminal:g}, where the "
                             f"stretched last step begins; got start {start:g}")
        for name, value in [("steps", steps), ("ends", ends), ("factors", factors), ("fractions", fractions),
                            ("base_shift", base_shift), ("terminal", terminal), ("start", start)]:
            object.__setattr__(self, name, value)

    @property
    def num_stages(self) -> int:
        return len(self.steps)

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def level_factors(self) -> tuple:
        """Upsampling factor of each resolution level, coarsest first."""
        return tuple(self.factors[g[0]] for g in _levels(self.fractions))

    @property
    def downsampling(self) -> int:
        """How much coarser per axis than the full grid the first stage runs."""
        return math.prod(self.level_factors)

    @property
    def max_block_size(self) -> int:
        """The largest ``n = factor^2``: the correlation bound is ``c <= 1/max_block_size``."""
        return max((f * f for f in self.factors), default=1)

    def stage_tokens(self, grid_height: int, grid_width: int) -> tuple:
        """Token count of each stage for a full-resolution token grid ``grid_height x grid_width``."""
        d = self.downsampling
        check_positive_int("grid height", grid_height)
        check_positive_int("grid width", grid_width)
        if grid_height % d or grid_width % d:
            raise ValueError(f"a {grid_height}x{grid_width} token grid cannot be split by this layout: "
                             f"both sides must be multiples of {d}")
        tokens = remaining = (grid_height // d) * (grid_width // d)
        counts = [tokens]
        for f, r in zip(self.factors, self.fractions):
            up = upsample_count(remaining, r)
            tokens += up * (f * f - 1)
            remaining = tokens if r >= 1.0 else remaining - up
            counts.append(tokens)
        return tuple(counts)

    def with_base_shift(self, base_shift: float) -> "Layout":
        """The same layout for a base sampler with shift ``base_shift`` (and the same terminal)."""
        return self.with_base(base_shift, self.terminal)

    def with_base(self, base_shift: float, terminal: float | None) -> "Layout":
        """The same layout for a base sampler with shift ``base_shift`` and ``terminal``."""
        return Layout(steps=self.steps, ends=self.ends, factors=self.factors,
                      fractions=self.fractions, base_shift=base_shift, terminal=terminal, start=self.start)

    def with_start(self, start: float) -> "Layout":
        """The same stages starting at ``start`` instead of ``self.start`` (its ends unchanged)."""
        return Layout(steps=self.steps, ends=self.ends, factors=self.factors, fractions=self.fractions,
                      base_shift=self.base_shift, terminal=self.terminal, start=start)

    def for_strength(self, strength: float) -> "Layout":
        """This layout (made for the full range) moved onto the range a pipeline covers at
        ``strength``: it starts at ``t0 = F^{-1}(1 - strength)`` and each stage end keeps its
        share of the base sampler's steps (:func:`ralu_schedule.strength.map_time`); all its
        steps run there. ``strength = 1`` gives the layout itself."""
        s = check_strength(strength)
        if self.start != 0.0:
            raise ValueError(f"this layout already starts at {self.start:g}; for_strength moves a layout made for the "
                             "full range [0, 1]")
        if s == 1.0:
            return self
        args = (s, self.base_shift, self.terminal, self.total_steps)
        start = start_time(*args)
        ends = tuple(float(e) for e in map_time(np.array(self.ends[:-1]), *args)) + (1.0,)
        return Layout(steps=self.steps, ends=ends, factors=self.factors, fractions=self.fractions,
                      base_shift=self.base_shift, terminal=self.terminal, start=start)

    @cached_property
    def base_steps(self) -> float:
        """``N``: steps of the base sampler whose truncation to ``[start, 1]`` holds this layout's
        ``total_steps`` (``total_steps`` itself when ``start = 0``; :func:`ralu_schedule.strength.base_steps`)."""
        return base_steps(self.start, self.base_shift, self.terminal, self.total_steps)


def _levels(fractions) -> list:
    """Group transition indices by the level they upsample (each group ends with fraction 1)."""
    groups, current = [], []
    for i, r in enumerate(fractions):
        current.append(i)
        if r >= 1.0:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class Stage:
    start: float
    end: float
    steps: int
    shift: float
    terminal: float | None = None     # set on a last stage whose grid is stretched (Layout.terminal)
    #: leading steps of the stage's grid not run: the grid is the ``steps + skip``-step grid from
    #: ``start`` without its first ``skip`` steps (a pipeline's strength cut, :meth:`Schedule.cut`)
    skip: int = 0

    @property
    def stretched(self) -> bool:
        return self.terminal is not None and self.end == 1.0 and self.steps + self.skip >= 2

    @cached_property
    def timesteps(self) -> np.ndarray:
        """The ``steps + 1`` data-times ``t`` the stage runs, ascending to ``end`` (from ``start``
        unless it skips steps)."""
        n = self.steps + self.skip
        if self.stretched:
            return StretchedTime(self.shift, self.start, n, self.terminal).grid()[self.skip:]
        return ShiftedTime(self.shift, self.start, self.end).grid(n)[self.skip:]

    @property
    def sigmas(self) -> np.ndarray:
        """diffusers' sigmas ``1 - t``, descending, ``steps + 1`` values (the last one is
        the stage's terminal sigma; pass ``sigmas[:-1]`` to ``set_timesteps``)."""
        return 1.0 - self.timesteps


@dataclass(frozen=True)
class Transition(Reinjection):
    factor: int = 2
    fraction: float = 1.0


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a sampler executes: a layout with its stages (time grids) and transitions
    (re-injection coefficients).

    :attr:`Schedule.plan` derives one from solved parameters. Analyses build others with
    ``dataclasses.replace`` on stages and transitions, e.g. no re-injection (``a = 1``,
    ``b = 0``, restart at ``e``) or uncorrelated noise (``c = 0``): variants that no
    ``(c, h_k)`` produce, checked here for shape but not for optimality.
    """

    layout: Layout
    stages: tuple
    transitions: tuple

    def __post_init__(self):
        if not isinstance(self.layout, Layout):
            raise ValueError(f"layout must be a Layout, got {type(self.layout).__name__}")
        stages, trans = tuple(self.stages), tuple(self.transitions)
        K = self.layout.num_stages
        if len(stages) != K or not all(isinstance(st, Stage) for st in stages):
            raise ValueError(f"a plan needs one Stage per stage of its layout ({K}), got {len(stages)}")
        if len(trans) != K - 1 or not all(isinstance(t, Transition) for t in trans):
            raise ValueError(f"a plan needs one Transition per transition of its layout ({K - 1}), got {len(trans)}")
        for k, (st, n, e) in enumerate(zip(stages, self.layout.steps, self.layout.ends)):
            if st.steps + st.skip != n or st.end != e:
                raise ValueError(f"stage {k} runs {st.steps} steps to {st.end:g}, its layout says {n} to {e:g}")
            if st.skip and (k > 0 or st.steps < 1):
                raise ValueError(f"stage {k} skips {st.skip} steps of its grid; only the first stage may (a strength "
                                 "cut), and it must keep at least one")
        for k, (t, f, r) in enumerate(zip(trans, self.layout.factors, self.layout.fractions)):
            if (t.factor, t.fraction) != (f, r):
                raise ValueError(f"transition {k} upsamples by {t.factor} a fraction {t.fraction:g}, "
                                 f"its layout says {f} and {r:g}")
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "transitions", trans)

    @property
    def start(self) -> float:
        """The data-time of the first model call."""
        return float(self.stages[0].timesteps[0])


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A layout with its solved shifts ``h_k`` (one per stage) and correlations ``c_k``
    (one per transition). ``info`` carries free-form metadata (preset name, model,
    resolution, how it was solved) into the JSON."""

    layout: Layout
    shifts: tuple
    correlations: tuple
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        lay = self.layout
        if not isinstance(lay, Layout):
            raise ValueError(f"layout must be a Layout, got {type(lay).__name__}")
        shifts = tuple(check_shift("each shift", h) for h in check_sequence("shifts", self.shifts))
        cs = tuple(check_finite("each c", c) for c in check_sequence("correlations", self.correlations))
        if len(shifts) != lay.num_stages:
            raise ValueError(f"need one shift per stage ({lay.num_stages}), got {fmt(shifts)}")
        if len(cs) != lay.num_stages - 1:
            raise ValueError(f"need one c per transition ({lay.num_stages - 1}), got {fmt(cs)}")
        cs = tuple(check_correlation(c, f) for c, f in zip(cs, lay.factors))
        object.__setattr__(self, "shifts", shifts)
        object.__setattr__(self, "correlations", cs)
        object.__setattr__(self, "info", dict(self.info))

    @cached_property
    def transitions(self) -> tuple:
        lay = self.layout
        out = []
        for e, c, f, r in zip(lay.ends[:-1], self.correlations, lay.factors, lay.fractions):
            rj = reinjection(e, c, f)
            out.append(Transition(**vars(rj), factor=f, fraction=r))
        return tuple(out)

    @property
    def starts(self) -> tuple:
        return (self.layout.start,) + tuple(t.restart for t in self.transitions)

    @cached_property
    def stages(self) -> tuple:
        lay = self.layout
        return tuple(Stage(s, e, n, h, lay.terminal if e == 1.0 else None)
                     for s, e, n, h in zip(self.starts, lay.ends, lay.steps, self.shifts))

    @property
    def plan(self) -> Plan:
        """The stages and transitions a sampler runs."""
        return Plan(layout=self.layout, stages=self.stages, transitions=self.transitions)

    def cut(self, strength: float, rounding: str = "img2img", pipeline: str = "the pipeline") -> Plan:
        """The plan a pipeline runs of this fixed schedule at ``strength``: its first
        ``t_start`` steps dropped where the pipeline drops them from its own grid of
        ``total_steps``, in its arithmetic (:func:`ralu_schedule.strength.cut_index`, ``rounding``
        ``"img2img"`` or ``"video2video"``); everything else as it is. Only the first stage may lose
        steps (a later stage's token set comes from the selection at the end of the one before)."""
        s = check_strength(strength)
        lay = self.layout
        N = lay.total_steps
        cut = cut_index(N, s, check_rounding(rounding))
        if cut >= N:
            raise ValueError(f"strength {s:g} leaves none of this schedule's steps: {describe_cut(N, s, rounding, pipeline)}; "
                             "use a larger strength")
        if cut >= lay.steps[0]:
            raise ValueError(f"strength {s:g} cuts into this fixed schedule beyond its first stage "
                             f"({'+'.join(map(str, lay.steps))} steps: {describe_cut(N, s, rounding, pipeline)}); a fixed "
                             "schedule may lose only first-stage steps. Pass its layout (or a preset name), which is "
                             "solved for the strength and runs all its steps, or a strength of at least "
                             f"{(N - lay.steps[0] + 1) / N:.3g}")
        first = self.stages[0]
        stages = (Stage(first.start, first.end, first.steps - cut, first.shift, first.terminal, first.skip + cut),)
        return Plan(layout=lay, stages=stages + self.stages[1:], transitions=self.transitions)

    @property
    def c(self):
        """The common correlation when all transitions share one, else ``None``."""
        cs = set(self.correlations)
        return cs.pop() if len(cs) == 1 else None

    @cached_property
    def jsd(self) -> float:
        """The paper metric (JS distance on the 1000-point grid) of this schedule."""
        return paper_metric(self.layout, self.shifts, self.correlations)

    # -- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": FORMAT, "base_shift": self.layout.base_shift, **self._terminal_entry(), **self._start_entry(),
             "c": self.c,
             "jsd": self.jsd,
             "stages": [{"start": st.start, "end": st.end, "steps": st.steps, "shift": st.shift,
                         "timesteps": st.timesteps.tolist(), "sigmas": st.sigmas.tolist()}
                        for st in self.stages],
             "transitions": [{"at": t.at, "restart": t.restart, "a": t.a, "b": t.b, "c": t.c,
                              "factor": t.factor, "fraction": t.fraction} for t in self.transitions]}
        if self.info:
            d["info"] = self.info
        return d

    def _terminal_entry(self) -> dict:
        return {} if self.layout.terminal is None else {"terminal": self.layout.terminal}

    def _start_entry(self) -> dict:
        return {} if self.layout.start == 0.0 else {"start": self.layout.start}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)   # a non-finite number is an error

    def save(self, path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d) -> "Schedule":
        """Rebuild a schedule and check every stored number against the rebuilt one."""
        if not isinstance(d, dict):
            raise ValueError(f"a schedule must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(f"schedule format must be {FORMAT!r}, got {d.get('format')!r}")
        missing = [k for k in ("base_shift", "stages", "transitions") if k not in d]
        if missing:
            raise ValueError(f"schedule is missing keys: {', '.join(missing)}")
        stages, trans = d["stages"], d["transitions"]
        if not isinstance(stages, list) or not isinstance(trans, list):
            raise ValueError("schedule 'stages' and 'transitions' must be lists")
        if not stages:
            raise ValueError("schedule 'stages' must name at least one stage, got []")
        if len(stages) > MAX_STAGES:
            raise ValueError(f"a schedule may have at most {MAX_STAGES} stages, got {len(stages)}")
        if "info" in d and d["info"] is not None and not isinstance(d["info"], dict):
            raise ValueError(f"schedule 'info' must be an object (or null), got {brief(d['info'])}")
        for i, st in enumerate(stages):
            _require(st, f"stages[{i}]", ("end", "steps", "shift"))
        for i, t in enumerate(trans):
            _require(t, f"transitions[{i}]", ("at", "c"))
        if len(trans) != len(stages) - 1:
            raise ValueError(f"a schedule with {len(stages)} stages needs {len(stages) - 1} transitions, "
                             f"got {len(trans)}")
        layout = Layout(steps=[st["steps"] for st in stages], ends=[st["end"] for st in stages],
                        factors=[t.get("factor", 2) for t in trans],
                        fractions=[t.get("fraction", 1.0) for t in trans], base_shift=d["base_shift"],
                        terminal=d.get("terminal"), start=d.get("start", 0.0))
        sched = cls(layout=layout, shifts=[st["shift"] for st in stages],
                    correlations=[t["c"] for t in trans], info=d.get("info") or {})
        check_schedule_finite(sched)
        _check_consistent(d, sched)
        return sched

    @classmethod
    def from_json(cls, text: str) -> "Schedule":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"schedule is not valid JSON: {err}") from None
        except RecursionError:
            raise ValueError("schedule JSON is nested too deeply to be a schedule") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path) -> "Schedule":
        if not str(path).strip():           # Path("") is the current directory
            raise ValueError(f"schedule file name is empty, got {brief(str(path))}; give the path of a JSON schedule file")
        try:
            text = read_text(path)
        except (OSError, UnicodeDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise ValueError(f"cannot read schedule file {brief(str(path))}: {why}") from None
        return cls.from_json(text)


def check_schedule_finite(sched: "Schedule | Plan") -> None:
    """Every number a sampler uses (timesteps, re-injection coefficients, the metric) finite:
    what is written, loaded or sampled is checked with this."""
    plan = sched.plan if isinstance(sched, Schedule) else sched
    values = [np.asarray(st.timesteps) for st in plan.stages]
    values.append(np.array([[t.a, t.b, t.c, t.restart] for t in plan.transitions], dtype=np.float64).ravel())
    if isinstance(sched, Schedule):
        values.append(np.array([sched.jsd]))
    if not all(np.all(np.isfinite(v)) for v in values):
        raise ValueError("the schedule's timesteps, re-injection coefficients or metric are not finite; "
                         "its shifts or layout are outside what double precision can represent")


def _require(obj, where, keys):
    if not isinstance(obj, dict):
        raise ValueError(f"schedule {where} must be an object")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"schedule {where} is missing keys: {', '.join(missing)}")


def _close(x, y) -> bool:
    return np.allclose(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                       rtol=1e-6, atol=1e-9)


def _check_consistent(d: dict, sched: Schedule) -> None:
    """Every derived number present in ``d`` must agree with what the parameters imply."""
    def agree(where, key, stored, derived):
        try:   # lengths first: a huge stored list is refused without converting it
            same_len = not isinstance(stored, list) or len(stored) == np.size(derived)
            ok = same_len and np.shape(stored) == np.shape(derived) and _close(stored, derived)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"schedule {where}{key} = {brief(stored)} contradicts the schedule's "
                             f"parameters, which give {brief(np.round(derived, 6).tolist())}")

    for i, (st, stage) in enumerate(zip(d["stages"], sched.stages)):
        for key in ("start", "timesteps", "sigmas"):
            if key in st:
                agree(f"stages[{i}].", key, st[key], getattr(stage, key))
    for i, (t, tr) in enumerate(zip(d["transitions"], sched.transitions)):
        for key in ("at", "restart", "a", "b"):       # "at" is required: where stage i ends
            if key in t:
                agree(f"transitions[{i}].", key, t[key], getattr(tr, key))
    if d.get("c") is not None:
        if not sched.transitions:
            raise ValueError(f"schedule c = {d['c']!r} names a noise correlation, but a one-stage schedule has no "
                             "transitions for it to act on; set \"c\" to null or leave it out")
        if sched.c is None:
            raise ValueError(f"schedule c = {d['c']!r} contradicts its transitions' differing c values "
                             f"{fmt(list(sched.correlations))}")
        agree("", "c", d["c"], sched.c)
    if d.get("jsd") is not None:
        agree("", "jsd", d["jsd"], sched.jsd)
