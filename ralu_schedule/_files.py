"""Files of the command lines: outputs checked before any work and never overwritten by
default, path names the file system can hold, and text read the same way everywhere."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from ._errors import UsageError, brief

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".pdf", ".svg")
VIDEO_SUFFIXES = (".mp4",)

#: How every text file a command line reads (prompts, schedules, recipes beside clips, configs)
#: is decoded: UTF-8, a leading byte-order mark dropped (editors on Windows write one, and it
#: would otherwise become part of the first line: a JSON line's first key, a prompt's first word).
TEXT_ENCODING = "utf-8-sig"

#: Bytes of names a command may write below an output directory it is given: ``ralu eval``'s
#: ``/images/<configuration>/`` and a temporary name (:func:`temporary`, at most 35 bytes)
#: is the deepest, 113 bytes (a configuration's folder name is at most 69); ``ralu generate``'s
#: manifest parts, lock and temporary files are shorter.
BELOW_OUTPUT_DIR = 160

#: Used where the system cannot say (no ``pathconf``): Linux's values.
DEFAULT_NAME_MAX, DEFAULT_PATH_MAX = 255, 4096


def read_text(path) -> str:
    """The text of ``path`` (:data:`TEXT_ENCODING`); ``OSError`` and ``UnicodeDecodeError`` as
    ``Path.read_text`` raises them, for the caller's one-line message."""
    return Path(path).read_text(encoding=TEXT_ENCODING)


def _limits(path: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the file system ``path`` would be on: asked of its nearest
    existing ancestor (``os.path.isdir`` never raises, whatever the name)."""
    probe = path.parent
    while str(probe) not in ("", ".", probe.anchor) and not os.path.isdir(probe):
        probe = probe.parent
    try:
        return os.pathconf(probe, "PC_NAME_MAX"), os.pathconf(probe, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):
        return DEFAULT_NAME_MAX, DEFAULT_PATH_MAX


def check_path(path, what: str, *, names=(), below: int = 0) -> Path:
    """``path`` if the file system can hold it, else one line (:class:`UsageError`) naming it
    and the limit: a name (a path component) longer than NAME_MAX bytes, or the whole path
    longer than PATH_MAX - 1 bytes (the system's buffer holds the final NUL too). ``names``:
    other names the command writes beside ``path`` (a temporary file, a recipe beside a clip),
    held to the same limits; ``below``: bytes of names written beneath ``path`` (a directory).
    Checked on the path as given, which is what the system is handed, before anything touches
    it: ``Path.exists`` itself raises on a name too long."""
    path = Path(path)
    name_max, path_max = _limits(path)
    for part in (*path.parts, *(Path(n).name for n in names)):
        size = len(os.fsencode(part))
        if size > name_max:
            raise UsageError(f"{what} {brief(str(path))}: the name {brief(part)} is {size} bytes long; this file "
                             f"system allows at most {name_max} bytes a name (NAME_MAX)")
    longest = max([len(os.fsencode(str(path)))] + [len(os.fsencode(str(path.with_name(Path(n).name))))
                                                      for n in names]) + below
    if longest > path_max - 1:
        more = f", with the {below} bytes of names written in it," if below else ""
        raise UsageError(f"{what} {brief(str(path))}: the path{more} would be {longest} bytes long; this file "
                         f"system allows at most {path_max - 1} bytes a path (PATH_MAX {path_max})")
    return path


def temporary(path, suffix: str = "") -> Path:
    """Where ``path`` is written before it is renamed into place: a hidden name in the same
    directory, of a bounded length whatever ``path``'s (a name near NAME_MAX has room for no
    prefix or suffix), unique per process and target. ``suffix``: kept for writers that pick
    the format by it (ffmpeg)."""
    path = Path(path)
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:12]
    return path.with_name(f".ralu-{os.getpid()}-{digest}.tmp{suffix}")


#: ``check_path(..., names=...)`` of an output that :func:`temporary` writes first: the
#: longest temporary name (a seven-digit process id, the largest Linux allows).
TEMPORARY_NAME = f".ralu-{'9' * 7}-{'0' * 12}.tmp.json"


def output_path(out, default_name: str, *, overwrite: bool = False, suffixes=IMAGE_SUFFIXES,
                what: str = "cannot write", needs: str | None = None) -> Path:
    """Where to write ``out``: a file path, or a directory to write ``default_name`` into.

    Refused with one line (:class:`UsageError`): a name or path too long for the file system,
    a missing or unwritable directory, a name without one of ``suffixes`` (the line says what
    it ``needs``: by default, an image or video extension, one of them), or an existing file
    unless ``overwrite``.
    """
    path = check_path(out, what)
    if path.is_dir():
        path = path / default_name
    check_path(path, what, names=[TEMPORARY_NAME])
    check_parent(path, f"{what} {brief(str(path))}")
    if path.suffix.lower() not in suffixes:
        if needs is None:
            kind = "a video" if all(s in VIDEO_SUFFIXES for s in suffixes) else "an image"
            needs = f"{kind} extension, one of {', '.join(suffixes)}"
        raise UsageError(f"{brief(str(path))} needs {needs}")
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


def too_long(err: OSError) -> str | None:
    """The one line for an ``OSError`` that a path too long for the file system raised where no
    check came first (a name the system lengthened: a symbolic link's target), else None."""
    if err.errno != errno.ENAMETOOLONG:
        return None
    name = os.fsdecode(err.filename) if isinstance(err.filename, (str, bytes)) else "."
    name_max, path_max = _limits(Path(name))
    return (f"{brief(name)}: a name or the path is longer than this file system allows (NAME_MAX {name_max} bytes "
            f"a name, PATH_MAX {path_max} bytes a path)")
