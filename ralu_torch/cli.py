"""``ralu``: generate images with RALU from a diffusers model id or local path.

    ralu generate --model black-forest-labs/FLUX.1-dev --prompt "a tiny puppy" \\
                  --preset flux-dev-7x --height 1024 --width 1024 --seed 0 --out image.png

Errors in the arguments print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

from ralu_schedule import PRESETS
from ralu_schedule._errors import UsageError
from ralu_schedule._files import output_path
from ralu_schedule._main import run_main
from ralu_schedule.presets import PARAMETERS

from .console import session
from .options import DTYPES, OFFLOAD, SELECTIONS, UPSAMPLE_MODES

PROG = "ralu"
NO_TORCH = ("the ralu command needs torch and diffusers, which are not installed: install the torch build "
            "for your platform, then pip install 'ralu[torch]'")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)          # --num-image is not --num-images
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(message)


def build_parser():

    parser = _Parser(prog=PROG, description="RALU sampling for diffusers pipelines.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    g = sub.add_parser("generate", help="generate an image")
    g.add_argument("--model", default=None, help="diffusers model id or local path: FLUX.1 dev or schnell, SD3, SD3.5, "
                   "FLUX.2 [dev] or [klein], Qwen-Image, Z-Image(-Turbo), Chroma (docs/backends.md)")
    g.add_argument("--prompt", default=None)
    g.add_argument("--from", dest="from_image", default=None, metavar="IMAGE",
                   help="regenerate an image (or clip) written by ralu generate from its recipe (other flags "
                        "override it)")
    g.add_argument("--negative-prompt", default=None,
                   help="guides as the pipeline does: SD3, Chroma (guidance > 1) and Z-Image (guidance > 0) by CFG; "
                        "FLUX.1 and Qwen-Image by true CFG with --true-cfg > 1; FLUX.2 takes none")
    g.add_argument("--true-cfg", type=float, default=None,
                   help="FLUX.1's and Qwen-Image's true_cfg_scale (> 1 turns true CFG on)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help=f"one of {', '.join(sorted(PRESETS))} (default: the model's own, "
                     "read from its configs: flux-dev-7x, flux-schnell-16x, sd3-medium-7x, qwen-image-7x, ...)")
    src.add_argument("--schedule", help="a JSON schedule file (ralu-schedule ... --json)")
    # None: not given (--from's recipe, else the first choice, fills it)
    g.add_argument("--parameters", choices=PARAMETERS, default=None,
                   help="a preset's h_k and c: the published ones where they exist, else solved (default); "
                        "the published ones or an error (authors); solved anew at call time for the model and "
                        "size (optimised)")
    g.add_argument("--upsample", choices=UPSAMPLE_MODES, default=None, help=f"default {UPSAMPLE_MODES[0]}")
    g.add_argument("--select", choices=SELECTIONS, default=None,
                   help=f"which tokens a partial transition upsamples (default {SELECTIONS[0]}; authors: the paper "
                   "code's rule)")
    g.add_argument("--height", type=int, default=None, help="default 1024 (Wan: 480; TI2V-5B: 704)")
    g.add_argument("--width", type=int, default=None, help="default 1024 (Wan: 832; TI2V-5B: 1280)")
    g.add_argument("--num-frames", type=int, default=None,
                   help="video models (Wan): frames per clip, 4k + 1 (default the model's: 81, TI2V-5B 121)")
    g.add_argument("--fps", type=float, default=None,
                   help="video models: the MP4's frame rate (default the model's: 16, TI2V-5B 24)")
    g.add_argument("--seed", type=int, default=None, help="default 0")
    g.add_argument("--guidance-scale", type=float, default=None,
                   help="default: the pipeline's (FLUX.1 3.5, SD3 7.0, FLUX.2 4.0, Z-Image and Chroma 5.0)")
    g.add_argument("--max-sequence-length", type=int, default=None,
                   help="default: the pipeline's (SD3 256, the others 512)")
    g.add_argument("--device", default=None, help="cuda, cpu, mps, ... (default: cuda if available)")
    g.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on cuda, else float32")
    g.add_argument("--out", default=None, help="one image: a file, or a directory to write image.png into "
                   "(default image.png; a video model: clip.mp4, its recipe in clip.json beside it)")
    g.add_argument("--overwrite", action="store_true", help="replace existing images whose recipe differs")
    g.add_argument("--force", action="store_true", help="run a preset made for another model family")
    many = g.add_argument_group("many images")
    many.add_argument("--prompts", default=None, metavar="FILE",
                      help="a prompt per line, or JSON lines with prompt, seed, size, schedule, negative_prompt")
    many.add_argument("--num-images", type=int, default=None, help="images per prompt (default 1); image i gets seed "
                      "SEED + i")
    many.add_argument("--batch-size", type=int, default=1, help="images per sampler call (default 1)")
    many.add_argument("--out-dir", default=None, metavar="DIR",
                      help="write DIR/00000.png, DIR/00001.png, ... and DIR/manifest.jsonl; a rerun skips done images")
    model = g.add_argument_group("model")
    model.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                       help="load LoRA weights (a file, a folder or a hub id) at SCALE (default 1); repeatable")
    model.add_argument("--offload", choices=OFFLOAD, default="none",
                       help="model: whole models to the device in turn; sequential: layer by layer (least memory)")
    model.add_argument("--compile", action="store_true", help="torch.compile the transformer's blocks")
    g.add_argument("--compare", action="store_true",
                   help="one picture: the full-step baseline beside RALU, with wall times and TFLOPs under them")
    g.add_argument("--baseline-steps", type=int, default=None,
                   help="--compare's baseline steps (default: the model's stock run: 50 for FLUX.1-dev, 4 for "
                        "FLUX.1-schnell and FLUX.2 [klein], 35 for Chroma, 9 for Z-Image-Turbo, ...)")

    i = sub.add_parser("info", help="print the recipe an image or clip written by ralu generate carries")
    i.add_argument("image")

    _eval_parser(sub)

    d = sub.add_parser("demo", help="RALU on the analytic Gaussian backend (no weights): writes a comparison figure")
    d.add_argument("--preset", default="flux-dev-7x", help=f"one of {', '.join(sorted(PRESETS))}")
    d.add_argument("--seeds", type=int, default=32)
    d.add_argument("--size", type=int, default=64, help="field side in pixels (multiple of 4)")
    d.add_argument("--out", default="ralu_demo.png", help="an image file, or a directory to write ralu_demo.png into")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    for command in sub.choices.values():
        command.add_argument("-q", "--quiet", action="store_true",
                             help="print nothing but errors and the final result line (no progress, no notes)")
    return parser


def _eval_parser(sub) -> None:
    from .evaluation.configs import DATA, DEFAULT_CLIP, DEFAULT_CLIP_IQA, METRICS

    e = sub.add_parser("eval", help="generate, time and score several configurations on the same prompts and seeds "
                       "(docs/eval.md)")
    e.add_argument("--model", required=True, help="diffusers model id or local path (as ralu generate), or 'analytic' "
                   "for the exact Gaussian backend (nothing downloaded)")
    e.add_argument("--configs", nargs="+", default=None, metavar="CONFIG",
                   help="baseline:STEPS, a preset or a schedule file, each optionally +CACHE (taylorseer:interval=3,"
                        "warmup=2, fbcache:0.08, pab:2), +SOLVER (euler, heun, dpm-multistep, unipc), +OPTION "
                        "(upsample:token, kept-noise:unit, parameters:optimised, select:authors); the first is the "
                        "reference of paired metrics and speed-ups (required with a model)")
    e.add_argument("--prompts", default=None, metavar="FILE",
                   help="a prompt per line, or JSON lines with prompt, seed, size (default: the built-in list)")
    e.add_argument("--out-dir", required=True, metavar="DIR",
                   help="DIR/images/<configuration>/, DIR/eval.csv, eval.md, scores.csv, eval.png, contact_sheet.png")
    e.add_argument("--height", type=int, default=None, help="default 1024 (analytic: the field's side, default 64)")
    e.add_argument("--width", type=int, default=None, help="default 1024")
    e.add_argument("--seed", type=int, default=0, help="image i gets seed SEED + i (default 0)")
    e.add_argument("--num-images", type=int, default=None,
                   help="images per prompt (default 1; analytic: seeds per row, default 128)")
    e.add_argument("--batch-size", type=int, default=1, help="images per sampler call (default 1)")
    e.add_argument("--dtype", choices=DTYPES, default=None, help="default: bfloat16 on cuda, else float32")
    e.add_argument("--device", default=None, help="cuda, cpu, mps, ... (default: cuda if available)")
    e.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's")
    e.add_argument("--max-sequence-length", type=int, default=None, help="default: the pipeline's")
    e.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help=f"any of {', '.join(METRICS)} (default all; one whose model cannot load is skipped; the "
                        "analytic backend has its own)")
    e.add_argument("--clip-model", default=DEFAULT_CLIP, help=f"CLIP for the CLIP score (default {DEFAULT_CLIP})")
    e.add_argument("--clip-iqa-model", default=DEFAULT_CLIP_IQA,
                   help="CLIP for CLIP-IQA: clip_iqa (the paper's, needs piq; default) or a transformers CLIP")
    e.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (default 3)")
    e.add_argument("--sheet", type=int, default=4, help="prompts on the contact sheet (default 4; 0: none)")
    e.add_argument("--overwrite", action="store_true", help="replace the results of another recipe (or not written "
                   "by ralu eval) in --out-dir, and images whose recipe differs")
    e.add_argument("--force", action="store_true", help="run a preset made for another model family")
    a = e.add_argument_group("analytic backend")
    a.add_argument("--data", nargs="+", choices=DATA, default=list(DATA), help="default both")
    a.add_argument("--exponent", type=float, default=2.0, help="the stationary field's spectrum exponent")
    a.add_argument("--texture-size", type=int, default=32, help="the texture field's side (dense covariances)")
    # what ralu generate's machinery reads and eval does not offer
    e.set_defaults(true_cfg=None, negative_prompt=None, compile=False, offload="none", from_image=None, lora=[],
                   num_frames=None, fps=None)


def run_demo(args, console):
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
    console.say(f"{'run':<36} {'FD x1e3':>8} {'variance':>9}")
    for label, m in results.items():
        console.say(f"{label:<36} {1e3 * m['fd']:>8.2f} {m['var']:>9.3f}")
    console.result(f"wrote {out}")


def run_eval(args, console) -> None:
    """``ralu eval``; under ``--quiet`` only its last line (what it wrote) is printed."""
    from .evaluation.run import evaluate

    if not console.quiet:
        evaluate(args, say=console.say)
        return
    last = [""]

    def keep(text=""):
        last[0] = text

    evaluate(args, say=keep)
    console.result(last[0])


def run_info(args):
    from .recipe import read_recipe

    print(json.dumps(read_recipe(args.image), indent=2))


def _installed(name: str) -> bool:
    """Whether ``name`` can be imported, found without importing it (torch takes seconds)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def main(argv=None) -> int:
    if not (_installed("torch") and _installed("diffusers")):
        print(f"{PROG}: error: {NO_TORCH}", file=sys.stderr)      # found, not imported: checks stay fast
        return 2
    from .generate import RunFailure   # torch-free module: importing it here costs nothing

    def body():
        args = build_parser().parse_args(argv)
        with session(quiet=args.quiet) as console:
            if args.command == "generate":
                from .generate import generate

                generate(args)
            elif args.command == "eval":
                args.argv = list(sys.argv[1:] if argv is None else argv)
                run_eval(args, console)
            elif args.command == "demo":
                run_demo(args, console)
            elif args.command == "info":
                run_info(args)

    return run_main(PROG, body, failures=(RunFailure,))     # a run that stopped part way: one line, exit 1
