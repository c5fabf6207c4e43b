"""What ``RALU(pipe, schedule)`` and ``ralu generate`` accept as a schedule, read without
torch (the command line checks it before importing torch or loading any weights)."""

from __future__ import annotations

import os

from ralu_schedule import PRESETS, Layout, Schedule, get_preset, preset
from ralu_schedule._errors import brief
from ralu_schedule.models import MODEL_INFO, family_of


def _check_family(schedule, family: str, allow_other_model: bool) -> None:
    """A preset (by name, or a schedule that records its model) made for one model family run
    on another: refused unless asked for. ``family``: a backend family name
    (:data:`ralu_torch.backends.families.FAMILIES`)."""
    from .backends.families import BY_NAME

    if allow_other_model:
        return
    if isinstance(schedule, str) and schedule in PRESETS:
        name, model = schedule, PRESETS[schedule].model
    elif isinstance(schedule, Schedule) and isinstance(schedule.info.get("model"), str):
        name, model = schedule.info.get("preset", "this schedule"), schedule.info["model"]
    else:
        return
    if model not in MODEL_INFO or family_of(model) != family:
        mine = sorted(n for n, p in PRESETS.items() if family_of(p.model) == family)
        raise ValueError(f"preset {name!r} was made for {model}, but this is a {BY_NAME[family].display} pipeline; "
                         f"use one of {', '.join(mine)} (or pass allow_other_model=True / --force to run it anyway)")


def _parse_schedule(schedule, parameters):
    """(fixed schedule, None) or (None, layout solved at call time)."""
    if isinstance(schedule, Schedule):
        return schedule, None
    if isinstance(schedule, Layout):
        return None, schedule
    if isinstance(schedule, dict):
        return Schedule.from_dict(schedule), None
    if isinstance(schedule, (str, os.PathLike)):
        name = str(schedule)
        if os.path.isfile(name):
            return Schedule.load(name), None
        if os.path.isdir(name):
            raise ValueError(f"schedule {brief(name)} is a directory, not a JSON schedule file")
        if name.endswith(".json") or os.sep in name or isinstance(schedule, os.PathLike):
            raise ValueError(f"schedule file {brief(name)} does not exist")
        p = get_preset(name)  # raises: unknown preset, with the known names
        if parameters == "optimised":
            return None, p.layout
        return preset(name, parameters), None
    raise ValueError("schedule must be a preset name, a Schedule, a Layout, a JSON dict or a path to a JSON file, "
                     f"got {type(schedule).__name__}")
