"""The recipe a PNG written by ``ralu generate`` carries: a JSON text chunk ``ralu``
(format ``ralu-image/1``) with everything that decides its pixels, so that ``ralu info``
can print it and ``ralu generate --from`` can regenerate the image.

A recipe comes from a file anyone may have written: :func:`check_recipe` holds every field
``--from`` uses to its type and range (one line naming the field otherwise), and the weights it
names load from safetensors only (:mod:`ralu_torch.sources`)."""

from __future__ import annotations

import json
from pathlib import Path

from ralu_schedule._errors import UsageError

RECIPE_KEY = "ralu"        # the PNG text chunk that carries an image's recipe (JSON)
RECIPE_FORMAT = "ralu-image/1"


def sidecar(path) -> Path:
    """Where a clip's recipe lives: ``clip.json`` beside ``clip.mp4``."""
    return Path(path).with_suffix(".json")


def read_recipe(path) -> dict:
    """The recipe a PNG written by ``ralu generate`` carries (a clip's: the JSON file beside it)."""
    from PIL import Image, UnidentifiedImageError

    if Path(path).suffix.lower() == ".mp4":
        side = sidecar(path)
        if not Path(path).is_file():
            raise UsageError(f"cannot read clip {str(path)!r}: no such file")
        try:
            text = side.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{str(path)!r} carries no RALU recipe (ralu generate writes a clip's recipe to "
                             f"{side.name} beside it)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read {str(side)!r}: {err}") from None
        return _parse(text, path)
    try:
        with Image.open(path) as img:
            text = getattr(img, "text", {}).get(RECIPE_KEY)
    except (OSError, UnidentifiedImageError) as err:
        raise UsageError(f"cannot read image {str(path)!r}: {err}") from None
    if text is None:
        raise UsageError(f"{str(path)!r} carries no RALU recipe (PNG files written by ralu generate do)")
    return _parse(text, path)


def _parse(text: str, path) -> dict:
    try:
        recipe = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise UsageError(f"{str(path)!r} has a damaged RALU recipe") from None
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise UsageError(f"{str(path)!r} has a recipe in an unknown format (expected {RECIPE_FORMAT})")
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
