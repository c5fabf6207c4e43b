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
``ValueError`` naming the configuration and what is allowed.
"""

from __future__ import annotations

import hashlib
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
MAX_STEPS = 10_000
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
            return FirstBlockCacheConfig(threshold=p.get("threshold", 0.05))
        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=p.get("skip", 2),
                                               current_timestep_callback=current_timestep)

    def text(self) -> str:
        if not self.params:
            return self.name
        if self.name in ("fbcache", "pab"):
            return f"{self.name}:{self.params[0][1]:g}"
        return f"{self.name}:" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params)


@dataclass(frozen=True)
class Config:
    """One parsed configuration (see the module docstring). ``label`` is what the user wrote;
    ``text`` the canonical form (modifiers in a fixed order), which decides identity."""

    label: str
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


def _cache(name: str, arg: str, where: str) -> Cache:
    if name == "taylorseer":
        items = [i for i in arg.split(",") if i] if arg else []
        lite = [i for i in items if i.partition("=")[0] == "lite"]
        rest = [i for i in items if i.partition("=")[0] != "lite"]
        params = {}
        for item in lite:
            value = item.partition("=")[2]
            if value not in ("0", "1"):
                raise ValueError(f"{where}: taylorseer option lite takes 0 or 1, got {value!r}")
            params["lite"] = int(value)
        try:
            policy = parse_cache("taylorseer:" + ",".join(rest))
        except ValueError as err:
            raise ValueError(f"{where}: {err} (or lite=0|1)") from None
        given = {i.partition("=")[0] for i in rest}
        for key in sorted(given):
            params[key] = getattr(policy, key)
        return Cache("taylorseer", tuple(sorted(params.items())))
    key, kind, check = {"fbcache": ("threshold", float, lambda v: 0 <= v <= 1),
                        "pab": ("skip", int, lambda v: v >= 1)}[name]
    if not arg:
        return Cache(name)
    value = arg.partition("=")[2] if arg.startswith(f"{key}=") else arg
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not check(number):
        what = "a threshold in [0, 1]" if name == "fbcache" else "an integer skip range >= 1"
        raise ValueError(f"{where}: {name} takes {what} ({name}:VALUE), got {value!r}")
    return Cache(name, ((key, number),))


def parse_config(text: str) -> Config:
    """One configuration string -> :class:`Config`; a fault is one ``ValueError``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"an empty configuration; {grammar()}")
    where = f"configuration {brief(text)}"
    base, *mods = text.split("+")
    kind = steps = schedule = None
    if base.startswith("baseline"):
        _, colon, n = base.partition(":")
        if not colon or not n.isdigit() or not 1 <= int(n) <= MAX_STEPS:
            raise ValueError(f"{where}: a baseline is baseline:STEPS with 1 <= STEPS <= {MAX_STEPS} (e.g. baseline:50)")
        kind, steps = "baseline", int(n)
    elif base == "exact":
        kind = "exact"
    elif base in PRESETS:
        kind, schedule = "preset", base
    elif base.endswith(".json") or os.sep in base:
        if not os.path.isfile(base):
            raise ValueError(f"{where}: schedule file {brief(base)} does not exist")
        kind, schedule = "file", base
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
    opts = tuple(sorted(options.items()))
    canonical = "+".join([base] + ([cache.text()] if cache else []) + ([solver] if solver else [])
                         + [f"{k.replace('_', '-')}:{v}" for k, v in opts]
                         + ([f"ablation:{ablation}"] if ablation else []))
    return Config(label=text, kind=kind, steps=steps, schedule=schedule, cache=cache, solver=solver, options=opts,
                  ablation=ablation, text=canonical)


def parse_configs(texts) -> list[Config]:
    """Several configurations; the same configuration twice is refused."""
    out, seen = [], {}
    for t in texts:
        c = parse_config(t)
        if c.text in seen:
            raise ValueError(f"configuration {brief(t)} is the same as {brief(seen[c.text])}; give each once")
        seen[c.text] = t
        out.append(c)
    if not out:
        raise ValueError(f"no configurations given; {grammar()}")
    return out
