"""``ralu``: generate images with RALU from a diffusers model id or local path.

    ralu generate --model black-forest-labs/FLUX.1-dev --prompt "a tiny puppy" \\
                  --preset flux-dev-7x --height 1024 --width 1024 --seed 0 --out image.png

Errors in the arguments print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ralu_schedule import PRESETS, token_grid
from ralu_schedule._errors import UsageError, check_finite
from ralu_schedule._files import output_path
from ralu_schedule.presets import PARAMETERS

from .options import DTYPES, SELECTIONS, UPSAMPLE_MODES

PROG = "ralu"
NO_TORCH = ("the ralu command needs torch and diffusers, which are not installed: install the torch build "
            "for your platform, then pip install 'ralu[torch]'")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():

    parser = _Parser(prog=PROG, description="RALU sampling for diffusers pipelines.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("generate", help="generate an image")
    g.add_argument("--model", default=None, help="diffusers model id or local path (FLUX.1 dev or schnell, SD3, SD3.5)")
    g.add_argument("--prompt", default=None)
    g.add_argument("--from", dest="from_image", default=None, metavar="IMAGE",
                   help="regenerate a PNG written by ralu generate from its recipe (other flags override it)")
    g.add_argument("--negative-prompt", default=None,
                   help="SD3: classifier-free guidance; FLUX: true CFG, with --true-cfg > 1")
    g.add_argument("--true-cfg", type=float, default=None, help="FLUX's true_cfg_scale (> 1 turns true CFG on)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help=f"one of {', '.join(sorted(PRESETS))} (default flux-dev-7x)")
    src.add_argument("--schedule", help="a JSON schedule file (ralu-schedule ... --json)")
    g.add_argument("--parameters", choices=PARAMETERS, default=PARAMETERS[0])
    g.add_argument("--upsample", choices=UPSAMPLE_MODES, default=UPSAMPLE_MODES[0])
    g.add_argument("--select", choices=SELECTIONS, default=SELECTIONS[0],
                   help="which tokens a partial transition upsamples (authors: the paper code's rule)")
    g.add_argument("--height", type=int, default=None, help="default 1024")
    g.add_argument("--width", type=int, default=None, help="default 1024")
    g.add_argument("--seed", type=int, default=None, help="default 0")
    g.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's (FLUX 3.5, SD3 7.0)")
    g.add_argument("--max-sequence-length", type=int, default=None, help="default: the pipeline's (FLUX 512, SD3 256)")
    g.add_argument("--device", default=None, help="cuda, cpu, mps, ... (default: cuda if available)")
    g.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on cuda, else float32")
    g.add_argument("--out", default="image.png", help="an image file, or a directory to write image.png into")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument("--force", action="store_true", help="run a preset made for another model family")

    i = sub.add_parser("info", help="print the recipe a PNG written by ralu generate carries")
    i.add_argument("image")

    d = sub.add_parser("demo", help="RALU on the analytic Gaussian backend (no weights): writes a comparison figure")
    d.add_argument("--preset", default="flux-dev-7x", help=f"one of {', '.join(sorted(PRESETS))}")
    d.add_argument("--seeds", type=int, default=32)
    d.add_argument("--size", type=int, default=64, help="field side in pixels (multiple of 4)")
    d.add_argument("--out", default="ralu_demo.png", help="an image file, or a directory to write ralu_demo.png into")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def run_demo(args):
    from ralu_schedule import get_preset

    get_preset(args.preset)
    if args.seeds < 2:
        raise UsageError(f"--seeds must be >= 2, got {args.seeds}")
    if args.size < 8 or args.size % 4:
        raise UsageError(f"--size must be a multiple of 4 and >= 8, got {args.size}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("the demo figure needs matplotlib: pip install 'ralu[plot]'") from None
    out = output_path(args.out, "ralu_demo.png", overwrite=args.overwrite)
    from .analysis.demo import demo

    results = demo(str(out), args.preset, seeds=args.seeds, size=args.size)
    print(f"{'run':<36} {'FD x1e3':>8} {'variance':>9}")
    for label, m in results.items():
        print(f"{label:<36} {1e3 * m['fd']:>8.2f} {m['var']:>9.3f}")
    print(f"wrote {out}")


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


RECIPE_KEY = "ralu"        # the PNG text chunk that carries an image's recipe (JSON)
RECIPE_FORMAT = "ralu-image/1"


def read_recipe(path) -> dict:
    """The recipe a PNG written by ``ralu generate`` carries."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            text = getattr(img, "text", {}).get(RECIPE_KEY)
    except (OSError, UnidentifiedImageError) as err:
        raise UsageError(f"cannot read image {str(path)!r}: {err}") from None
    if text is None:
        raise UsageError(f"{str(path)!r} carries no RALU recipe (PNG files written by ralu generate do)")
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError:
        raise UsageError(f"{str(path)!r} has a damaged RALU recipe") from None
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise UsageError(f"{str(path)!r} has a recipe in an unknown format (expected {RECIPE_FORMAT})")
    return recipe


def run_info(args):
    print(json.dumps(read_recipe(args.image), indent=2))


def _from_recipe(args):
    """Fill the flags not given from ``--from IMAGE``'s recipe."""
    recipe = read_recipe(args.from_image) if args.from_image else {}
    if recipe and (args.preset or args.schedule):
        raise UsageError("--from takes the image's schedule; leave out --preset and --schedule")
    for key in ("model", "prompt", "negative_prompt", "true_cfg", "seed", "height", "width", "guidance_scale",
                "max_sequence_length", "dtype"):
        if getattr(args, key) is None and recipe.get(key) is not None:
            setattr(args, key, recipe[key])
    for key in ("upsample", "select", "parameters"):
        if key in recipe:
            setattr(args, key, recipe[key])
    if args.model is None or args.prompt is None:
        raise UsageError("generate needs --model and --prompt (or --from IMAGE)")
    args.height = 1024 if args.height is None else args.height
    args.width = 1024 if args.width is None else args.width
    args.seed = 0 if args.seed is None else args.seed
    return recipe.get("schedule")


def generate(args):
    import torch
    from diffusers import DiffusionPipeline

    from ralu_torch import RALU

    from .pipeline import _check_family, _parse_schedule

    # check the output, the schedule, the size, the numbers and the device before loading any weights
    recipe_schedule = _from_recipe(args)
    out_path = output_path(args.out, "image.png", overwrite=args.overwrite)
    schedule_arg = recipe_schedule or args.schedule or args.preset or "flux-dev-7x"
    fixed, layout = _parse_schedule(schedule_arg, args.parameters)
    token_grid(args.height, args.width, downsampling=(fixed.layout if fixed is not None else layout).downsampling)
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must lie in [0, 2**63), got {args.seed}")
    if args.guidance_scale is not None:
        check_finite("--guidance-scale", args.guidance_scale)
    if args.true_cfg is not None:
        check_finite("--true-cfg", args.true_cfg)
    device = check_device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    try:    # the pipeline's class from its model_index.json alone, before any weights
        config = DiffusionPipeline.load_config(args.model)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load model {args.model!r}: {str(err).splitlines()[0]}") from None
    cls = str(config.get("_class_name", ""))
    family = "flux" if cls.startswith("Flux") else "sd3" if cls.startswith("StableDiffusion3") else None
    if family is not None:
        _check_family(fixed if fixed is not None else schedule_arg, family, args.force)
    try:
        pipe = DiffusionPipeline.from_pretrained(args.model, dtype=dtype)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load model {args.model!r}: {str(err).splitlines()[0]}") from None
    pipe = pipe.to(device)
    ralu = RALU(pipe, fixed if fixed is not None else schedule_arg, parameters=args.parameters, upsample=args.upsample,
                select=args.select, allow_other_model=args.force)
    gen = torch.Generator(device="cpu" if device == "mps" else device).manual_seed(args.seed)
    extra = {} if args.negative_prompt is None else {"negative_prompt": args.negative_prompt}
    if args.true_cfg is not None:
        extra["true_cfg_scale"] = args.true_cfg
    out = ralu(args.prompt, height=args.height, width=args.width, generator=gen,
               guidance_scale=args.guidance_scale, max_sequence_length=args.max_sequence_length, **extra)
    import diffusers
    from PIL.PngImagePlugin import PngInfo

    import ralu_schedule

    recipe = {"format": RECIPE_FORMAT, "model": args.model, "prompt": args.prompt,
              "negative_prompt": args.negative_prompt, "true_cfg": args.true_cfg, "seed": args.seed,
              "height": args.height, "width": args.width, "guidance_scale": ralu.guidance_scale,
              "max_sequence_length": args.max_sequence_length, "dtype": str(dtype).replace("torch.", ""),
              "device": str(device), "upsample": args.upsample, "select": args.select,
              "parameters": args.parameters, "schedule": out.schedule.to_dict(),
              "versions": {"ralu": ralu_schedule.__version__, "diffusers": diffusers.__version__,
                           "torch": torch.__version__}}
    info = PngInfo()
    info.add_text(RECIPE_KEY, json.dumps(recipe))
    info.add_text("prompt", args.prompt)
    out.images[0].save(out_path, pnginfo=info if out_path.suffix.lower() == ".png" else None)
    print(f"wrote {out_path} ({args.width}x{args.height}, tokens per stage {out.stage_tokens})")


def main(argv=None) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"{PROG}: error: {NO_TORCH}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
        if args.command == "generate":
            generate(args)
        elif args.command == "demo":
            run_demo(args)
        elif args.command == "info":
            run_info(args)
    except ValueError as err:              # UsageError included
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
