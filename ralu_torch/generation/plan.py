"""What a run makes and who makes it, decided before any weights load: the schedules, the
model's family and variant read from its configs alone (JSON files, no torch), which images are
already on disk with the same recipe (a rerun resumes), and under ``accelerate launch`` the
processes, their agreement on what is left, and each one's share."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ralu_schedule._errors import UsageError, brief
from ralu_schedule._files import VIDEO_SUFFIXES, read_text

from ..backends.families import family_of_pipeline
from ..jobs import differences
from ..recipe import read_recipe
from ..schedules import _parse_schedule


def schedule_entry(arg, parameters: str, source, where: str | None = None):
    try:
        fixed, layout = _parse_schedule(arg, parameters)
    except ValueError as err:
        if where is None:
            raise
        raise UsageError(f"{where}: {err}") from None
    return fixed, layout, source


def read_configs(model: str, local=None):
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


def model_family(model: str, local=None, read=None):
    """(the :class:`~ralu_torch.backends.families.Family`, the model variant) from the
    pipeline's ``model_index.json`` and the configs its family reads to tell its models apart
    (FLUX.1-schnell has no guidance embedding, FLUX.2 [klein] is distilled or not, 4B or 9B,
    Z-Image-Turbo has a smaller shift): JSON files only, no weights and no torch (a local folder,
    the hub cache, or the hub). (None, None) for a pipeline no family runs: loading it then
    fails with the list of those RALU runs. ``read``: the pipeline's configs (:func:`read_configs`),
    where the caller has them already."""
    read = read or read_configs(model, local)
    family = family_of_pipeline(str(read("").get("_class_name", "")))
    if family is None:
        return None, None
    return family, family.variant(read)


def pixels_per_token(variant) -> int:
    from ralu_schedule.cost import MODELS

    spec = MODELS.get(variant)
    return spec.transformer.pixels_per_token if spec is not None else 16


def processes(world: int):
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
    # the process group is torn down before the interpreter's own teardown: left to it, gloo's
    # threads could still be joinable when their objects went, an abort ("terminate called
    # without an active exception") after a run that had finished, seen on a 'nothing to do' rerun
    import atexit

    atexit.register(state.destroy_process_group)
    return state


def check_agreement(total: int, done: set) -> None:
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


def share(pending, total: int, rank: int, world: int):
    """This process's part of the images still to make: the contiguous range of image indices
    ``[rank N / world, (rank + 1) N / world)``, less those done (every process computes the same)."""
    lo, hi = rank * total // world, (rank + 1) * total // world
    return (job for job in pending if lo <= job.index < hi)


def find_done(plan, out_dir, single, target, wanted, overwrite: bool, compare: bool = False):
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


def things(plan) -> str:
    """What the run writes, for its one-line reports: clips for a video model, else images."""
    return f"{unit(plan)}(s)"


def unit(plan) -> str:
    """``clip`` for a video model's run, else ``image`` (a ``--from`` batch is a list of jobs: the
    image model's, as a clip's recipe records no batch)."""
    return "clip" if getattr(plan, "suffix", ".png") in VIDEO_SUFFIXES else "image"
