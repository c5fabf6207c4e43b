"""The recipe a PNG written by ``ralu generate`` carries: a JSON text chunk ``ralu``
(format ``ralu-image/1``) with everything that decides its pixels, so that ``ralu info``
can print it and ``ralu generate --from`` can regenerate the image."""

from __future__ import annotations

import json

from ralu_schedule._errors import UsageError

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
