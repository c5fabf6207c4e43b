"""``ralu generate``: one image, many images, or a baseline comparison, on one process or many.

The order of work is what keeps a run safe and cheap to repeat:

1. everything the command line and the prompts file say is checked, and every output path
   decided, before any weights load (a bad path fails in well under a second);
2. images already on disk whose recipe matches are skipped (a rerun resumes), and an image
   whose recipe differs is replaced only with ``--overwrite``;
3. under ``accelerate launch``, the images still to make are split between the processes
   (accelerate's ``PartialState``), each process writes its images and its manifest lines,
   and the first process merges the manifests at the end;
4. each image is written under a temporary name and renamed (never half a file), then its
   manifest line is appended and synced, so an interrupted run keeps all it finished.

See ``docs/generate.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
import traceback
from pathlib import Path

from ralu_schedule import token_grid
from ralu_schedule._errors import UsageError, brief, check_finite
from ralu_schedule._files import TEMPORARY_NAME, VIDEO_SUFFIXES, check_path, output_path, read_text, temporary
from ralu_schedule.models import MODEL_INFO
from ralu_schedule.presets import DEFAULT_PRESETS, PARAMETERS

from .backends.families import BY_NAME, FAMILIES, family_of_pipeline, read_pipeline_config
from .jobs import (MANIFEST, PART, SEED_LIMIT, DirectoryLock, Entry, Job, Plan, append_line, batches,
                   check_writable_dir, differences, lora_spec, merge_manifest, read_prompts)
from .options import SELECTIONS, UPSAMPLE_MODES
from . import console as _console
from .recipe import RECIPE_FORMAT, check_recipe, image_suffixes, needs_room, read_recipe, save_options, sidecar
from .schedules import _check_family, _parse_schedule
from .sources import check_model, check_recipe_lora, pickle_files

FROM_FIELDS = ("model", "prompt", "negative_prompt", "true_cfg", "seed", "height", "width", "guidance_scale",
               "max_sequence_length", "dtype", "num_frames", "fps")
#: A video model's clips are MP4 files, their recipe in a JSON file beside each (``clip.json``).
#: The flags whose change makes ``--from`` a new image rather than the recorded batch's member.
#: the frame rates a clip may be written at: both ends write an MP4 that ffmpeg reads back at that rate
FPS_RANGE = (0.01, 480)
BATCH_FIELDS = ("prompt", "negative_prompt", "seed", "height", "width", "num_frames")


class RunFailure(RuntimeError):
    """A run that stopped part way (a write failed): one line for the command line, exit 1."""


def generate(args) -> None:
    # the flags, the prompts file, the schedules and the output paths: no torch needed yet
    recipe = check_recipe(read_recipe(args.from_image), args.from_image) if args.from_image else {}
    named_model = args.model is not None                     # on the command line, not only in a recipe
    from_batch = _from_recipe(args, recipe)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    many = args.prompts is not None or (args.num_images or 1) > 1 or args.out_dir is not None
    _check_flags(args, many, world, recipe)
    if args.schedule:
        check_path(args.schedule, "--schedule")
    loras = [list(lora_spec(s)) for s in args.lora] if args.lora else recipe.get("loras") or []
    untrusted_loras = not args.lora and bool(loras)
    if untrusted_loras:
        for path, _ in loras:
            check_recipe_lora(path, args.from_image)

    # the prompts and schedules; the sizes are checked here where given, and again with the model's own
    entries = ([Entry(prompt=m["prompt"], seed=m["seed"], negative_prompt=m.get("negative_prompt"))
                for m in from_batch["members"]] if from_batch
               else read_prompts(args.prompts) if args.prompts else [Entry(prompt=args.prompt)])
    schedules = {}                     # a job's schedule (None: the run's) -> (fixed, layout, source)
    if recipe and not args.schedule and not args.preset:
        schedules[None] = _schedule_entry(recipe["schedule"], args.parameters, recipe.get("schedule_source", "recipe"))
    elif args.schedule or args.preset:
        schedules[None] = _schedule_entry(args.schedule or args.preset, args.parameters, args.schedule or args.preset)
    for e in entries:                  # the run's default preset waits for the model's family, below
        if e.schedule is not None and e.schedule not in schedules:
            schedules[e.schedule] = _schedule_entry(e.schedule, args.parameters, e.schedule,
                                                    where=f"{Path(args.prompts).name}:{e.line}")
    _check_sizes(entries, args, schedules)
    # the images, computed per image when asked for (the seeds checked here; sizes once the model's are known)
    plan = None if from_batch else Plan(entries, args.num_images or 1, args.seed, args.height, args.width,
                                        args.negative_prompt)

    # where each image goes (a file name's kind checked again once the model's is known); the model
    if many:
        out_dir = Path(args.out_dir or ".")
        check_writable_dir(out_dir, create=False)
        holder = DirectoryLock(out_dir).holder()
        if holder is not None:         # checked again when the run takes the lock, after loading
            raise UsageError(_busy(out_dir, holder))
    else:
        out_dir = None
        output_path(args.out or "image.png", "image.png", overwrite=True, suffixes=image_suffixes() + VIDEO_SUFFIXES,
                    needs=_formats(image=True, video=True))
    check_path(args.model, "--model")
    local_model = check_model(args.model)

    # the model's family from its configs alone, before torch and any weights: the default preset,
    # the default size (and a video model's frames), the checks
    configs = _configs(args.model, local_model)
    family, variant = _family(args.model, local_model, configs)
    video = family is not None and family.video
    _defaults(args, variant, video)
    if from_batch:
        plan = [Job(index=k, prompt=e.prompt, seed=e.seed, height=args.height, width=args.width,
                    negative_prompt=e.negative_prompt, file="") for k, e in enumerate(entries)]
    else:
        plan = dataclasses.replace(plan, height=args.height, width=args.width, suffix=".mp4" if video else ".png")
    if not many:
        kind = "clip" if video else "compare" if args.compare else "image"
        name = f"{kind}.mp4" if video else f"{kind}.png"
        path = output_path(args.out or name, name, overwrite=True,
                           suffixes=VIDEO_SUFFIXES if video else image_suffixes(), needs=_formats(not video, video))
        if video:
            check_path(sidecar(path), "--out", names=[TEMPORARY_NAME])     # the recipe beside the clip
        single = (from_batch["index"] if from_batch else 0, path)
    else:
        single = None
    default = DEFAULT_PRESETS[variant] if variant is not None else DEFAULT_PRESETS["flux-dev"]
    if None not in schedules:
        schedules[None] = _schedule_entry(default, args.parameters, default)
    pixels_per_token = _pixels_per_token(variant)
    _check_sizes(entries, args, schedules, pixels_per_token)
    if video and family.position_limit is not None:
        _check_clip_positions(family, variant, configs, entries, args, pixels_per_token)
    if family is not None:
        _check_guidance_flags(family, entries, args)
        for fixed, _, source in schedules.values():
            _check_family(fixed if fixed is not None else source, family.name, args.force)

    # the device and the processes (torch from here on), then which images are done already
    state = _processes(world)
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = str(state.device) if state is not None else check_device(args.device)
    check_offload(args.offload, device)
    dtype_name = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")

    base = _base_recipe(args, device, dtype_name, loras)
    target = (lambda job: out_dir / job.file) if out_dir is not None else (
        lambda job: single[1] if job.index == single[0] else None)
    wanted = lambda job: _recipe(base, job, schedules[job.schedule])  # noqa: E731
    done, found = _done(plan, out_dir, single, target, wanted, args.overwrite, compare=args.compare)
    if from_batch and from_batch["index"] in done:
        pending = []
    else:
        pending = (job for job in plan if job.index not in done or target(job) is None)
    resumed = {target(plan[i]).name: _line_from_recipe(found[i]) for i in done}  # files no manifest line names
    todo = len(plan) - len(done) if not (from_batch and from_batch["index"] in done) else 0

    if state is not None:
        state.wait_for_everyone()      # every process has read the directory before any writes to it
        _check_agreement(len(plan), done)
    if single is not None and todo:
        job = plan[single[0]]
        _check_recipe_fits(single[1], {**wanted(job), **({"batch": from_batch} if from_batch else {})},
                           schedules[job.schedule])
    if todo == 0:
        if out_dir is not None and rank == 0 and out_dir.is_dir():
            merge_manifest(out_dir, resumed)
        _console.current().result(f"nothing to do: {len(done)} {_things(plan)} already there with the same recipe"
                                  + (f" ({out_dir / MANIFEST})" if out_dir is not None else f" ({single[1]})"))
        return
    mine = _share(pending, len(plan), rank, world) if state is not None else pending
    first = next(mine, None)
    if first is None:                  # fewer images than processes: this one waits for the others
        state.wait_for_everyone()
        return
    mine = itertools.chain([first], mine)
    pipe = _load(args, device, dtype_name, loras, quiet=rank != 0, many=many, local=local_model,
                 trusted=named_model, trusted_loras=not untrusted_loras)
    ralus = _ralus(pipe, args, schedules)

    if args.compare:
        _compare(args, pipe, ralus[None], first, single[1], wanted(first), device)
        return
    written, lines = _write_locked(args, plan, mine, ralus, target, wanted, out_dir, state, rank, world, many, device,
                                   todo, from_batch, resumed)
    if lines is not None:
        _console.current().result(f"wrote {todo} {_things(plan)} to {out_dir}"
                                  + (f" on {world} processes" if world > 1 else "")
                                  + f", skipped {len(done)} already there; {out_dir / MANIFEST}: {lines} line(s)")
    elif out_dir is not None:
        _console.current().result(f"process {rank}: wrote {written} {_things(plan)}")


def _write_locked(args, plan, mine, ralus, target, wanted, out_dir, state, rank, world, many, device, todo,
                  from_batch, resumed) -> tuple:
    """This process's images (:func:`_write_images`) under ``out_dir``'s lock, then, once every
    process is done, the manifest merged by the first: (images written, manifest lines, None
    on the other processes and without a directory). On failure the lock is released and a
    directory this run made and left empty is removed."""
    lock, created = _take_directory(out_dir, state, rank)
    try:
        written = _write_images(args, plan, mine, ralus, target, wanted, out_dir, rank, world, many, device, todo,
                                from_batch)
        if state is not None:
            state.wait_for_everyone()
        lines = merge_manifest(out_dir, resumed) if out_dir is not None and rank == 0 else None
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()                            # nothing written: leave no empty directory behind
        raise
    finally:
        if lock is not None:
            lock.release()
    return written, lines


def _share(pending, total: int, rank: int, world: int):
    """This process's part of the images still to make: the contiguous range of image indices
    ``[rank N / world, (rank + 1) N / world)``, less those done (every process computes the same)."""
    lo, hi = rank * total // world, (rank + 1) * total // world
    return (job for job in pending if lo <= job.index < hi)


def _take_directory(out_dir, state, rank):
    """The output directory, made if needed, and its lock (:class:`~ralu_torch.jobs.DirectoryLock`)
    taken by the first process of the run; a second run into it stops with one line."""
    if out_dir is None:
        return None, False
    created = False
    if rank == 0:
        created = not out_dir.exists()
        check_writable_dir(out_dir)
    lock, holder = None, None
    if rank == 0:
        lock = DirectoryLock(out_dir)
        holder = lock.acquire()
    if state is not None:
        from accelerate.utils import broadcast_object_list

        holder = broadcast_object_list([holder])[0]
        state.wait_for_everyone()
    if holder is not None:
        if created and rank == 0 and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise UsageError(_busy(out_dir, holder))
    return lock, created


def _busy(out_dir: Path, holder: str) -> str:
    return (f"{brief(str(out_dir))} is being written by another ralu generate ({holder}); wait for it to finish "
            "or write elsewhere")


def _write_images(args, plan, mine, ralus, target, wanted, out_dir, rank, world, many, device, todo, from_batch):
    """Generate and write this process's images, batch by batch; returns how many it wrote."""
    console = _console.current()
    manifest = None if out_dir is None else out_dir / (MANIFEST if world == 1 else PART.format(rank=rank))
    size = len(plan) if from_batch else args.batch_size
    share = 1 if from_batch else todo if world == 1 else None
    progress = console.progress(share, unit=_unit(plan), enabled=rank == 0)
    written, versions, result = 0, _versions(), None
    try:
        for group in batches(mine, size):
            ralu = ralus[group[0].schedule]
            made = sum(target(job) is not None for job in group)
            seconds, out = _run(ralu, group, args, device, progress.steps(made, ralu.layout.total_steps))
            tflops = sum(st.tflops for st in out.stage_calls) / len(group)
            members = [{"prompt": j.prompt, "seed": j.seed, "negative_prompt": j.negative_prompt} for j in group]
            sound = getattr(out, "audio", None)            # a joint pipeline's waveforms (LTX-2), one per clip
            for k, (job, image) in enumerate(zip(group, out.images)):
                path = target(job)
                if path is None:
                    continue
                rec = {**wanted(job), "schedule": out.schedule.to_dict(), "guidance_used": ralu.guidance_scale,
                       "versions": versions}
                if len(group) > 1:
                    rec["batch"] = {"members": members, "index": k}
                line = None if manifest is None else {
                    **_line_from_recipe(rec), "file": path.name, "index": job.index, "seconds": seconds / len(group),
                    "batch_seconds": seconds, "batch_size": len(group), "tflops": tflops,
                    "stage_tokens": out.stage_tokens, "rank": rank}
                try:
                    _save(image, path, rec, None if sound is None else (sound[k], ralu.backend.audio_sample_rate))
                    if line is not None:
                        try:
                            append_line(manifest, line)
                        except OSError:
                            path.unlink(missing_ok=True)   # an image the manifest does not list is not left
                            raise
                except OSError as err:
                    reason = f"cannot write {path}: {err.strerror or err}"
                    if out_dir is None:
                        raise RunFailure(f"{reason}; nothing partial is left") from None
                    raise RunFailure(f"{reason}; {written} {_things(plan)} of this run are written (listed in "
                                     f"{manifest}), nothing partial is left; rerun the same command to resume") from None
                written += 1
                progress.advance(1, str(path))
                if manifest is None:
                    result = f"wrote {path} ({job.width}x{job.height}, tokens per stage {out.stage_tokens})"
    finally:
        progress.close()                               # an error's line goes below the bar, not into it
    if result is not None:
        console.result(result)
    return written


# -- the command line, before any weights -------------------------------------------------------

def _from_recipe(args, recipe: dict):
    """Fill the flags not given from ``--from IMAGE``'s recipe. Returns the recipe's batch
    (``{"members": [...], "index": k}``) when the image was drawn in a batch and none of the
    flags that pick its noise changed: regenerating the same batch is what reproduces it
    bit for bit (a batched matmul rounds differently from a single one)."""
    batch = recipe.get("batch") if recipe else None
    if batch and any(getattr(args, k) is not None for k in BATCH_FIELDS):
        batch = None
    if recipe and (args.preset or args.schedule):
        raise UsageError("--from takes the image's schedule; leave out --preset and --schedule")
    for key in FROM_FIELDS:
        if getattr(args, key) is None and recipe.get(key) is not None:
            setattr(args, key, recipe[key])
    for key, choices in (("upsample", UPSAMPLE_MODES), ("select", SELECTIONS), ("parameters", PARAMETERS)):
        if getattr(args, key) is None:
            setattr(args, key, recipe.get(key, choices[0]))
    if recipe.get("compile"):
        args.compile = True
    if args.model is None or (args.prompt is None and args.prompts is None):
        raise UsageError("generate needs --model and --prompt or --prompts (or --from IMAGE)")
    args.seed = 0 if args.seed is None else args.seed
    return batch


def _things(plan) -> str:
    """What the run writes, for its one-line reports: clips for a video model, else images."""
    return f"{_unit(plan)}(s)"


def _formats(image: bool, video: bool) -> str:
    """What ``--out`` needs, for its one-line refusal: the extensions of files that carry their recipe."""
    kinds = [f"{', '.join(image_suffixes())} (images)"] * image + [f"{', '.join(VIDEO_SUFFIXES)} (clips)"] * video
    return f"one of the extensions ralu generate writes, each file with its recipe: {' or '.join(kinds)}"


def _unit(plan) -> str:
    """``clip`` for a video model's run, else ``image`` (a ``--from`` batch is a list of jobs: the
    image model's, as a clip's recipe records no batch)."""
    return "clip" if getattr(plan, "suffix", ".png") in VIDEO_SUFFIXES else "image"


def _check_recipe_fits(path: Path, recipe: dict, schedule) -> None:
    """An image whose recipe its format cannot hold (a JPEG's EXIF segment holds 64 KB: a prompt
    of tens of thousands of characters) is refused before loading: the recipe as it will be
    written, its schedule solved as the run will solve it, with room for the versions and
    ``--compare``'s timings."""
    if path.suffix.lower() in VIDEO_SUFFIXES or not needs_room(path):
        return
    fixed, layout, _ = schedule
    if fixed is None:
        from ralu_schedule import solve

        fixed = solve(layout)
    save_options(path, {**recipe, "schedule": fixed.to_dict(), "guidance_used": 0.0,
                        "versions": dict.fromkeys(("ralu", "diffusers", "torch"), "0" * 32), "room": "0" * 400})


def _defaults(args, variant, video: bool) -> None:
    """The model's own size where none is given (1024 x 1024 for the image families, Wan's
    480 x 832), and a video model's frames and frame rate; ``--num-frames`` and ``--fps`` are
    refused for an image model."""
    from ralu_schedule.cost import MODELS

    spec = MODELS.get(variant)
    info = MODEL_INFO.get(variant)
    if not video:
        for flag, value in (("--num-frames", args.num_frames), ("--fps", args.fps)):
            if value is not None:
                raise UsageError(f"{flag} is for video models (Wan); {brief(args.model)} makes images")
    elif args.compare:
        raise UsageError("--compare puts two images side by side; for a video model run the baseline and RALU as "
                         "two runs (or time them with bench/latency.py --family wan)")
    height, width = spec.default_resolution if spec is not None and video else (1024, 1024)
    args.height = height if args.height is None else args.height
    args.width = width if args.width is None else args.width
    if video:
        frames = args.num_frames if args.num_frames is not None else spec.default_frames
        try:
            spec.latent_frames(frames)                   # the VAE's 4k + 1 rule, one line if broken
        except ValueError as err:
            raise UsageError(f"--num-frames: {err}") from None
        args.num_frames = frames
        args.fps = args.fps if args.fps is not None else info.fps
        check_finite("--fps", args.fps)
        if not FPS_RANGE[0] <= args.fps <= FPS_RANGE[1]:     # beyond, ffmpeg fails or writes a rate it reads back as 0
            raise UsageError(f"--fps must be from {FPS_RANGE[0]:g} to {FPS_RANGE[1]:g} frames per second, got "
                             f"{args.fps:g}")


def _pixels_per_token(variant) -> int:
    from ralu_schedule.cost import MODELS

    spec = MODELS.get(variant)
    return spec.transformer.pixels_per_token if spec is not None else 16


def check_run_flags(args) -> None:
    """The flags ``ralu generate`` and ``ralu eval`` share: image count, batch size, seed,
    text length and guidance scale."""
    if args.num_images is not None and args.num_images < 1:
        raise UsageError(f"--num-images must be >= 1, got {args.num_images}")
    if args.max_sequence_length is not None and args.max_sequence_length < 1:
        raise UsageError(f"--max-sequence-length must be >= 1, got {args.max_sequence_length}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.seed < SEED_LIMIT:
        raise UsageError(f"--seed must lie in [0, 2**63), got {args.seed}")
    if args.guidance_scale is not None:
        check_finite("--guidance-scale", args.guidance_scale)


def _check_flags(args, many: bool, world: int, recipe: dict) -> None:
    if args.prompts is not None and args.prompt is not None and not recipe:
        raise UsageError("give --prompt or --prompts, not both")
    if recipe and (many or args.compare):
        raise UsageError("--from regenerates one image into --out; leave out --prompts, --num-images, --out-dir "
                         "and --compare")
    if args.out is not None and many:
        raise UsageError("--out names one image; with --prompts, --num-images or --out-dir the images go to --out-dir")
    check_run_flags(args)
    if args.true_cfg is not None:
        check_finite("--true-cfg", args.true_cfg)
    if args.compare and many:
        raise UsageError("--compare makes one picture; leave out --prompts, --num-images and --out-dir")
    if args.baseline_steps is not None and (not args.compare or args.baseline_steps < 1):
        raise UsageError("--baseline-steps needs --compare" if not args.compare
                         else f"--baseline-steps must be >= 1, got {args.baseline_steps}")
    if world > 1:
        if not many or args.compare:
            raise UsageError(f"{world} processes need many images: give --prompts or --num-images and --out-dir")
        if args.device is not None:
            raise UsageError("under accelerate launch each process takes its own device; leave out --device")
        if args.offload != "none":
            raise UsageError("--offload with several processes: each process holds its own model; use one or the other")


def _processes(world: int):
    """accelerate's ``PartialState`` when launched as one of ``world`` > 1 processes (``accelerate
    launch``, ``torchrun``: WORLD_SIZE), else None. Without CUDA the processes run on the CPU
    (gloo); a launch that accelerate would not split is refused rather than run twice."""
    if world <= 1:
        return None
    try:
        from accelerate import PartialState
    except ImportError:
        raise UsageError("several processes need accelerate: pip install accelerate") from None
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != world:
        raise UsageError(f"WORLD_SIZE is {world} but accelerate sees {state.num_processes} process(es) "
                         f"({state.distributed_type}); launch with accelerate launch or torchrun")
    return state


def _check_agreement(total: int, done: set) -> None:
    """Every process must see the same images still to make, or the split would lose some and
    repeat others: machines that do not share the output directory, or different prompts files.
    Compared by a digest of the plan's size and the images done (not a list of every image)."""
    import hashlib

    from accelerate.utils import gather_object

    digest = hashlib.sha256(f"{total}:{sorted(done)}".encode()).hexdigest()
    seen = gather_object([(total - len(done), digest)])
    if any(s != seen[0] for s in seen):
        counts = ", ".join(str(n) for n, _ in seen)
        raise UsageError(f"the processes disagree on the images still to make ({counts} per process): every process "
                         "must see the same --out-dir (a shared file system) and the same prompts file")


def _schedule_entry(arg, parameters: str, source, where: str | None = None):
    try:
        fixed, layout = _parse_schedule(arg, parameters)
    except ValueError as err:
        if where is None:
            raise
        raise UsageError(f"{where}: {err}") from None
    return fixed, layout, source


def _family(model: str, local=None, read=None):
    """(the :class:`~ralu_torch.backends.families.Family`, the model variant) from the
    pipeline's ``model_index.json`` and the configs its family reads to tell its models apart
    (FLUX.1-schnell has no guidance embedding, FLUX.2 [klein] is distilled or not, 4B or 9B,
    Z-Image-Turbo has a smaller shift): JSON files only, no weights and no torch (a local folder,
    the hub cache, or the hub). (None, None) for a pipeline no family runs: loading it then
    fails with the list of those RALU runs. ``read``: the pipeline's configs (:func:`_configs`),
    where the caller has them already."""
    read = read or _configs(model, local)
    family = family_of_pipeline(str(read("").get("_class_name", "")))
    if family is None:
        return None, None
    return family, family.variant(read)


def _configs(model: str, local=None):
    """``read(subfolder)``: the pipeline's config JSON of ``subfolder`` as a dict (``""``: its
    ``model_index.json``; ``{}`` where absent); a pipeline without a readable model_index.json
    is refused here."""
    if local is None and Path(model).is_dir():
        local = Path(model)

    def load(subfolder: str, name: str) -> dict:
        try:
            if local is not None:
                path = Path(local) / subfolder / name
            else:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(model, name, subfolder=subfolder or None))
            return json.loads(read_text(path))
        except (OSError, ValueError):
            return {}

    index = load("", "model_index.json")
    if not index:
        raise UsageError(f"cannot read model {brief(model)}: no readable model_index.json")

    def read(subfolder: str) -> dict:
        if not subfolder:
            return dict(index)
        return load(subfolder, "scheduler_config.json" if subfolder == "scheduler" else "config.json")

    return read


def _check_clip_positions(family, variant, read, entries, args, pixels_per_token: int) -> None:
    """A clip whose latent frames, or rows or columns of tokens, exceed the transformer's rotary
    table (its config's ``rope_max_seq_len`` positions per axis), refused before loading."""
    from ralu_schedule.cost import MODELS

    limit = family.position_limit(read)
    spec = MODELS[variant]
    frames = spec.latent_frames(args.num_frames)
    for e in entries:
        height, width = e.height or args.height, e.width or args.width
        rows, cols = height // pixels_per_token, width // pixels_per_token
        if max(frames, rows, cols) > limit:
            where = f"{Path(args.prompts).name}:{e.line}: " if args.prompts and e.line else ""
            raise UsageError(f"{where}a clip of {frames} latent frames of {rows}x{cols} tokens exceeds "
                             f"{family.display}'s rotary table ({limit} positions per axis); at most "
                             f"{spec.temporal * (limit - 1) + 1} frames and {limit * pixels_per_token} pixels a side")


def _check_guidance_flags(family, entries, args) -> None:
    """A negative prompt that the family's guidance would ignore, and --true-cfg where the
    family has no true CFG, are refused before loading (the family declares both)."""
    if args.true_cfg is not None and family.negative != "true-cfg":
        owners = ", ".join(f.pipelines[0] for f in FAMILIES if f.negative == "true-cfg")
        raise UsageError(f"--true-cfg is the true CFG of {owners}; {family.display}: {family.guidance}")
    line = next((e for e in entries if e.negative_prompt or args.negative_prompt), None)
    if line is None:
        return
    why = family.negative_rule(args.guidance_scale, args.true_cfg)
    if why is not None:
        where = f"{Path(args.prompts).name}:{line.line}: " if args.prompts and line.line else ""
        hint = "; pass --true-cfg" if family.negative == "true-cfg" else ""
        raise UsageError(f"{where}{why}{hint}")


def _check_sizes(entries, args, schedules: dict, pixels_per_token: int = 16) -> None:
    """Every prompt's size tiles into its schedule's coarsest tokens (per prompt: its images share
    it); before the model is known, only the sizes given (a model's tokens cover 16 pixels or
    a multiple of 16, so nothing refused here would tile later)."""
    for e in entries:
        if e.schedule not in schedules:
            continue
        height, width = e.height or args.height, e.width or args.width
        if height is None or width is None:
            continue
        fixed, layout, _ = schedules[e.schedule]
        try:
            token_grid(height, width, pixels_per_token=pixels_per_token,
                       downsampling=(fixed.layout if fixed is not None else layout).downsampling, what="this schedule")
        except ValueError as err:
            if args.prompts and e.line is not None:
                raise UsageError(f"{Path(args.prompts).name}:{e.line}: {err}") from None
            raise


def _base_recipe(args, device: str, dtype_name: str, loras: list) -> dict:
    return {"format": RECIPE_FORMAT, "model": args.model, "true_cfg": args.true_cfg,
            "guidance_scale": args.guidance_scale, "max_sequence_length": args.max_sequence_length,
            "dtype": dtype_name, "device": device, "upsample": args.upsample, "select": args.select,
            "parameters": args.parameters, "loras": loras, "compile": bool(args.compile),
            **({} if args.num_frames is None else {"num_frames": args.num_frames, "fps": args.fps})}


def _recipe(base: dict, job: Job, schedule) -> dict:
    fixed, _, source = schedule
    return {**base, "prompt": job.prompt, "negative_prompt": job.negative_prompt, "seed": job.seed,
            "height": job.height, "width": job.width, "schedule": None if fixed is None else fixed.to_dict(),
            "schedule_source": str(source)}


def _done(plan, out_dir, single, target, wanted, overwrite: bool, compare: bool = False):
    """The images whose file is there with a matching recipe, and the recipes found; an existing
    file with another recipe is refused unless ``overwrite``. The output directory is listed
    once (the files there, not the images asked for, set the cost)."""
    done, found = set(), {}
    if out_dir is not None:
        names = [e.name for e in os.scandir(out_dir)] if out_dir.is_dir() else []
        indices = sorted(i for i in map(plan.index_of, names) if i is not None)   # a directory: many images, a Plan
    else:
        indices = [single[0]] if single[1].exists() else []
    for i in indices:
        job = plan[i]
        path = target(job)
        if path is None or not path.exists():
            continue
        if path.is_dir():
            raise UsageError(f"{brief(str(path))} is a directory")
        if compare:
            if not overwrite:
                raise UsageError(f"{brief(str(path))} exists; pass --overwrite to replace it")
            continue
        try:
            have = read_recipe(path)
        except UsageError:
            if overwrite:
                continue
            raise UsageError(f"{brief(str(path))} exists and was not written by ralu generate; pass --overwrite to "
                             "replace it") from None
        diff = differences(wanted(job), have)
        if not diff:
            done.add(job.index)
            found[job.index] = have
        elif not overwrite:
            raise UsageError(f"{brief(str(path))} exists with another recipe (it differs in {', '.join(diff)}); pass "
                             "--overwrite to replace it, or write elsewhere")
    return done, found


def _line_from_recipe(rec: dict) -> dict:
    """A manifest line's description of an image (timings added by the run that made it)."""
    sched = rec.get("schedule") or {}
    return {"prompt": rec.get("prompt"), "negative_prompt": rec.get("negative_prompt"), "seed": rec.get("seed"),
            "width": rec.get("width"), "height": rec.get("height"), "model": rec.get("model"),
            "schedule": sched, "preset": (sched.get("info") or {}).get("preset"), "dtype": rec.get("dtype"),
            "device": rec.get("device"), "loras": rec.get("loras"), "seconds": None, "tflops": None,
            **({"num_frames": rec["num_frames"], "fps": rec.get("fps")} if rec.get("num_frames") is not None else {})}


def check_device(name):
    """``--device``: a device torch knows and this machine has."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N, mps, ...") from None
    available = {"cuda": torch.cuda.is_available, "mps": lambda: torch.backends.mps.is_available()}
    if device.type in available and not available[device.type]():
        raise UsageError(f"--device {name}: this machine has no {device.type} device (torch {torch.__version__}); "
                         "use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


# -- loading and running ----------------------------------------------------------------------------

def _load(args, device: str, dtype_name: str, loras: list, quiet: bool, many: bool, local=None, trusted=True,
          trusted_loras=True):
    """The pipeline, its LoRAs, offload. Weights only an image's recipe names (``trusted`` False)
    load from safetensors only (:mod:`ralu_torch.sources`); a model named on the command line may
    fall back to pickle files, which the run says in one line. The weight-loading bars and the
    pipeline's own step bars are off: the run shows one progress display (:mod:`ralu_torch.console`;
    ``many`` no longer changes anything, kept for callers)."""
    import torch
    from diffusers import DiffusionPipeline

    console = _console.current()
    _console.loading_bars_off()

    pickles = pickle_files(local) if local is not None else []
    if pickles and not trusted:
        raise UsageError(f"{brief(args.from_image)}'s recipe names the model {brief(args.model)}, whose weights "
                         f"include pickle files ({pickles[0]}), which can run code when loaded; a model named only by "
                         f"an image loads from safetensors only: name it yourself with --model {brief(args.model)} "
                         "to load it")
    if pickles and not quiet:
        console.note(f"note: {brief(args.model)} has pickle weights without safetensors ({', '.join(pickles[:3])}"
                     f"{', ...' if len(pickles) > 3 else ''}); loading them, as you named it")
    if not quiet:
        console.note(f"loading {args.model} ({dtype_name}, {device}"
                     + (f", offload {args.offload}" if args.offload != "none" else "") + ")")
    kwargs = dtype_kwarg(getattr(torch, dtype_name))
    if not trusted:
        kwargs["use_safetensors"] = True
    try:
        pipe = DiffusionPipeline.from_pretrained(args.model, **kwargs)
    except (OSError, ValueError) as err:
        if not trusted and "safetensors" in str(err):
            raise UsageError(f"{brief(args.from_image)}'s recipe names the model {brief(args.model)}, which has no "
                             "safetensors weights; a model named only by an image loads from safetensors only: name "
                             f"it yourself with --model {brief(args.model)} to load its pickle files") from None
        raise UsageError(f"cannot load model {brief(args.model)}: {str(err).splitlines()[0]}") from None
    if loras:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UsageError("--lora needs peft: pip install peft") from None
        names = []
        for k, (path, _) in enumerate(loras):
            try:
                pipe.load_lora_weights(path, adapter_name=f"lora{k}",
                                       **({} if trusted_loras else {"use_safetensors": True}))
            except (OSError, ValueError, KeyError) as err:
                raise UsageError(f"cannot load LoRA {brief(path)}: {str(err).splitlines()[0]}") from None
            names.append(f"lora{k}")
        pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])
    if args.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif args.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_offload(offload: str, device: str) -> None:
    """``--offload sequential`` with the CPU as the device, refused before loading: diffusers makes
    its offload device ``cpu:0``, to which torch (2.13) copies a CPU tensor instead of handing it
    back, so accelerate's hooks (1.16) put plain tensors where parameters were and fail with a
    TypeError on the first offload; the stock pipeline fails the same way, and offloading to the
    memory the model is in saves nothing. On a GPU it runs as diffusers runs it."""
    if offload == "sequential" and device.split(":")[0] == "cpu":
        raise UsageError("--offload sequential needs a GPU: with the CPU as the device diffusers offloads to 'cpu:0' "
                         "and accelerate's hooks fail there (the stock pipeline too), and it would save no memory; "
                         "use --offload none (or model)")


def dtype_kwarg(dtype) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` where diffusers takes it (it deprecates
    ``torch_dtype`` since mid-2026), ``torch_dtype`` in the older releases our range allows,
    which would ignore ``dtype`` and load float32."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def _ralus(pipe, args, schedules: dict) -> dict:
    """One RALU per schedule of the run; the transformer is compiled once, by the first."""
    from .pipeline import RALU

    out = {}
    for key, (fixed, _, source) in schedules.items():
        out[key] = RALU(pipe, fixed if fixed is not None else source, parameters=args.parameters,
                        upsample=args.upsample, select=args.select, allow_other_model=args.force,
                        compile=bool(args.compile) and not out)
    return out


def _generators(torch, device: str, seeds):
    gen_device = "cpu" if device.startswith("mps") else device
    return [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]


def _call_args(args, group: list, family=None) -> dict:
    kw = {"height": group[0].height, "width": group[0].width, "guidance_scale": args.guidance_scale,
          "max_sequence_length": args.max_sequence_length}
    if family is not None and family.fps_argument and args.fps is not None:
        kw[family.fps_argument] = args.fps              # LTX-2: the clip's time axis and its audio's length
    if group[0].negative_prompt is not None:
        kw["negative_prompt"] = [j.negative_prompt for j in group]
    if args.true_cfg is not None:
        kw["true_cfg_scale"] = args.true_cfg
    if args.num_frames is not None:
        kw["num_frames"] = args.num_frames
    return kw


def _run(ralu, group: list, args, device: str, callback=None):
    """One sampler call for ``group``: (seconds, output). ``callback``: the pipeline's
    ``callback_on_step_end`` (the run's progress display)."""
    import torch

    gens = _generators(torch, device, [j.seed for j in group])
    kwargs = {} if callback is None else {"callback_on_step_end": callback}
    start = _clock(torch, device)
    try:
        out = ralu([j.prompt for j in group], generator=gens, **_call_args(args, group, BY_NAME[ralu.backend.name]),
                   **kwargs)
    except (TypeError, RuntimeError) as err:
        if args.offload == "none" or not any("accelerate" in f.filename for f in traceback.extract_tb(err.__traceback__)):
            raise
        import accelerate

        raise UsageError(f"--offload {args.offload} failed inside accelerate {accelerate.__version__}'s offload hooks "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:120]}); the pipeline's own call goes "
                         "through the same hooks; try another --offload") from None
    return _clock(torch, device) - start, out


def _clock(torch, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _versions() -> dict:
    import diffusers
    import torch

    import ralu_schedule

    return {"ralu": ralu_schedule.__version__, "diffusers": diffusers.__version__, "torch": torch.__version__}


def _save(image, path: Path, recipe: dict, audio=None) -> None:
    """Under a temporary name in the same directory, then renamed: never half an image. A clip
    (a list of frames) is an MP4 (diffusers' ``export_to_video``, imageio's ffmpeg) whose recipe
    goes in a JSON file beside it, written first: a clip on disk always has its recipe. ``audio``:
    ``(waveform (channels, samples) in [-1, 1], sample rate)``, the clip's sound (LTX-2), muxed
    into the MP4 as AAC."""
    if isinstance(image, (list, tuple)):
        return _save_clip(image, path, recipe, audio)
    options = save_options(path, recipe)              # the format, and the recipe in its metadata
    tmp = temporary(path)
    try:
        image.save(tmp, **options)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_clip(frames, path: Path, recipe: dict, audio=None) -> None:
    try:
        from diffusers.utils import export_to_video
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UsageError("writing MP4 needs imageio and imageio-ffmpeg: pip install 'ralu[video]'") from None
    side = sidecar(path)
    tmp_side = temporary(side)
    tmp = temporary(path, suffix=path.suffix)          # ffmpeg picks the container by suffix
    extra = [] if audio is None else [temporary(path, suffix=".wav"), temporary(path, suffix="a")]
    done = False
    try:
        tmp_side.write_text(json.dumps(recipe))
        try:
            export_to_video(list(frames), str(tmp), fps=recipe.get("fps") or 16)
            if audio is not None:                      # the sound track, muxed in beside the video stream
                _write_wav(extra[0], *audio)
                _mux_audio(tmp, extra[0], extra[1])
                os.replace(extra[1], tmp)
        except OSError:
            raise
        except Exception as err:                       # imageio / ffmpeg: what they raise is theirs
            said = " ".join(str(err).split())                # its message on one line, at most 200 characters
            raise OSError(f"ffmpeg could not write the clip ({type(err).__name__}: {said[:200]})") from None
        os.replace(tmp_side, side)                     # the recipe, then the clip: a clip is never without one
        os.replace(tmp, path)
        done = True
    finally:
        for t in (tmp_side, tmp, *extra):
            if t.exists():
                t.unlink()
        if not done and not path.exists():
            side.unlink(missing_ok=True)               # no recipe is left beside no clip


def _write_wav(path: Path, waveform, rate: int) -> None:
    """A ``(channels, samples)`` waveform in ``[-1, 1]`` as 16-bit PCM (Python's ``wave``)."""
    import wave

    import numpy as np

    pcm = (np.clip(waveform.detach().float().cpu().numpy(), -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(np.ascontiguousarray(pcm.T).tobytes())


def _mux_audio(video: Path, audio: Path, out: Path) -> None:
    """``video``'s stream copied and ``audio`` encoded as AAC into ``out`` (imageio's ffmpeg)."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video), "-i", str(audio),
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-f", "mp4", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise OSError(f"ffmpeg could not add the audio ({' '.join(done.stderr.split())[:200]})")


# -- --compare ------------------------------------------------------------------------------------

def _compare(args, pipe, ralu, job: Job, path: Path, recipe: dict, device: str) -> None:
    """The full-step pipeline and RALU from the same seed, timed after one untimed RALU call
    (which pays the first call's one-off costs for both), side by side in one picture."""
    import torch

    variant = BY_NAME[ralu.backend.name].variant(read_pipeline_config(pipe))
    steps = args.baseline_steps or MODEL_INFO[variant].default_steps   # the model's stock run (FLUX.1-dev: 50)
    kw = _call_args(args, [job])
    if "negative_prompt" in kw:
        kw["negative_prompt"] = kw["negative_prompt"][0]
    console = _console.current()
    progress = console.progress(3, unit="call")    # RALU untimed, the baseline, RALU timed: one display
    try:
        _run(ralu, [job], args, device, progress.steps(1, ralu.layout.total_steps))
        progress.advance(1, "RALU, untimed")
        callback = progress.steps(1, steps)
        start = _clock(torch, device)
        base = pipe(job.prompt, num_inference_steps=steps, generator=_generators(torch, device, [job.seed])[0],
                    **{k: v for k, v in kw.items() if v is not None},
                    **({} if callback is None else {"callback_on_step_end": callback}))
        base_s = _clock(torch, device) - start
        progress.advance(1, f"baseline, {steps} steps")
        seconds, out = _run(ralu, [job], args, device, progress.steps(1, ralu.layout.total_steps))
        progress.advance(1, "RALU")
    finally:
        progress.close()
    # RALU's last stage runs at full resolution on every token, as each baseline step does: the
    # sampler's own count of one of its calls (guidance and text tokens included) prices a step
    full = out.stage_calls[-1]
    base_tf = steps * full.tflops / full.executed
    ralu_tf = sum(st.tflops for st in out.stage_calls)
    lay = out.schedule.layout
    name = (out.schedule.info or {}).get("preset") or "schedule"
    rows = [(f"baseline, {steps} steps", base_s, base_tf),
            (f"RALU {name}, {'+'.join(map(str, lay.steps))} steps", seconds, ralu_tf)]
    picture = _side_by_side([base.images[0], out.images[0]],
                            [[label, f"{s:.2f} s, {tf:.4g} transformer TFLOPs"] for label, s, tf in rows])
    rec = {**recipe, "schedule": out.schedule.to_dict(), "guidance_used": ralu.guidance_scale,
           "versions": _versions(),
           "compare": {"baseline_steps": steps, "baseline_seconds": base_s, "ralu_seconds": seconds,
                       "baseline_tflops": base_tf, "ralu_tflops": ralu_tf}}
    try:
        _save(picture, path, rec)
    except OSError as err:
        raise RunFailure(f"cannot write {path}: {err.strerror or err}; nothing partial is left") from None
    console.say(f"{'':<34} {'seconds':>9} {'TFLOPs':>10}")
    for label, s, tf in rows:
        console.say(f"{label:<34} {s:>9.2f} {tf:>10.4g}")
    console.result(f"speed-up {base_s / seconds:.2f}x in time, {base_tf / ralu_tf:.2f}x in TFLOPs; wrote {path}")


def _font(size: int):
    """PIL's default font at ``size`` pixels (Pillow < 10.1: its fixed bitmap font)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _side_by_side(images, captions):
    """The images in a row, each with its caption lines under it (panels widen for long captions)."""
    from PIL import Image, ImageDraw

    w, h = images[0].size
    size = max(10, w // 32)
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    gap, line = max(4, w // 64), int(size * 1.4)
    panel = max(w, max(int(probe.textlength(t, font=font)) for lines in captions for t in lines) + 2 * gap)
    canvas = Image.new("RGB", (len(images) * panel + (len(images) - 1) * gap,
                               h + 2 * gap + line * max(map(len, captions))), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (img, lines) in enumerate(zip(images, captions)):
        x = k * (panel + gap)
        canvas.paste(img.convert("RGB"), (x + (panel - w) // 2, 0))
        for n, text in enumerate(lines):
            draw.text((x + gap, h + gap + n * line), text, fill="black", font=font)
    return canvas
