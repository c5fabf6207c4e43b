"""``ralu eval --model analytic``: the evaluation on exact Gaussian data, with nothing downloaded.

The configurations run through :func:`ralu_torch.sampler.sample` on
:class:`~ralu_torch.backends.gaussian.GaussianBackend` (the same sampler as FLUX and SD3),
whose data distribution is known exactly, so the "metrics" are distances to the truth
(:mod:`ralu_torch.analysis.quality`): on the stationary field ``gaussian`` the spectral
Frechet distance, band-wise power errors and the variance; on the texture-patch mixture
``texture`` also the detail energy inside and outside the textured region and the share of
upsampled tokens that land in it. A row is one batch of ``n`` seeds (seed ``s + i`` for image
``i``), as ``bench/quality.py`` runs it (it calls :func:`run_rows`).

TFLOPs are the cost model's for FLUX.1-dev at 1024x1024 (paper convention). The table has no
time columns: the analytic velocity costs the same at every token count (a mixed stage
computes the full-resolution velocity), so the analytic sampler's wall time says nothing about
a model's. 95% intervals are BCa bootstraps over the seeds (scipy.stats.bootstrap).
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ralu_schedule import Layout, Schedule, get_preset, preset, solve
from ralu_schedule.cost import layout_cost
from ralu_schedule.layout import DEFAULT_BASE_SHIFT

from ..analysis import quality as q
from ..backends.gaussian import GaussianBackend, GaussianField, TexturePatchField
from .configs import DATA, Config
EXACT_SEED = 10_000          # the exact rows draw the data from seed EXACT_SEED + --seed
TRUTH_SEED, TRUTH_DRAWS = 20_000, 1024     # the texture field's reference detail energies

#: Metric columns per data set: (key, header, format).
COLUMNS = {
    "gaussian": [("fd", "FD x1e3", "{:.2f}")] + [(f"band{k}", f"{lo:g}-{hi:g}", "{:+.3f}")
                                                  for k, (lo, hi) in enumerate(q.BANDS)] + [("var", "var", "{:.3f}")],
    "texture": [("fd", "FD x1e3", "{:.2f}"), ("texture", "texture detail", "{:+.3f}"),
                ("background", "background detail", "{:+.3f}"), ("var", "var", "{:.3f}"),
                ("selected", "selected in texture", "{:.3f}")],
}


def field_for(data: str, size: int = 64, exponent: float = 2.0, texture_size: int = 32):
    """The data set ``data``: the stationary field of side ``size`` or the texture-patch
    mixture of side ``texture_size`` (four candidate regions of side 3n/8, one per quadrant)."""
    if data == "gaussian":
        return GaussianField(height=size, width=size, exponent=exponent)
    if data != "texture":
        raise ValueError(f"data must be one of {', '.join(DATA)}, got {data!r}")
    n = texture_size
    if n % 8 or n < 16:
        raise ValueError(f"the texture field's side must be a multiple of 8 and >= 16, got {n}")
    a, b = n // 8, n // 2
    return TexturePatchField(height=n, width=n, region=3 * n // 8, positions=((a, a), (a, b), (b, a), (b, b)),
                             k0=1.0 / n)


def _preset_schedule(name: str, parameters: str, base_shift: float) -> Schedule:
    """A preset's schedule on the benchmark, whose base shift is ``h0 = base_shift``: the
    authors' parameters where they exist, else (and for ``optimised``) solved at that ``h0``,
    as RALU solves a preset at its model's own shift."""
    p = get_preset(name)
    if parameters == "authors":
        return preset(name, "authors")
    if parameters == "optimised" or not p.has_authors_parameters:
        return solve(p.layout.with_base_shift(base_shift))
    return preset(name)


ABLATE = {"naive-upsampling": q.without_reinjection, "uncorrelated-noise": q.uncorrelated_noise,
          "unmatched-timesteps": q.unmatched_timesteps, "no-mixed-stage": q.without_mixed_stage}


def resolve(config: Config, base_shift: float = DEFAULT_BASE_SHIFT):
    """``(schedule or plan, sampler options, cache policy)`` of ``config`` on the benchmark;
    ``(None, {}, None)`` for ``exact``."""
    if config.kind == "exact":
        return None, {}, None
    opts = config.ralu_options
    if config.kind == "baseline":
        sched = solve(Layout(steps=(config.steps,), ends=(1.0,), base_shift=base_shift))
    elif config.kind == "preset":
        sched = _preset_schedule(config.schedule, opts.pop("parameters", "default"), base_shift)
    else:
        if "parameters" in opts:
            raise ValueError(f"configuration {config.label!r}: parameters applies to presets, not schedule files")
        sched = Schedule.load(config.schedule)
    if config.ablation is not None:
        sched = ABLATE[config.ablation](sched)
    if config.solver is not None:
        opts["solver"] = solver_schedulers()[config.solver]
    policy = None
    if config.cache is not None:
        policy = config.cache.policy
        if policy is None:
            raise ValueError(f"configuration {config.label!r}: the analytic backend models TaylorSeer only "
                             f"(ralu_torch.analysis.quality.TaylorVelocity), not {config.cache.name}")
    return sched, opts, policy


def solver_schedulers() -> dict:
    """Cost-model solver name -> the diffusers scheduler RALU steps with (None: built-in Euler)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler

    flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
    return {"euler": None, "heun": FlowMatchHeunDiscreteScheduler(),
            "dpm-multistep": DPMSolverMultistepScheduler(**flow), "unipc": UniPCMultistepScheduler(**flow)}


def tflops(config: Config, sched) -> float | None:
    """Cost-model TFLOPs of ``config`` on FLUX.1-dev at 1024x1024 (paper convention)."""
    if sched is None:
        return None
    layout = sched.layout
    policy = config.cache.policy if config.cache is not None else None
    return layout_cost(layout, "flux-dev", (1024, 1024), solver=config.solver or "euler", cache=policy).tflops


@dataclass
class Row:
    """One configuration's run: its samples ``(n, C, H, W)``, the sampler's result (``None`` for
    the exact data), the metric values and the cost model's TFLOPs."""

    config: Config
    samples: torch.Tensor
    result: object
    metrics: dict
    tflops: float | None
    model_calls: int | None = None
    schedule: object = None


def _backend(field, policy):
    be = GaussianBackend(field)
    return q.TaylorVelocity(be, policy) if policy is not None else be


def texture_truth(field) -> dict:
    """The texture field's reference detail energies, from :data:`TRUTH_DRAWS` exact draws
    (the same for a field every time: computed once per field and process)."""
    return dict(_texture_truth(field))


@functools.lru_cache(maxsize=8)
def _texture_truth(field) -> dict:
    return q.region_metrics(field.sample(TRUTH_DRAWS, torch.Generator().manual_seed(TRUTH_SEED)), field)


def metrics_of(data: str, samples, result, field, truth=None) -> dict:
    """The point values of ``data``'s metrics (FD x1e3; see :data:`COLUMNS`)."""
    m = q.spectrum_metrics(samples, field)
    out = {"fd": 1e3 * m["fd"], "var": m["var"]}
    if data == "gaussian":
        out.update({f"band{k}": v for k, v in enumerate(m["bands"])})
        return out
    r = q.region_metrics(samples, field)
    out["texture"] = torch.log10(torch.tensor(r["texture"] / truth["texture"])).item()
    out["background"] = torch.log10(torch.tensor(r["background"] / truth["background"])).item()
    out["selected"] = q.selection_hit_rate(result, samples, field) if result is not None else None
    return out


def run_rows(configs, data: str = "gaussian", n: int = 128, seed: int = 0, size: int = 64, exponent: float = 2.0,
             texture_size: int = 32, say=None, truth=None):
    """Yield a :class:`Row` per configuration, run one after another in this process on the
    same seeds (one batch of ``n``, seed ``seed + i`` for sample ``i``). ``truth``: the texture
    field's :func:`texture_truth`, when the caller has it already."""
    field = field_for(data, size, exponent, texture_size)
    if data == "texture" and truth is None:
        truth = texture_truth(field)
    resolved = [resolve(c) for c in configs]              # every configuration checked before the first runs
    for config, (sched, opts, policy) in zip(configs, resolved):
        if say is not None:
            say(f"{data}: {config.label}")
        if sched is None:
            x = field.sample(n, torch.Generator().manual_seed(EXACT_SEED + seed))
            yield Row(config, x, None, metrics_of(data, x, None, field, truth), None)
            continue
        be = _backend(field, policy)
        x, res = q.run(be, sched, n, seed=seed, **opts)
        calls = be.full if policy is not None else None
        yield Row(config, x, res, metrics_of(data, x, res, field, truth), tflops(config, sched),
                  model_calls=calls, schedule=sched)


# -- 95% intervals over the seeds ----------------------------------------------------------------

def _features(data, samples, result, field, truth):
    """Per-sample quantities whose means give the metrics (for the bootstrap)."""
    x = samples.to(torch.float64)
    H, W = x.shape[-2:]
    feats = {"power": (torch.fft.fft2(x).abs() ** 2 / (H * W)).mean(dim=1).numpy(),
             "s1": x.sum(dim=(1, 2, 3)).numpy(), "s2": (x ** 2).sum(dim=(1, 2, 3)).numpy(),
             "count": x[0].numel()}
    if data == "texture":
        d2 = (q.detail(x) ** 2).mean(dim=1)
        masks = field.masks()
        per_region = torch.einsum("nhw,khw->nk", d2, masks) / masks.sum(dim=(1, 2))
        outside = (masks.sum(dim=0) == 0).to(torch.float64)
        feats["texture"] = per_region.max(dim=1).values.numpy()
        feats["background"] = ((d2 * outside).sum(dim=(1, 2)) / outside.sum()).numpy()
    return feats


def _statistic(data, feats, fixed, truth, idx) -> np.ndarray:
    lam, bands = fixed
    H, W = lam.shape
    P = feats["power"][idx].mean(axis=0)
    fd = 1e3 * ((np.sqrt(P) - np.sqrt(lam)) ** 2).sum() / (H * W)
    M = len(idx) * feats["count"]
    s1, s2 = feats["s1"][idx].sum(), feats["s2"][idx].sum()
    var = (s2 - s1 * s1 / M) / (M - 1)
    if data == "gaussian":
        ratio = np.log10(P / lam)
        return np.array([fd, *(ratio[b].mean() for b in bands), var])
    tex = np.log10(feats["texture"][idx].mean() / truth["texture"])
    bg = np.log10(feats["background"][idx].mean() / truth["background"])
    return np.array([fd, tex, bg, var])


def intervals(data: str, row: Row, field, truth=None, resamples: int = 1000) -> dict:
    """95% bootstrap intervals (bias-corrected and accelerated, scipy.stats.bootstrap) over the
    seeds of every metric of ``row`` but the selection share: ``{key: (low, high)}``. FD from
    finite samples is biased upwards, which BCa corrects for and a percentile interval would not."""
    from scipy.stats import bootstrap

    feats = _features(data, row.samples, row.result, field, truth)
    lam = field.spectrum(1).numpy()
    H, W = lam.shape
    kr = np.sqrt(np.fft.fftfreq(H)[:, None] ** 2 + np.fft.fftfreq(W)[None, :] ** 2)
    fixed = (lam, [(kr >= lo) & (kr < hi) for lo, hi in q.BANDS])
    n = len(row.samples)
    keys = [k for k, _, _ in COLUMNS[data] if k != "selected"]

    def stat(idx):
        return _statistic(data, feats, fixed, truth, idx.astype(int))

    seeded = {"rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state":  # scipy < 1.15
              np.random.default_rng(0)}
    with warnings.catch_warnings():     # few seeds can make BCa degenerate: its interval is NaN, shown as none
        warnings.simplefilter("ignore")
        res = bootstrap((np.arange(n),), stat, vectorized=False, n_resamples=resamples, method="BCa",
                        confidence_level=0.95, **seeded)
    lo, hi = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    return {k: (float(a), float(b)) for k, a, b in zip(keys, lo, hi)}


# -- ralu eval --model analytic ------------------------------------------------------------------

def default_configs() -> list[str]:
    """The configurations ``ralu eval --model analytic`` runs without ``--configs``: the data,
    FLUX.1-dev's 50 steps (the reference), the FLUX presets, each after a full-resolution
    baseline with its FLOPs, and RALU stacked with TaylorSeer."""
    return ["baseline:50", "exact", f"baseline:{q.flop_matched_steps('flux-dev-7x')}", "flux-dev-7x",
            f"baseline:{q.flop_matched_steps('flux-dev-4x')}", "flux-dev-4x", "flux-dev-10x",
            "flux-dev-7x+taylorseer:interval=3,warmup=2"]


#: The analytic backend's ranges: ``--exponent`` within +-4 (the field's spectrum then spans at
#: most 4.2e6, within what the sampler's float32 resolves; beyond, rounding fills the high
#: bands and their errors say nothing), ``--texture-size`` up to 64 (its dense covariances are
#: ``(side^2)^2`` values per region), and seeds x side^2 at most 2^24 values per data set (32
#: times the default's; the sampler holds several complex copies of them).
EXPONENT_LIMIT, TEXTURE_LIMIT, MAX_VALUES = 4.0, 64, 1 << 24


def check_analytic(args, configs):
    """Everything ``ralu eval --model analytic`` reads, checked before anything runs (a fault is
    one :class:`UsageError`): ``(configurations, seeds, side, {data: field})``."""
    from ralu_schedule._errors import UsageError, check_finite

    from .configs import parse_configs

    if configs is None:
        configs = parse_configs(default_configs(), analytic=True)
    seeds = args.num_images if args.num_images is not None else 128
    size = args.height if args.height is not None else 64
    if args.width is not None and args.width != size:
        raise UsageError(f"--model analytic runs square fields: give --height only (got {args.height}x{args.width})")
    for flag, given, data in (("--height", args.height is not None, "gaussian"),
                              ("--exponent", args.exponent != 2.0, "gaussian"),
                              ("--texture-size", args.texture_size != 32, "texture")):
        if given and data not in args.data:
            raise UsageError(f"{flag} is the {data} data set's and --data is {' '.join(args.data)}; leave it out")
    if seeds < 2:
        raise UsageError(f"--num-images (seeds of the analytic backend) must be >= 2, got {seeds}")
    if size < 16 or size % 4:
        raise UsageError(f"--height (the field's side) must be a multiple of 4 and >= 16, got {size}")
    exponent = check_finite("--exponent", args.exponent)
    if abs(exponent) > EXPONENT_LIMIT:
        raise UsageError(f"--exponent must lie in [-{EXPONENT_LIMIT:g}, {EXPONENT_LIMIT:g}] (beyond, the spectrum spans "
                         f"more than the sampler's float32 resolves), got {exponent:g}")
    if not 16 <= args.texture_size <= TEXTURE_LIMIT or args.texture_size % 8:
        raise UsageError(f"--texture-size must be a multiple of 8 from 16 to {TEXTURE_LIMIT}, got {args.texture_size}")
    for data in args.data:
        side = size if data == "gaussian" else args.texture_size
        if seeds * side * side > MAX_VALUES:
            flag = "--height" if data == "gaussian" else "--texture-size"
            raise UsageError(f"--num-images x {flag}^2 must be at most 2^24 ({MAX_VALUES}) values per data set, got "
                             f"{seeds} x {side}^2")
    if not any(c.kind != "exact" for c in configs):
        raise UsageError("--model analytic needs a configuration besides exact (the first is the reference)")
    for c in configs:
        resolve(c)                                   # a bad configuration fails before anything runs
    fields = {data: field_for(data, size, exponent, args.texture_size) for data in args.data}
    return configs, seeds, size, fields


def evaluate_analytic(args, configs, say=print):
    """``ralu eval --model analytic``: a table per data set in ``DIR/eval.md``, every row in
    ``DIR/eval.csv``, and ``DIR/eval.png`` (FD against the speed-up in TFLOPs). A folder that
    holds this recipe's results, as ralu eval wrote them, is left as it is (:mod:`~.results`)."""
    from pathlib import Path

    from . import report
    from .results import RECORD, Folder

    configs, seeds, size, fields = check_analytic(args, configs)
    recipe = {"model": "analytic", "configurations": [c.text for c in configs], "data": list(args.data),
              "num_images": seeds, "seed": args.seed,
              **({"height": size, "exponent": args.exponent} if "gaussian" in args.data else {}),
              **({"texture_size": args.texture_size} if "texture" in args.data else {})}
    folder = Folder(Path(args.out_dir), recipe, ("eval.md", "eval.csv", "eval.png"), args.overwrite)
    if folder.resumed and {"eval.md", "eval.csv"} <= set(folder.files):
        say(f"nothing to do: {folder.out} holds these results already ({', '.join(sorted(folder.files))}, as ralu eval "
            "wrote them); pass --overwrite to compute them again")
        return folder.out
    ref = next(c for c in configs if c.kind != "exact")
    csv_rows, text, points, panels = [], [], {}, []
    for data, field in fields.items():
        truth = texture_truth(field) if data == "texture" else None
        rows = list(run_rows(configs, data, seeds, args.seed, size, args.exponent, args.texture_size, say=say,
                             truth=truth))
        base = next(r for r in rows if r.config is ref)
        cols = COLUMNS[data]
        header = ["configuration", "TFLOPs", "speed-up (TFLOPs)"] + [h for _, h, _ in cols]
        table = []
        for r in rows:
            ci = intervals(data, r, field, truth)
            rec = {"data": data, "configuration": r.config.text, "seeds": seeds,
                   "tflops": r.tflops, "speedup_tflops": base.tflops / r.tflops if r.tflops else None}
            cells = [r.config.text, "" if r.tflops is None else f"{r.tflops:.1f}",
                     report.speedup(base.tflops, r.tflops)]
            for key, _, fmt in cols:
                v = r.metrics.get(key)
                lo, hi = ci.get(key, (math.nan, math.nan))
                rec.update({key: v, f"{key}_low": lo if key in ci else None, f"{key}_high": hi if key in ci else None})
                cells.append(report.cell(v, lo, hi, fmt) if v is not None else "")
            csv_rows.append(rec)
            table.append(cells)
            points.setdefault(r.config.text, {"label": r.config.text, "speedup": rec["speedup_tflops"]})
            points[r.config.text][f"{data}:fd"] = (r.metrics["fd"], *ci["fd"])
        title = (f"Gaussian field {size}x{size}, spectrum ~ |k|^-{args.exponent:g}" if data == "gaussian" else
                 f"texture-patch field {args.texture_size}x{args.texture_size}")
        md = report.markdown(header, table)
        text += [f"## {data}: {title}, {seeds} seeds", "", md, ""]
        panels.append((f"{data}:fd", f"{data} FD x1e3", False))
        say("")
        say(f"{data}: {title}, {seeds} seeds; reference {ref.text}")
        say("")
        say(md)
    head = ["# ralu eval: analytic backend", "", "```", report.command_line(args), "```", "",
            f"Exact Gaussian data, {seeds} seeds per row (seed {args.seed} + i), h0 = 3; reference: {ref.text}. "
            "TFLOPs: the cost model's, FLUX.1-dev at 1024x1024 (paper convention); no times (the analytic velocity costs "
            "the same at every token count, so they would say nothing about a model). Metrics: FD x1e3 "
            "(lower is better), log10 power or detail ratios to the truth (0 is right), variance (the data: 1 on the "
            "stationary field); [95% BCa bootstrap interval over the seeds].", ""]
    with folder.writing():                           # the folder is made now, with everything computed
        report.write_csv(folder.stage("eval.csv"), csv_rows)
        plotted = report.plot(folder.stage("eval.png"), [p for p in points.values() if p["speedup"] is not None],
                              panels, "analytic backend: FD against speed-up (FLUX.1-dev 1024x1024 cost model)")
        if plotted:
            text.append("![FD against speed-up](eval.png)")
        folder.stage("eval.md").write_text("\n".join(head + text) + "\n", encoding="utf-8")
        wrote = folder.commit()
        folder.finish()
    say("")
    say(f"no contact sheet: the analytic backend has no prompts; wrote {', '.join(map(str, wrote))}; what was "
        f"written is recorded in {folder.out / RECORD}")
    return folder.out
