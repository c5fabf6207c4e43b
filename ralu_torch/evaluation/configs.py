"""What ``ralu eval --configs`` accepts, parsed strictly and without torch.

A configuration is a base, optionally followed by ``+MODIFIER`` items::

    baseline:50                         the model's full-resolution sampler with 50 steps
    flux-dev-7x                         a preset (ralu-schedule preset --list)
    my_schedule.json                    a schedule file (ralu-schedule ... --json)
    exact                               the data themselves (the analytic backend only)

    flux-dev-7x+taylorseer:interval=3,warmup=2     a cache (one at most)
    flux-dev-7x+fbcache:0.08
    flux-dev-7x+heun                               a solver (one at most)
    flux-dev-4x+parameters:optimised+upsample:token  RALU's options
    flux-dev-7x+ablation:naive-upsampling          an ablation (the analytic backend only)

Caches take the diffusers configuration they stand for (``TaylorSeerCacheConfig``,
``FirstBlockCacheConfig``, ``PyramidAttentionBroadcastConfig``); TaylorSeer's options are
``ralu-schedule cost --cache``'s (:func:`ralu_schedule.caching.parse_cache`) plus ``lite``.
Solvers are the cost model's names (:data:`ralu_schedule.export.SOLVERS`). Every fault is one
``ValueError`` naming the configuration and what is allowed: numbers are ASCII decimals (no
``nan``, ``inf``, ``1_0`` or other scripts' digits), integers at most :data:`MAX_STEPS`, and an
option given twice is refused rather than the last one winning.

Each configuration has one canonical form (:attr:`Config.text`): modifiers in a fixed order,
numbers as Python writes them (``baseline:04`` is ``baseline:4``, ``fbcache:0.050`` is
``fbcache:0.05``), a schedule file's path resolved, and every option given at its default left
out (``+upsample:latent``, ``+parameters:default``, ``+fbcache:0.05``, ``+taylorseer:interval=5``).
It names the configuration in ``ralu eval``'s tables, CSV files and image folders, and two
configurations with the same canonical form are one configuration.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field

from ralu_schedule import PRESETS
from ralu_schedule._errors import brief
from ralu_schedule.caching import TaylorSeerPolicy, parse_cache
from ralu_schedule.export import SOLVERS
from ralu_schedule.presets import PARAMETERS

from ..options import KEPT_NOISE, SELECTIONS, UPSAMPLE_MODES

CACHES = ("taylorseer", "fbcache", "pab")
#: Option modifiers: name -> (RALU keyword, allowed values).
OPTIONS = {"upsample": ("upsample", UPSAMPLE_MODES), "kept-noise": ("kept_noise", KEPT_NOISE),
           "parameters": ("parameters", PARAMETERS), "select": ("select", SELECTIONS)}
#: Ablations of RALU's parts (``ralu_torch.analysis.quality``), on the analytic backend.
ABLATIONS = ("naive-upsampling", "uncorrelated-noise", "unmatched-timesteps", "no-mixed-stage")
#: The largest integer a configuration takes (steps, a cache's interval, warm-up, order, skip range).
MAX_STEPS = 10_000
#: Cache defaults: diffusers' ``FirstBlockCacheConfig`` threshold and PAB skip range we pass when
#: none is given, and TaylorSeer's (:class:`~ralu_schedule.caching.TaylorSeerPolicy`, ``lite=0``).
FBCACHE_THRESHOLD, PAB_SKIP = 0.05, 2
TAYLORSEER_DEFAULTS = {**{f: getattr(TaylorSeerPolicy(), f) for f in TaylorSeerPolicy.__dataclass_fields__}, "lite": 0}
_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: ``ralu eval``'s metrics (:mod:`ralu_torch.evaluation.metrics`), in table order, and where their
#: CLIP models come from by default: named here, free of torch, for the command line.
METRICS = ("psnr", "ssim", "lpips", "clip-score", "clip-iqa", "image-reward", "niqe")
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_CLIP_IQA = "clip_iqa"
#: The analytic backend's data sets (:mod:`ralu_torch.evaluation.analytic`).
DATA = ("gaussian", "texture")


def grammar() -> str:
    """The one-line summary of what a configuration may be, for error messages."""
    return ("a configuration is baseline:STEPS, a preset (" + ", ".join(sorted(PRESETS)) + "), a schedule file "
            "(*.json) or exact (analytic only), then optionally +MODIFIER: a cache (taylorseer[:interval=N,"
            "warmup=N,cooldown=N,order=N,lite=0|1], fbcache[:THRESHOLD], pab[:SKIP]), a solver ("
            + ", ".join(SOLVERS) + "), an option (" + ", ".join(f"{k}:{'|'.join(v)}" for k, (_, v) in OPTIONS.items())
            + ") or an ablation (ablation:" + "|".join(ABLATIONS) + ", analytic only)")


@dataclass(frozen=True)
class Cache:
    """A cache modifier: ``name`` and its parameters as sorted ``(key, value)`` pairs."""

    name: str
    params: tuple = ()

    @property
    def policy(self) -> TaylorSeerPolicy | None:
        """The cost model's fixed pattern (TaylorSeer only; the others depend on the data)."""
        if self.name != "taylorseer":
            return None
        return TaylorSeerPolicy(**{k: v for k, v in self.params if k != "lite"})

    def diffusers_config(self, current_timestep=None):
        """The diffusers cache configuration this modifier stands for."""
        from diffusers.hooks import FirstBlockCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig

        p = dict(self.params)
        if self.name == "taylorseer":
            pol = self.policy
            return TaylorSeerCacheConfig(cache_interval=pol.interval, disable_cache_before_step=pol.warmup,
                                         disable_cache_after_step=pol.cooldown, max_order=pol.order,
                                         use_lite_mode=bool(p.get("lite", 0)))
        if self.name == "fbcache":
            return FirstBlockCacheConfig(threshold=p.get("threshold", FBCACHE_THRESHOLD))
        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=p.get("skip", PAB_SKIP),
                                               current_timestep_callback=current_timestep)

    def text(self) -> str:
        """The canonical form: only the options that differ from their defaults, each number as
        Python writes it (``repr``: the shortest text that reads back as the same value)."""
        if not self.params:
            return self.name
        if self.name in ("fbcache", "pab"):
            return f"{self.name}:{self.params[0][1]!r}"
        return f"{self.name}:" + ",".join(f"{k}={v!r}" for k, v in self.params)


@dataclass(frozen=True)
class Config:
    """One parsed configuration (see the module docstring). ``label`` is what the user wrote;
    ``text`` the canonical form, which decides identity and names the configuration in every
    table (two configurations are equal when their canonical forms are)."""

    label: str = field(compare=False)
    kind: str                            # "baseline", "preset", "file" or "exact"
    steps: int | None = None             # baseline steps
    schedule: str | None = None          # preset name or schedule file
    cache: Cache | None = None
    solver: str | None = None
    options: tuple = ()                  # sorted (RALU keyword, value) pairs
    ablation: str | None = None
    text: str = field(default="", compare=False)

    @property
    def ralu_options(self) -> dict:
        return dict(self.options)

    @property
    def slug(self) -> str:
        """A directory name for this configuration's images: readable, and unique by a digest
        of the canonical text."""
        readable = re.sub(r"[^A-Za-z0-9._=-]+", "_", self.text)[:60].strip("_") or "config"
        return f"{readable}-{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"


def _number(text, kind):
    """``text`` as an ``int`` or a finite ``float`` written in ASCII decimal, else ``None``
    (``int`` and ``float`` would also take ``nan``, ``inf``, ``1_0``, spaces and other scripts'
    digits, which would give one configuration several spellings or a non-finite value)."""
    if not isinstance(text, str) or not (_INT if kind is int else _FLOAT).fullmatch(text):
        return None
    value = kind(text.lstrip("0") or "0") if kind is int else float(text) + 0.0     # -0.0 is 0.0
    return value if kind is int or math.isfinite(value) else None


def _options(name: str, arg: str, where: str, bare: str | None = None) -> dict:
    """A cache's ``key=value,...`` options (empty items skipped, as ``ralu-schedule cost
    --cache`` reads them); a bare value is option ``bare``'s. A key given twice is refused:
    the last would silently win."""
    out = {}
    for item in filter(None, arg.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            if bare is None:
                raise ValueError(f"{where}: {name} options are key=value, got {item!r}")
            key, value = bare, item
        if key in out:
            raise ValueError(f"{where}: {name} option {key} given twice ({brief(arg)}); give each once")
        out[key] = value
    return out


def _cache(name: str, arg: str, where: str) -> Cache:
    if name == "taylorseer":
        given = _options(name, arg, where)
        params = {}
        for key, value in given.items():
            if key not in TAYLORSEER_DEFAULTS:
                continue                                   # parse_cache names what is allowed
            if key == "lite":
                if value not in ("0", "1"):
                    raise ValueError(f"{where}: taylorseer option lite takes 0 or 1, got {value!r}")
            elif not (key == "cooldown" and value == "none") and \
                    _number(value, float if key == "predicted_cost" else int) is None:
                raise ValueError(f"{where}: taylorseer option {key} needs a decimal number, got {value!r}")
        try:
            policy = parse_cache("taylorseer:" + ",".join(f"{k}={v}" for k, v in given.items() if k != "lite"))
        except ValueError as err:
            raise ValueError(f"{where}: {err} (or lite=0|1)") from None
        for key, default in TAYLORSEER_DEFAULTS.items():
            value = int(given.get("lite", "0")) if key == "lite" else getattr(policy, key)
            if isinstance(value, int) and value > MAX_STEPS:
                raise ValueError(f"{where}: taylorseer option {key} must be at most {MAX_STEPS}, got {value}")
            if value != default:
                params[key] = value
        return Cache("taylorseer", tuple(sorted(params.items())))
    key, kind, default, low, high, what = {
        "fbcache": ("threshold", float, FBCACHE_THRESHOLD, 0, 1, "a threshold in [0, 1]"),
        "pab": ("skip", int, PAB_SKIP, 1, MAX_STEPS, f"an integer skip range from 1 to {MAX_STEPS}")}[name]
    given = _options(name, arg, where, bare=key)
    if set(given) - {key}:
        raise ValueError(f"{where}: {name} takes {what} ({name}:VALUE or {name}:{key}=VALUE), got {arg!r}")
    if not given:
        return Cache(name)
    number = _number(given[key], kind)
    if number is None or not low <= number <= high:
        raise ValueError(f"{where}: {name} takes {what} ({name}:VALUE), got {given[key]!r}")
    return Cache(name) if number == default else Cache(name, ((key, number),))


def _schedule_file(base: str, where: str) -> str:
    """A schedule file's canonical name: its real path, relative to the working directory when
    it lies below it (``./s.json``, ``a/../s.json`` and ``$PWD/s.json`` are one file)."""
    if not os.path.isfile(base):
        raise ValueError(f"{where}: schedule file {brief(base)} does not exist")
    real = os.path.realpath(base)
    try:
        rel = os.path.relpath(real)
    except ValueError:                                     # another drive (Windows)
        return real
    return real if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def parse_config(text: str) -> Config:
    """One configuration string -> :class:`Config`; a fault is one ``ValueError``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an empty configuration; {grammar()}")
    where = f"configuration {brief(text)}"
    base, *mods = text.split("+")
    kind = steps = schedule = None
    name, colon, n = base.partition(":")
    if name == "baseline" or (base.startswith("baseline") and base not in PRESETS):
        steps = _number(n, int) if name == "baseline" and colon else None
        if steps is None or not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"{where}: a baseline is baseline:STEPS with 1 <= STEPS <= {MAX_STEPS} (e.g. baseline:50)")
        kind, base = "baseline", f"baseline:{steps}"
    elif base == "exact":
        kind = "exact"
    elif base in PRESETS:
        kind, schedule = "preset", base
    elif base.endswith(".json") or os.sep in base:
        kind, schedule = "file", _schedule_file(base, where)
        base = schedule
    else:
        raise ValueError(f"{where}: {brief(base)} is not a preset, a baseline or a schedule file; {grammar()}")
    cache = solver = ablation = None
    options = {}
    for mod in mods:
        name, _, arg = mod.partition(":")
        if name in CACHES:
            if cache is not None:
                raise ValueError(f"{where}: one cache at most, got {cache.name} and {name}")
            cache = _cache(name, arg, where)
        elif name in SOLVERS:
            if arg:
                raise ValueError(f"{where}: solver {name} takes no options, got {mod!r}")
            if solver is not None:
                raise ValueError(f"{where}: one solver at most, got {solver} and {name}")
            solver = name
        elif name in OPTIONS:
            key, allowed = OPTIONS[name]
            if arg not in allowed:
                raise ValueError(f"{where}: {name} must be one of {', '.join(allowed)} ({name}:VALUE), got {arg!r}")
            if key in options:
                raise ValueError(f"{where}: {name} given twice")
            options[key] = arg
        elif name == "ablation":
            if arg not in ABLATIONS:
                raise ValueError(f"{where}: ablation must be one of {', '.join(ABLATIONS)}, got {arg!r}")
            if ablation is not None:
                raise ValueError(f"{where}: one ablation at most")
            ablation = arg
        else:
            raise ValueError(f"{where}: unknown modifier {brief(mod)}; {grammar()}")
    if kind == "exact" and mods:
        raise ValueError(f"{where}: exact (the data themselves) takes no modifiers")
    if kind == "baseline" and (options or ablation):
        named = [k.replace("_", "-") for k in sorted(options)] + (["ablation"] if ablation else [])
        raise ValueError(f"{where}: a baseline takes a cache or a solver, not RALU's {', '.join(named)}")
    if ablation is not None and (cache is not None or solver is not None):
        raise ValueError(f"{where}: an ablation runs alone (no cache or solver)")
    defaults = {key: allowed[0] for key, allowed in OPTIONS.values()}   # RALU's own defaults: left out
    opts = tuple(sorted((k, v) for k, v in options.items() if v != defaults[k]))
    canonical = "+".join([base] + ([cache.text()] if cache else []) + ([solver] if solver else [])
                         + [f"{k.replace('_', '-')}:{v}" for k, v in opts]
                         + ([f"ablation:{ablation}"] if ablation else []))
    return Config(label=text, kind=kind, steps=steps, schedule=schedule, cache=cache, solver=solver, options=opts,
                  ablation=ablation, text=canonical)


def parse_configs(texts, analytic: bool = False) -> list[Config]:
    """Several configurations; two with the same canonical form (:attr:`Config.text`) are
    refused, naming both spellings: each runs once, and the first is the reference, so which
    to keep is the user's choice. On the analytic backend (``analytic``) ``+euler`` is its
    default solver, so it is no different from no solver there."""
    out, seen = [], {}
    for t in texts:
        c = parse_config(t)
        same = c.text.replace("+euler", "") if analytic and c.solver == "euler" else c.text
        if same in seen:
            first = seen[same]
            why = (f"both are {c.text}" if first.text == c.text else
                   f"the analytic backend's solver is Euler, so both run {same}")
            raise ValueError(f"configuration {brief(t)} is the same as {brief(first.label)} ({why}); give each once")
        seen[same] = c
        out.append(c)
    if not out:
        raise ValueError(f"no configurations given; {grammar()}")
    return out
