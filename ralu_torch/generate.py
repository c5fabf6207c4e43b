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

Here is that order; each phase is a module of :mod:`ralu_torch.generation` (flags, plan, load,
execute, write, compare), whose public functions ``ralu eval`` calls too. See ``docs/generate.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

from ralu_schedule._errors import UsageError
from ralu_schedule._files import TEMPORARY_NAME, VIDEO_SUFFIXES, check_path, output_path
from ralu_schedule.presets import DEFAULT_PRESETS

from . import console as _console
from .generation.compare import compare
from .generation.flags import (apply_defaults, check_clip_positions, check_generate_flags, check_guidance_flags,
                               check_sizes, fill_from_recipe, output_formats)
from .generation.load import check_device, check_offload, load_pipeline, make_ralus
from .generation.plan import (check_agreement, find_done, model_family, pixels_per_token, processes, read_configs,
                              schedule_entry, share, things)
from .generation.write import RunFailure, busy, check_recipe_fits, write_locked
from .jobs import MANIFEST, DirectoryLock, Entry, Job, Plan, check_writable_dir, lora_spec, merge_manifest, read_prompts
from .recipe import base_recipe, check_recipe, image_suffixes, job_recipe, manifest_line, read_recipe, sidecar
from .schedules import _check_family
from .sources import check_model, check_recipe_lora

__all__ = ["RunFailure", "generate"]


def generate(args) -> None:
    # the flags, the prompts file, the schedules and the output paths: no torch needed yet
    recipe = check_recipe(read_recipe(args.from_image), args.from_image) if args.from_image else {}
    named_model = args.model is not None                     # on the command line, not only in a recipe
    from_batch = fill_from_recipe(args, recipe)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    many = args.prompts is not None or (args.num_images or 1) > 1 or args.out_dir is not None
    check_generate_flags(args, many, world, recipe)
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
        schedules[None] = schedule_entry(recipe["schedule"], args.parameters, recipe.get("schedule_source", "recipe"))
    elif args.schedule or args.preset:
        schedules[None] = schedule_entry(args.schedule or args.preset, args.parameters, args.schedule or args.preset)
    for e in entries:                  # the run's default preset waits for the model's family, below
        if e.schedule is not None and e.schedule not in schedules:
            schedules[e.schedule] = schedule_entry(e.schedule, args.parameters, e.schedule,
                                                   where=f"{Path(args.prompts).name}:{e.line}")
    check_sizes(entries, args, schedules)
    # the images, computed per image when asked for (the seeds checked here; sizes once the model's are known)
    plan = None if from_batch else Plan(entries, args.num_images or 1, args.seed, args.height, args.width,
                                        args.negative_prompt)

    # where each image goes (a file name's kind checked again once the model's is known); the model
    if many:
        out_dir = Path(args.out_dir or ".")
        check_writable_dir(out_dir, create=False)
        holder = DirectoryLock(out_dir).holder()
        if holder is not None:         # checked again when the run takes the lock, after loading
            raise UsageError(busy(out_dir, holder))
    else:
        out_dir = None
        output_path(args.out or "image.png", "image.png", overwrite=True, suffixes=image_suffixes() + VIDEO_SUFFIXES,
                    needs=output_formats(image=True, video=True))
    check_path(args.model, "--model")
    local_model = check_model(args.model)

    # the model's family from its configs alone, before torch and any weights: the default preset,
    # the default size (and a video model's frames), the checks
    configs = read_configs(args.model, local_model)
    family, variant = model_family(args.model, local_model, configs)
    video = family is not None and family.video
    apply_defaults(args, variant, video)
    if from_batch:
        plan = [Job(index=k, prompt=e.prompt, seed=e.seed, height=args.height, width=args.width,
                    negative_prompt=e.negative_prompt, file="") for k, e in enumerate(entries)]
    else:
        plan = dataclasses.replace(plan, height=args.height, width=args.width, suffix=".mp4" if video else ".png")
    if not many:
        kind = "clip" if video else "compare" if args.compare else "image"
        name = f"{kind}.mp4" if video else f"{kind}.png"
        suffixes = VIDEO_SUFFIXES if video else image_suffixes()
        path = output_path(args.out or name, name, overwrite=True, suffixes=suffixes, needs=output_formats(not video, video))
        if video:
            check_path(sidecar(path), "--out", names=[TEMPORARY_NAME])     # the recipe beside the clip
        single = (from_batch["index"] if from_batch else 0, path)
    else:
        single = None
    default = DEFAULT_PRESETS[variant] if variant is not None else DEFAULT_PRESETS["flux-dev"]
    if None not in schedules:
        schedules[None] = schedule_entry(default, args.parameters, default)
    per_token = pixels_per_token(variant)
    check_sizes(entries, args, schedules, per_token)
    if video and family.position_limit is not None:
        check_clip_positions(family, variant, configs, entries, args, per_token)
    if family is not None:
        check_guidance_flags(family, entries, args)
        for fixed, _, source in schedules.values():
            _check_family(fixed if fixed is not None else source, family.name, args.force)

    # the device and the processes (torch from here on), then which images are done already
    state = processes(world)
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = str(state.device) if state is not None else check_device(args.device)
    check_offload(args.offload, device)
    dtype_name = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")

    base = base_recipe(args, device, dtype_name, loras)
    target = (lambda job: out_dir / job.file) if out_dir is not None else (
        lambda job: single[1] if job.index == single[0] else None)
    wanted = lambda job: job_recipe(base, job, schedules[job.schedule])  # noqa: E731
    done, found = find_done(plan, out_dir, single, target, wanted, args.overwrite, compare=args.compare)
    if from_batch and from_batch["index"] in done:
        pending = []
    else:
        pending = (job for job in plan if job.index not in done or target(job) is None)
    resumed = {target(plan[i]).name: manifest_line(found[i]) for i in done}  # files no manifest line names
    todo = len(plan) - len(done) if not (from_batch and from_batch["index"] in done) else 0

    if state is not None:
        state.wait_for_everyone()      # every process has read the directory before any writes to it
        check_agreement(len(plan), done)
    if single is not None and todo:
        job = plan[single[0]]
        check_recipe_fits(single[1], {**wanted(job), **({"batch": from_batch} if from_batch else {})},
                          schedules[job.schedule])
    if todo == 0:
        if out_dir is not None and rank == 0 and out_dir.is_dir():
            merge_manifest(out_dir, resumed)
        _console.current().result(f"nothing to do: {len(done)} {things(plan)} already there with the same recipe"
                                  + (f" ({out_dir / MANIFEST})" if out_dir is not None else f" ({single[1]})"))
        return
    mine = share(pending, len(plan), rank, world) if state is not None else pending
    first = next(mine, None)
    if first is None:                  # fewer images than processes: this one waits for the others
        state.wait_for_everyone()
        return
    mine = itertools.chain([first], mine)
    pipe = load_pipeline(args, device, dtype_name, loras, quiet=rank != 0, many=many, local=local_model,
                         trusted=named_model, trusted_loras=not untrusted_loras)
    ralus = make_ralus(pipe, args, schedules)

    if args.compare:
        compare(args, pipe, ralus[None], first, single[1], wanted(first), device)
        return
    written, lines = write_locked(args, plan, mine, ralus, target, wanted, out_dir, state, rank, world, many, device,
                                  todo, from_batch, resumed)
    if lines is not None:
        _console.current().result(f"wrote {todo} {things(plan)} to {out_dir}"
                                  + (f" on {world} processes" if world > 1 else "")
                                  + f", skipped {len(done)} already there; {out_dir / MANIFEST}: {lines} line(s)")
    elif out_dir is not None:
        _console.current().result(f"process {rank}: wrote {written} {things(plan)}")
