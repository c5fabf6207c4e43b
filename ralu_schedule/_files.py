"""Output files of the command lines: checked before any work, never overwritten by default."""

from __future__ import annotations

import os
from pathlib import Path

from ._errors import UsageError, brief

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".pdf", ".svg")
VIDEO_SUFFIXES = (".mp4",)


def output_path(out, default_name: str, *, overwrite: bool = False, suffixes=IMAGE_SUFFIXES) -> Path:
    """Where to write ``out``: a file path, or a directory to write ``default_name`` into.

    Refused with one line (:class:`UsageError`): a missing or unwritable directory, a name
    without a known extension, or an existing file unless ``overwrite``.
    """
    path = Path(out)
    if path.is_dir():
        path = path / default_name
    check_parent(path, f"cannot write {brief(str(path))}")
    if path.suffix.lower() not in suffixes:
        kind = "a video" if all(s in VIDEO_SUFFIXES for s in suffixes) else "an image"
        raise UsageError(f"{brief(str(path))} needs {kind} extension, one of {', '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise UsageError(f"{brief(str(path))} exists; pass --overwrite to replace it")
    return path


def check_parent(path: Path, what: str) -> Path:
    """The directory ``path`` would be made in: it must exist and be writable; refused with
    ``"{what}: directory ... does not exist"`` (or ``is not writable``)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{what}: directory {brief(str(parent))} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{what}: directory {brief(str(parent))} is not writable")
    return parent
