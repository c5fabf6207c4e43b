"""The recipe an image written by ``ralu generate`` carries, JSON (format ``ralu-image/1``)
with everything that decides its pixels, so that ``ralu info`` can print it and ``ralu
generate --from`` can regenerate the image: in a PNG, a text chunk ``ralu``; in a JPEG or a
WebP, the EXIF ``UserComment`` (ASCII JSON: every other character escaped); a clip's, in a
JSON file beside it. ``ralu generate`` writes only the formats that carry it
(:func:`image_suffixes`).

A recipe comes from a file anyone may have written: :func:`check_recipe` holds every field
``--from`` uses to its type and range (one line naming the field otherwise), and the weights it
names load from safetensors only (:mod:`ralu_torch.sources`).

What a run records is built here too, in one place: :func:`base_recipe` (the run's flags),
:func:`job_recipe` (an image's own fields) and :func:`manifest_line` (its manifest line)."""

from __future__ import annotations

import json
from pathlib import Path

from ralu_schedule._errors import UsageError, brief
from ralu_schedule._files import check_path, read_text

RECIPE_KEY = "ralu"        # the PNG text chunk that carries an image's recipe (JSON)
RECIPE_FORMAT = "ralu-image/1"

#: The image formats that carry a recipe, by extension, and how each is written: PNG
#: losslessly, JPEG and WebP at quality 95 (Pillow's defaults, 75 and 80, blur fine detail).
FORMATS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}), ".jpeg": ("JPEG", {"quality": 95}),
           ".webp": ("WEBP", {"quality": 95})}
#: A JPEG's EXIF is one APP1 segment: at most 65,533 bytes (Pillow refuses more).
ROOM = {"JPEG": 65533}
_ASCII = b"ASCII\0\0\0"     # EXIF UserComment's character-code prefix


def image_suffixes() -> tuple:
    """The extensions ``ralu generate`` writes: those of :data:`FORMATS` that this Pillow
    writes as that format (a Pillow built without WebP leaves ``.webp`` out)."""
    from PIL import Image

    known = Image.registered_extensions()
    return tuple(s for s, (fmt, _) in FORMATS.items() if known.get(s) == fmt and fmt in Image.SAVE)


def needs_room(path) -> bool:
    """Whether ``path``'s format holds a recipe of a bounded size (JPEG)."""
    return FORMATS.get(Path(path).suffix.lower(), ("PNG",))[0] in ROOM


def save_options(path, recipe: dict) -> dict:
    """``Image.save``'s keywords that write ``path`` in its format (by extension, one of
    :func:`image_suffixes`) with ``recipe`` in its metadata; a recipe too long for the format is
    one line."""
    from PIL import ExifTags, Image

    suffix = Path(path).suffix.lower()
    if suffix not in image_suffixes():
        raise UsageError(f"{brief(str(path))}: ralu generate writes images that carry their recipe: "
                         f"{', '.join(image_suffixes())}")
    fmt, options = FORMATS[suffix]
    text = json.dumps(recipe)                  # ensure_ascii: one byte a character, any prompt
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text(RECIPE_KEY, text)
        info.add_text("prompt", recipe["prompt"])
        return {"format": fmt, "pnginfo": info, **options}
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = _ASCII + text.encode("ascii")
    size = len(exif.tobytes())
    if size > ROOM.get(fmt, size):
        raise UsageError(f"{brief(str(path))}: this image's recipe takes {size} bytes of EXIF and a {fmt} holds at "
                         f"most {ROOM[fmt]} (its prompts are long); write a PNG or WebP instead")
    return {"format": fmt, "exif": exif, **options}


def sidecar(path) -> Path:
    """Where a clip's recipe lives: ``clip.json`` beside ``clip.mp4``."""
    return Path(path).with_suffix(".json")


def read_recipe(path) -> dict:
    """The recipe an image written by ``ralu generate`` carries (a clip's: the JSON file beside it)."""
    from PIL import Image, UnidentifiedImageError

    check_path(path, "cannot read")
    if Path(path).suffix.lower() == ".mp4":
        side = sidecar(path)
        if not Path(path).is_file():
            raise UsageError(f"cannot read clip {brief(str(path))}: no such file")
        try:
            text = read_text(side)
        except FileNotFoundError:
            raise UsageError(f"{brief(str(path))} carries no RALU recipe (ralu generate writes a clip's recipe to "
                             f"{side.name} beside it)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read {brief(str(side))}: {err}") from None
        return _parse(text, path)
    try:
        with Image.open(path) as img:
            text = _embedded(img)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
        raise UsageError(f"cannot read image {brief(str(path))}: {err}") from None
    if text is None:
        raise UsageError(f"{brief(str(path))} carries no RALU recipe (the PNG, JPEG and WebP files ralu generate "
                         "writes do)")
    return _parse(text, path)


def _embedded(img):
    """The recipe text ``img`` carries, or None: a PNG's ``ralu`` chunk, else an EXIF
    UserComment that is ASCII JSON."""
    from PIL import ExifTags

    text = getattr(img, "text", {}).get(RECIPE_KEY)
    if text is not None or img.format == "PNG":
        return text
    comment = img.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if not isinstance(comment, bytes) or not comment.startswith(_ASCII):
        return None
    try:
        return comment[len(_ASCII):].decode("ascii")
    except UnicodeDecodeError:
        return None


def _parse(text: str, path) -> dict:
    try:
        recipe = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise UsageError(f"{brief(str(path))} has a damaged RALU recipe") from None
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise UsageError(f"{brief(str(path))} has a recipe in an unknown format (expected {RECIPE_FORMAT})")
    return recipe


def _is(value, kinds) -> bool:
    """``value`` has one of ``kinds`` (a bool is an int only where ``bool`` is named)."""
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


#: The fields ``--from`` reads and their types (each may be absent or null).
FIELDS = {"model": (str,), "prompt": (str,), "negative_prompt": (str,), "true_cfg": (int, float), "seed": (int,),
          "height": (int,), "width": (int,), "guidance_scale": (int, float), "max_sequence_length": (int,),
          "dtype": (str,), "upsample": (str,), "select": (str,), "parameters": (str,), "compile": (bool,),
          "schedule": (dict,), "schedule_source": (str,), "loras": (list,), "batch": (dict,),
          "num_frames": (int,), "fps": (int, float)}
LONGEST = 100_000        # characters of any one string field


def check_recipe(recipe: dict, path) -> dict:
    """``recipe`` if every field ``--from`` uses has its type and a sane size, else one line."""
    where = str(path)[:200]
    for key, kinds in FIELDS.items():
        value = recipe.get(key)
        if value is not None and not _is(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise UsageError(f"{where!r}: its recipe's {key!r} must be {names} (or null), got {type(value).__name__}")
        if isinstance(value, str) and len(value) > LONGEST:
            raise UsageError(f"{where!r}: its recipe's {key!r} is {len(value)} characters long (at most {LONGEST})")
    for k, lora in enumerate(recipe.get("loras") or []):
        if not (isinstance(lora, list) and len(lora) == 2 and isinstance(lora[0], str) and _is(lora[1], (int, float))):
            raise UsageError(f"{where!r}: its recipe's loras[{k}] must be [path, scale]")
    batch = recipe.get("batch")
    if batch is not None:
        members, index = batch.get("members"), batch.get("index")
        ok = (isinstance(members, list) and 0 < len(members) <= 1024 and _is(index, (int,))
              and 0 <= index < len(members)
              and all(isinstance(m, dict) and isinstance(m.get("prompt"), str) and _is(m.get("seed"), (int,))
                      and (m.get("negative_prompt") is None or isinstance(m.get("negative_prompt"), str))
                      for m in members))
        if not ok:
            raise UsageError(f"{where!r}: its recipe's batch must be {{members: [{{prompt, seed, negative_prompt}}, "
                             "...] (at most 1024), index}}")
    return recipe


# -- what a run records -------------------------------------------------------------------------

def base_recipe(args, device: str, dtype_name: str, loras: list) -> dict:
    """What every image of a run records of the run's flags (``args`` as ``ralu generate``
    parses them), its device, dtype and LoRAs."""
    return {"format": RECIPE_FORMAT, "model": args.model, "true_cfg": args.true_cfg,
            "guidance_scale": args.guidance_scale, "max_sequence_length": args.max_sequence_length,
            "dtype": dtype_name, "device": device, "upsample": args.upsample, "select": args.select,
            "parameters": args.parameters, "loras": loras, "compile": bool(args.compile),
            **({} if args.num_frames is None else {"num_frames": args.num_frames, "fps": args.fps})}


def job_recipe(base: dict, job, schedule) -> dict:
    """The recipe of ``job`` (a :class:`~ralu_torch.jobs.Job`) before it runs: the run's
    ``base`` and the job's own fields; ``schedule`` is ``(fixed schedule or None, layout,
    source)``. What the run adds after sampling (the schedule solved, the versions) comes later."""
    fixed, _, source = schedule
    return {**base, "prompt": job.prompt, "negative_prompt": job.negative_prompt, "seed": job.seed,
            "height": job.height, "width": job.width, "schedule": None if fixed is None else fixed.to_dict(),
            "schedule_source": str(source)}


def manifest_line(rec: dict) -> dict:
    """A manifest line's description of an image (timings added by the run that made it)."""
    sched = rec.get("schedule") or {}
    return {"prompt": rec.get("prompt"), "negative_prompt": rec.get("negative_prompt"), "seed": rec.get("seed"),
            "width": rec.get("width"), "height": rec.get("height"), "model": rec.get("model"),
            "schedule": sched, "preset": (sched.get("info") or {}).get("preset"), "dtype": rec.get("dtype"),
            "device": rec.get("device"), "loras": rec.get("loras"), "seconds": None, "tflops": None,
            **({"num_frames": rec["num_frames"], "fps": rec.get("fps")} if rec.get("num_frames") is not None else {})}
