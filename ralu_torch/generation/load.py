"""The device, the pipeline (its weights, LoRAs and offload) and one RALU per schedule of a run."""

from __future__ import annotations

from ralu_schedule._errors import UsageError, brief

from .. import console as _console
from ..sources import pickle_files


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


def load_pipeline(args, device: str, dtype_name: str, loras: list, quiet: bool, many: bool, local=None, trusted=True,
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


def make_ralus(pipe, args, schedules: dict) -> dict:
    """One RALU per schedule of the run; the transformer is compiled once, by the first."""
    from ..pipeline import RALU

    out = {}
    for key, (fixed, _, source) in schedules.items():
        out[key] = RALU(pipe, fixed if fixed is not None else source, parameters=args.parameters,
                        upsample=args.upsample, select=args.select, allow_other_model=args.force,
                        compile=bool(args.compile) and not out)
    return out
