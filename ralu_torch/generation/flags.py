"""The ``ralu generate`` (and ``ralu eval``) command line, checked before any weights load and
mostly before torch is imported: the flags' ranges and combinations, a ``--from`` recipe's
fields filled in, the model's default size and frames, every prompt's size against its
schedule, a clip against the rotary table, and the guidance flags against the family."""

from __future__ import annotations

from pathlib import Path

from ralu_schedule import token_grid
from ralu_schedule._errors import UsageError, brief, check_finite
from ralu_schedule._files import VIDEO_SUFFIXES
from ralu_schedule.models import MODEL_INFO
from ralu_schedule.presets import PARAMETERS

from ..backends.families import FAMILIES
from ..jobs import SEED_LIMIT
from ..options import SELECTIONS, UPSAMPLE_MODES
from ..recipe import image_suffixes

#: The recipe fields ``--from`` fills where the command line leaves them out.
FROM_FIELDS = ("model", "prompt", "negative_prompt", "true_cfg", "seed", "height", "width", "guidance_scale",
               "max_sequence_length", "dtype", "num_frames", "fps")
#: the frame rates a clip may be written at: both ends write an MP4 that ffmpeg reads back at that rate
FPS_RANGE = (0.01, 480)
#: The flags whose change makes ``--from`` a new image rather than the recorded batch's member.
BATCH_FIELDS = ("prompt", "negative_prompt", "seed", "height", "width", "num_frames")


def fill_from_recipe(args, recipe: dict):
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


def check_generate_flags(args, many: bool, world: int, recipe: dict) -> None:
    """``ralu generate``'s flags together: what ``many`` images (a prompts file, several images,
    an output directory), ``--from``'s ``recipe``, ``--compare`` and ``world`` processes allow."""
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


def apply_defaults(args, variant, video: bool) -> None:
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


def check_sizes(entries, args, schedules: dict, pixels_per_token: int = 16) -> None:
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


def check_clip_positions(family, variant, read, entries, args, pixels_per_token: int) -> None:
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


def check_guidance_flags(family, entries, args) -> None:
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


def output_formats(image: bool, video: bool) -> str:
    """What ``--out`` needs, for its one-line refusal: the extensions of files that carry their recipe."""
    kinds = [f"{', '.join(image_suffixes())} (images)"] * image + [f"{', '.join(VIDEO_SUFFIXES)} (clips)"] * video
    return f"one of the extensions ralu generate writes, each file with its recipe: {' or '.join(kinds)}"
