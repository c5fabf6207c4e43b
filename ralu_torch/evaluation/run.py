"""``ralu eval``: every configuration's images on the same prompts and seeds, timed side by
side, scored, summarised.

The order of work:

1. the flags (:func:`check_flags`, one check for a model and the analytic backend), the
   configurations, the prompts, the model's family and the output folder (its earlier
   results: :class:`~ralu_torch.evaluation.results.Folder`) are checked before any weights
   load (as ``ralu generate`` checks them, with its functions);
2. the pipeline loads once; each configuration gets its RALU (a baseline is the one-stage
   layout, which equals the stock pipeline) and its cache, enabled only while it runs; only
   then is the output folder made;
3. each configuration's images go to ``DIR/images/<configuration>/`` through ``ralu
   generate``'s machinery: the same file names, seeds, recipes and manifest, batches,
   resuming (a rerun makes only what is missing), and under ``accelerate launch`` the images
   split between processes;
4. the first process times every configuration on the first image, after one untimed
   warm-up call each, in rounds (A, B, C, A, B, C, ...), and keeps the times in
   ``DIR/timing.json`` (a rerun with the same configurations reuses them);
5. it scores every image (:mod:`ralu_torch.evaluation.metrics`; paired metrics against the
   first configuration, the reference), and writes ``DIR/scores.csv`` (per image),
   ``DIR/eval.csv`` and ``DIR/eval.md`` (per configuration: speed-ups, each metric's mean
   over prompts with its 95% interval), ``DIR/eval.png`` and ``DIR/contact_sheet.png``, and
   records what it wrote in ``DIR/eval.json``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
from pathlib import Path

from ralu_schedule._errors import UsageError, brief
from ralu_schedule.export import SOLVERS
from ralu_schedule.presets import PARAMETERS

from ..jobs import MANIFEST, Entry, Plan, batches, check_writable_dir, read_lines, read_prompts
from ..options import SELECTIONS, UPSAMPLE_MODES
from . import report
from .configs import DATA, DEFAULT_CLIP, DEFAULT_CLIP_IQA, Config, parse_configs
from .metrics import INFO, NAMES, MetricModels, load_metrics, source_name
from .prompts import PROMPTS
from .results import RECORD, TIMING, Folder, read_timing

SCORES = "scores.csv"


#: Flags only one kind of run reads, with their command-line defaults (``ralu_torch.cli``): given
#: with another value to the other kind, they are refused rather than ignored.
MODEL_ONLY = {"prompts": None, "metrics": None, "batch_size": 1, "dtype": None, "device": None,
              "guidance_scale": None, "max_sequence_length": None, "clip_model": DEFAULT_CLIP,
              "clip_iqa_model": DEFAULT_CLIP_IQA, "repeats": 3, "sheet": 4, "force": False}
ANALYTIC_ONLY = {"data": list(DATA), "exponent": 2.0, "texture_size": 32}
#: What a run on a model writes into --out-dir besides its images (the analytic backend: the first three).
REPORTS = ("eval.md", "eval.csv", "eval.png", SCORES, "contact_sheet.png", TIMING)


def evaluate(args, say=print) -> Path:
    """Run ``ralu eval`` for the parsed command line ``args``; returns the output directory.
    ``args.clip_model`` / ``args.clip_iqa_model`` may be ``(model, processor)`` pairs (Python)."""
    analytic = args.model == "analytic"
    configs = parse_configs(args.configs, analytic=analytic) if args.configs else None
    check_flags(args, analytic)
    out = Path(args.out_dir)
    check_writable_dir(out, create=False)
    if analytic:
        from .analytic import evaluate_analytic

        return evaluate_analytic(args, configs, say)
    args.height = 1024 if args.height is None else args.height
    args.width = 1024 if args.width is None else args.width
    if configs is None:
        raise UsageError("--configs is required with a model (e.g. --configs baseline:50 flux-dev-7x flux-dev-4x)")
    return _evaluate_model(args, configs, out, say)


# -- before any weights -------------------------------------------------------------------------

def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_flags(args, analytic: bool) -> None:
    """The flags of both kinds of run, in one check before anything runs: the ranges ``ralu
    generate`` applies to the flags it shares (:func:`ralu_torch.generate.check_run_flags`),
    eval's own, a name given twice, and a flag the chosen kind of run would not read."""
    from ..generation.flags import check_run_flags

    for flag, values in (("--metrics", args.metrics), ("--data", args.data)):
        repeated = next((v for k, v in enumerate(values or []) if v in values[:k]), None)
        if repeated is not None:
            raise UsageError(f"{flag}: {repeated} given twice; give each once")
    unknown = [m for m in (args.metrics or []) if m not in NAMES]
    if unknown:
        raise UsageError(f"--metrics: unknown metric {unknown[0]!r}; metrics are {', '.join(NAMES)}")
    check_run_flags(args)
    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    if args.sheet < 0:
        raise UsageError(f"--sheet must be >= 0, got {args.sheet}")
    if analytic:
        if args.prompts is not None:
            raise UsageError("--model analytic has no prompts: its data are exact Gaussian fields (leave out --prompts)")
        if args.metrics is not None:
            raise UsageError("--metrics chooses image metrics; the analytic backend measures its data's own (FD, "
                             "bands, detail, variance): leave it out")
    unread, kind = (MODEL_ONLY, "a diffusers model") if analytic else (ANALYTIC_ONLY, "--model analytic")
    for key, default in unread.items():
        if getattr(args, key) != default:
            raise UsageError(f"{_flag(key)} is for {kind} only; this run would not read it (leave it out)")


def _entries(args) -> list[Entry]:
    if args.prompts is None:
        return [Entry(prompt=p, line=k + 1) for k, p in enumerate(PROMPTS)]
    entries = read_prompts(args.prompts)
    for e in entries:
        if e.schedule is not None:
            raise UsageError(f"{Path(args.prompts).name}:{e.line}: the configurations decide the schedule; remove the "
                             "line's \"schedule\"")
    return entries


def _config_args(args, config: Config):
    """``args`` as ``ralu generate`` reads them for ``config``'s images (its RALU options)."""
    a = copy.copy(args)
    opts = config.ralu_options
    a.upsample = opts.get("upsample", UPSAMPLE_MODES[0])
    a.select = opts.get("select", SELECTIONS[0])
    a.parameters = opts.get("parameters", PARAMETERS[0])
    return a


def _prepare(args, configs):
    """Everything decided from the command line and configs alone: (entries, plan, local model, family)."""
    from ..generation.flags import check_guidance_flags as _check_guidance_flags, check_sizes as _check_sizes
    from ..generation.plan import model_family as _family, schedule_entry as _schedule_entry
    from ..schedules import _check_family
    from ..sources import check_model

    for c in configs:
        if c.kind == "exact" or c.ablation is not None:
            what = "exact (the data themselves)" if c.kind == "exact" else f"ablation:{c.ablation}"
            raise UsageError(f"configuration {brief(c.label)}: {what} runs on --model analytic only")
    entries = _entries(args)
    plan = Plan(entries, args.num_images or 1, args.seed, args.height, args.width, None)
    local = check_model(args.model)
    family, _ = _family(args.model, local)
    if family is not None and family.video:
        raise UsageError(f"ralu eval scores images and {brief(args.model)} is a video model ({family.name}); time "
                         f"its clips with bench/latency.py --family {family.name} and make them with ralu generate")
    for c in configs:
        if c.kind == "baseline":
            continue
        fixed, layout, source = _schedule_entry(c.schedule, c.ralu_options.get("parameters", "default"), c.schedule)
        _check_sizes(entries, args, {None: (fixed, layout, source)})
        if family is not None:
            _check_family(fixed if fixed is not None else source, family.name, args.force)
    if family is not None:
        _check_guidance_flags(family, entries, args)
    return entries, plan, local


# -- the model's part ---------------------------------------------------------------------------

def _ralu(pipe, config: Config, force: bool):
    import diffusers

    from ralu_schedule import Layout

    from ..pipeline import RALU

    schedule = Layout(steps=(config.steps,), ends=(1.0,)) if config.kind == "baseline" else config.schedule
    solver = "scheduler"
    if config.solver == "euler":
        solver = "euler"
    elif config.solver is not None:
        solver = getattr(diffusers, SOLVERS[config.solver])
    # the options are RALU's own keywords (configs.OPTIONS); RALU's defaults stand for the rest
    return RALU(pipe, schedule, **config.ralu_options, solver=solver, allow_other_model=force)


@contextlib.contextmanager
def cache_on(pipe, config: Config):
    """``config``'s cache enabled on the transformer for the duration, removed after."""
    if config.cache is None:
        yield
        return
    from ..caches import enable_cache

    enable_cache(pipe.transformer, config.cache.diffusers_config(lambda: pipe.current_timestep))
    try:
        yield
    finally:
        pipe.transformer.disable_cache()


def recipe_of(args, configs, entries, device: str, dtype_name: str) -> dict:
    """Everything that decides a run's results on a model (:class:`~.results.Folder`'s recipe)."""
    prompts = json.dumps([[e.prompt, e.seed, e.height, e.width, e.negative_prompt] for e in entries])
    metrics = list(args.metrics or NAMES)
    return {"model": args.model, "configurations": [c.text for c in configs],
            "prompts": {"count": len(entries), "sha256": hashlib.sha256(prompts.encode()).hexdigest()},
            "num_images": args.num_images or 1, "seed": args.seed, "height": args.height, "width": args.width,
            "batch_size": args.batch_size, "device": device, "dtype": dtype_name,
            "guidance_scale": args.guidance_scale, "max_sequence_length": args.max_sequence_length,
            "metrics": metrics, "clip_model": source_name(args.clip_model) if "clip-score" in metrics else None,
            "clip_iqa_model": source_name(args.clip_iqa_model) if "clip-iqa" in metrics else None,
            "repeats": args.repeats, "sheet": args.sheet}


def _evaluate_model(args, configs, out: Path, say) -> Path:
    from ..generation.load import check_device, load_pipeline as _load
    from ..generation.plan import processes as _processes
    from ..recipe import base_recipe as _base_recipe, job_recipe as _recipe

    entries, plan, local = _prepare(args, configs)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and args.device is not None:
        raise UsageError("under accelerate launch each process takes its own device; leave out --device")
    state = _processes(world)
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = str(state.device) if state is not None else check_device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if out.is_dir():
        check_writable_dir(out / "images", flag="--out-dir's images folder", create=False)
    # every process reads the folder (the same answer on each): a conflict stops them all before loading
    folder = Folder(out, recipe_of(args, configs, entries, device, dtype_name), REPORTS, args.overwrite)

    pipe = _load(args, device, dtype_name, [], quiet=rank != 0, many=True, local=local)
    ralus = {}
    for c in configs:                          # every configuration checked (and its cache tried) before any image
        ralus[c.text] = _ralu(pipe, c, args.force)
        with cache_on(pipe, c):
            pass
    with folder.writing("images") if rank == 0 else contextlib.nullcontext():
        if state is not None:
            state.wait_for_everyone()          # the folders exist before any process writes into them
        for c in configs:
            cargs = _config_args(args, c)
            base = _base_recipe(cargs, device, dtype_name, [])
            ralu = ralus[c.text]

            def wanted(job, base=base, ralu=ralu, c=c):
                rec = _recipe(base, job, (ralu.schedule_for(job.height, job.width), None, c.text))
                return {**rec, "eval": {"configuration": c.text}}

            if rank == 0:
                say(f"{c.text}: images in {out / 'images' / c.slug}")
            with cache_on(pipe, c):
                _generate(cargs, plan, ralu, wanted, out / "images" / c.slug, state, rank, world, device, say)
        if rank != 0:
            return out
        timing, reused = _timing(args, configs, ralus, pipe, plan, device, dtype_name, folder, say)
        return _score_and_report(args, configs, plan, timing, folder, device, say, keep=(TIMING,) if reused else ())


def _generate(args, plan, ralu, wanted, out_dir: Path, state, rank, world, device, say) -> None:
    """One configuration's images: ``ralu generate``'s resume check, process split, directory
    lock, batched writing and manifest, in that order."""
    from ..generation.plan import check_agreement as _check_agreement, find_done as _done, share as _share
    from ..generation.write import write_locked as _write_locked
    from ..recipe import manifest_line as _line_from_recipe
    from ..jobs import merge_manifest

    target = lambda job: out_dir / job.file  # noqa: E731
    done, found = _done(plan, out_dir, None, target, wanted, args.overwrite)
    resumed = {target(plan[i]).name: _line_from_recipe(found[i]) for i in done}
    todo = len(plan) - len(done)
    if state is not None:
        state.wait_for_everyone()
        _check_agreement(len(plan), done)
    if todo == 0:
        if rank == 0:
            merge_manifest(out_dir, resumed)
            say(f"  nothing to do: {len(done)} image(s) already there with the same recipe")
        return
    pending = (job for job in plan if job.index not in done)
    mine = _share(pending, len(plan), rank, world) if state is not None else pending
    _, lines = _write_locked(args, plan, mine, {None: ralu}, target, wanted, out_dir, state, rank, world, True, device,
                             todo, None, resumed)
    if rank == 0:
        say(f"  wrote {todo} image(s), skipped {len(done)} already there; {lines} manifest line(s)")


def _timing(args, configs, ralus, pipe, plan, device, dtype_name, folder: Folder, say) -> tuple:
    """Seconds per call of every configuration on the first image, timed in rounds after one
    untimed warm-up call each, and whether they were reused: from ``DIR/timing.json`` when an
    earlier ralu eval wrote it (its record says so) timing the same configurations of the same
    model, device, dtype and image."""
    from ..generation.execute import run_batch as _run

    job = plan[0]
    key = {"model": args.model, "device": device, "dtype": dtype_name, "prompt": job.prompt, "seed": job.seed,
           "height": job.height, "width": job.width, "batch": 1, "repeats": args.repeats,
           "guidance_scale": args.guidance_scale, "max_sequence_length": args.max_sequence_length,
           "configurations": [c.text for c in configs]}
    path = folder.out / TIMING
    if TIMING in folder.earlier:
        kept, _ = read_timing(path, key["configurations"])
        if kept is not None and kept["key"] == json.loads(json.dumps(key)):
            say(f"timing: reusing {path} (delete it to time again)")
            return kept["seconds"], True
    cargs = {c.text: _config_args(args, c) for c in configs}
    seconds = {c.text: [] for c in configs}
    say(f"timing: {len(configs)} configuration(s) on image 0, one warm-up call each, then {args.repeats} round(s)")
    for c in configs:
        with cache_on(pipe, c):
            _run(ralus[c.text], [job], cargs[c.text], device)
    for _ in range(args.repeats):
        for c in configs:
            with cache_on(pipe, c):
                s, _ = _run(ralus[c.text], [job], cargs[c.text], device)
            seconds[c.text].append(s)
    folder.stage(TIMING).write_text(json.dumps({"key": key, "seconds": seconds}, indent=1), encoding="utf-8")
    folder.commit()                  # kept, and recorded, if scoring fails: a rerun reuses it
    return seconds, False


# -- scores and what is written ------------------------------------------------------------------

def _load_images(paths, device="cpu"):
    import numpy as np
    import torch
    from PIL import Image

    arrays = []
    for p in paths:
        with Image.open(p) as im:
            arrays.append(np.asarray(im.convert("RGB")))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def score_images(configs, plan, out: Path, metrics, say=print, chunk: int = 8) -> dict:
    """Per configuration, per image index: ``{metric: value}``, plus the PSNR against the
    reference (the first configuration) that the contact sheet ranks by, under ``"_psnr"``
    (absent without torchmetrics)."""
    from .metrics import _psnr

    try:
        psnr_fn, _ = _psnr(MetricModels(device="cpu"))
    except ImportError:
        psnr_fn = None
    ref = configs[0]
    scores = {c.text: {} for c in configs}
    for group in batches(iter(plan), chunk):
        refs = _load_images([out / "images" / ref.slug / j.file for j in group])
        prompts = [j.prompt for j in group]
        for c in configs:
            imgs = refs if c is ref else _load_images([out / "images" / c.slug / j.file for j in group])
            rows = [scores[c.text].setdefault(j.index, {}) for j in group]
            for m in metrics:
                values = m.score(imgs, refs if m.info.kind == "paired" else None, prompts)
                for r, v in zip(rows, values):
                    r[m.name] = v
            if psnr_fn is not None:
                for r, v in zip(rows, psnr_fn(imgs, refs, prompts)):
                    r["_psnr"] = float(v)
    return scores


def _score_and_report(args, configs, plan, timing: dict, folder: Folder, device: str, say, keep=()) -> Path:
    out = folder.out
    models = MetricModels(clip=args.clip_model, clip_iqa=args.clip_iqa_model, device=device)
    names = list(args.metrics or NAMES)
    metrics = load_metrics(names, models, say)
    skipped = [m for m in names if m not in {x.name for x in metrics}]
    say(f"scoring {len(plan)} image(s) per configuration: {', '.join(m.info.label for m in metrics) or 'no metric'}")
    scores = score_images(configs, plan, out, metrics, say)
    n = args.num_images or 1

    per_image = []
    tflops = {}
    for c in configs:
        manifest = out / "images" / c.slug / MANIFEST
        lines = {r.get("file"): r for r in read_lines(manifest)}
        tf = [lines[j.file]["tflops"] for j in plan if lines.get(j.file, {}).get("tflops") is not None]
        tflops[c.text] = sum(tf) / len(tf) if tf else None
        if len(tf) < len(plan):
            say(f"{c.text}: TFLOPs {'of ' + str(len(tf)) + ' of' if tf else 'unknown for'} {len(plan)} image(s): "
                f"{manifest} has no timing line for the others (delete those images to make them again)")
        for j in plan:
            rec = {"configuration": c.text, "file": f"images/{c.slug}/{j.file}", "index": j.index,
                   "prompt": j.prompt, "seed": j.seed, "tflops": lines.get(j.file, {}).get("tflops")}
            rec.update({m.name: scores[c.text][j.index][m.name] for m in metrics})
            per_image.append(rec)
    report.write_csv(folder.stage(SCORES), per_image)

    ref = configs[0]
    ref_s = min(timing[ref.text])
    summary, table, points = [], [], []
    for c in configs:
        s = timing[c.text]
        row = {"configuration": c.text, "images": len(plan), "seconds_min": min(s),
               "seconds_median": sorted(s)[len(s) // 2], "speedup_time": ref_s / min(s), "tflops": tflops[c.text],
               "speedup_tflops": (tflops[ref.text] / tflops[c.text]) if tflops[c.text] and tflops[ref.text] else None}
        cells = [c.text, f"{min(s):.3f}", f"{ref_s / min(s):.2f}x",
                 "" if tflops[c.text] is None else f"{tflops[c.text]:.4g}",
                 report.speedup(tflops[ref.text], tflops[c.text])]
        point = {"label": c.text, "speedup": row["speedup_tflops"]}
        for m in metrics:
            per_prompt = [sum(scores[c.text][p * n + k][m.name] for k in range(n)) / n
                          for p in range(len(plan) // n)]
            mean, lo, hi, count = report.interval(per_prompt)
            row.update({f"{m.name}_mean": mean, f"{m.name}_low": lo, f"{m.name}_high": hi, f"{m.name}_prompts": count})
            cells.append(report.cell(mean, lo, hi, "{:.2f}" if m.name in ("psnr", "clip-score") else "{:.3f}"))
            point[m.name] = (mean, lo, hi)
        summary.append(row)
        table.append(cells)
        points.append(point)
    report.write_csv(folder.stage("eval.csv"), summary)
    header = ["configuration", "seconds", "speed-up (time)", "transformer TFLOPs", "speed-up (TFLOPs)"] + \
             [f"{m.info.label} {'↑' if m.info.higher_is_better else '↓'}" for m in metrics]
    md = report.markdown(header, table)

    plotted = report.plot(folder.stage("eval.png"), points,
                          [(m.name, m.info.label, m.info.higher_is_better) for m in metrics
                           if m.info.kind != "paired" or len(configs) > 1],
                          f"{args.model}: {len(plan) // n} prompts x {n} image(s), {args.width}x{args.height}")
    if not plotted:
        say("no plot: it needs matplotlib (pip install 'ralu[plot]') and a metric with finite values")
    sheet = _sheet(configs, plan, scores, folder, args.sheet, n)
    text = [f"# ralu eval: {args.model}", "", "```", report.command_line(args), "```", "",
            f"{len(plan) // n} prompts x {n} image(s) per prompt, {args.width}x{args.height}, seeds from {args.seed}; "
            f"reference (paired metrics, speed-ups): {ref.text}. Seconds: the fastest of {args.repeats} timed "
            "call(s) on image 0, after a warm-up call, all configurations in one process. Transformer TFLOPs: counted "
            "from the calls the sampler made, mean per image. Each metric: mean over prompts [95% t-interval].", ""]
    text += [f"- {m.info.label}: {m.source}" for m in metrics]
    text += [f"- {INFO[name].label}: skipped (its model could not be loaded)" for name in skipped]
    text += ["", md, ""]
    if plotted:
        text.append("![speed-up vs quality](eval.png)")
    if sheet:
        text.append(f"![prompts where RALU differs most from {ref.text}](contact_sheet.png)")
    folder.stage("eval.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    wrote = folder.commit()
    folder.finish(keep)
    say("")
    say(md)
    say("")
    say("wrote " + ", ".join(str(p) for p in wrote) + f"; what was written is recorded in {out / RECORD}")
    return out


def _sheet(configs, plan, scores, folder: Folder, count: int, n: int) -> bool:
    """The ``count`` prompts whose first image differs most (lowest PSNR) from the reference's,
    averaged over the RALU configurations (every non-reference one if all are baselines);
    whether there is one."""
    out = folder.out
    if count == 0 or len(configs) < 2 or "_psnr" not in scores[configs[0].text][plan[0].index]:
        return False
    ref = configs[0]
    others = [c for c in configs[1:] if c.kind != "baseline"] or configs[1:]
    prompts = range(len(plan) // n)

    def closeness(p):
        return sum(scores[c.text][p * n]["_psnr"] for c in others) / len(others)

    worst = sorted(prompts, key=closeness)[:count]
    rows = []
    for p in worst:
        job = plan[p * n]
        cells = []
        for c in configs:
            v = scores[c.text][job.index]["_psnr"]
            cells.append((out / "images" / c.slug / job.file,
                          [c.text, "reference" if c is ref else f"PSNR {v:.2f} dB" if math.isfinite(v) else "same"]))
        rows.append((job.prompt, cells))
    report.contact_sheet(folder.stage("contact_sheet.png"), rows)
    return True
