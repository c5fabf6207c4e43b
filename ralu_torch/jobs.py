"""The work of one ``ralu generate`` run: which images, with which seeds, under which names.

Everything here is decided before any model loads, from the command line and the prompts
file alone, so that a bad line, a name clash or an unwritable directory costs no time:

- ``read_prompts``: a prompts file, one prompt per line, or JSON lines
  ``{"prompt": ..., "seed": ..., "size": "WIDTHxHEIGHT", "schedule": ..., "negative_prompt": ...}``,
  and for an image-conditioned model its files (``"image"``, ``"mask"``, ...: the keys of
  :func:`ralu_torch.backends.families.input_flags`, paths relative to the prompts file's
  folder) and ``"strength"``.
- :class:`Plan`: the run's images, one :class:`Job` per image computed when asked for (a
  run of 10^9 images costs no more to plan than one). Image ``i`` (counting from 0 over the
  whole run, ``--num-images`` per prompt, in file order) gets seed ``S + i`` for ``--seed S``;
  a line with its own ``"seed": s`` gives its ``k``-th image seed ``s + k``. Image ``i`` is
  written to ``DIR/{i:05d}.png`` (``.mp4`` for clips).
- ``identity``: what an image's recipe must say for an existing file to count as this job
  done (rerunning a command skips it), and ``manifest`` upkeep (``manifest.jsonl``, one JSON
  line per image, merged from every process's part at the end of a run).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ralu_schedule._errors import UsageError, brief
from ralu_schedule._files import BELOW_OUTPUT_DIR, check_parent, check_path, read_text
from ralu_schedule.strength import check_strength

from .backends.families import input_flags

MANIFEST = "manifest.jsonl"
PART = "manifest.part-{rank}.jsonl"      # one per process of a multi-process run, merged at its end
SEED_LIMIT = 2**63
#: A prompts file's files (an image-conditioned model's inputs), by key: every key of the families' tables.
FILE_KEYS = tuple(input_flags())
LINE_KEYS = ("prompt", "seed", "size", "width", "height", "schedule", "negative_prompt", *FILE_KEYS, "strength")


@dataclass(frozen=True)
class Job:
    """One image: ``index`` is its place in the run, ``file`` its name in the output directory."""

    index: int
    prompt: str
    seed: int
    height: int
    width: int
    schedule: str | None = None          # a preset name or schedule file from the prompts file; None: the run's
    negative_prompt: str | None = None
    file: str = ""
    line: int | None = None              # its line in the prompts file
    inputs: tuple = ()                   # its files, read and checked (generation.inputs.InputFile), by key
    strength: float | None = None        # None: the pipeline's default (or it takes none)

    def batch_key(self) -> tuple:
        """Images that can share one sampler call: same size, schedule, kind of guidance, input
        files and strength."""
        return (self.height, self.width, self.schedule, self.negative_prompt is None, self.inputs, self.strength)


@dataclass
class Entry:
    """One prompt of the prompts file (or of ``--prompt``), with what its line fixes."""

    prompt: str
    seed: int | None = None
    height: int | None = None
    width: int | None = None
    schedule: str | None = None
    negative_prompt: str | None = None
    line: int | None = None
    files: dict = field(default_factory=dict)    # the line's file paths by key (relative to the prompts file's folder)
    strength: float | None = None
    inputs: tuple = ()                   # the files it uses, read and checked: its own and the run's
    size_from: str | None = None         # the file whose size its size is, where it took one


def read_prompts(path) -> list[Entry]:
    """The prompts of a prompts file; every fault is one line naming the file and line. A
    byte-order mark at its start is dropped (``utf-8-sig``), not read into the first line."""
    path = check_path(path, "--prompts")
    if path.is_dir():
        raise UsageError(f"--prompts {brief(str(path))} is a directory, not a prompts file")
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise UsageError(f"--prompts {brief(str(path))} does not exist") from None
    except UnicodeDecodeError:
        raise UsageError(f"--prompts {brief(str(path))} is not UTF-8 text") from None
    except OSError as err:
        raise UsageError(f"cannot read --prompts {brief(str(path))}: {err.strerror}") from None
    entries = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{n}"
        entries.append(_json_entry(line, where, n, path.parent) if line.startswith("{") else Entry(prompt=line, line=n))
    if not entries:
        raise UsageError(f"--prompts {brief(str(path))} holds no prompt (one a line; blank lines and # comments "
                         "are skipped)")
    return entries


def _json_entry(line: str, where: str, n: int, folder: Path) -> Entry:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: a JSON line must be an object with a \"prompt\"")
    unknown = sorted(set(obj) - set(LINE_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; a line may have {', '.join(LINE_KEYS)}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError(f"{where}: \"prompt\" must be a non-empty string, got {brief(prompt)}")
    e = Entry(prompt=prompt, line=n)
    if "seed" in obj:
        e.seed = _int(obj["seed"], f"{where}: \"seed\"", 0, SEED_LIMIT)
    if "size" in obj:
        if "width" in obj or "height" in obj:
            raise UsageError(f"{where}: give \"size\" or \"width\"/\"height\", not both")
        e.width, e.height = parse_size(obj["size"], f"{where}: \"size\"")
    for key in ("width", "height"):
        if key in obj:
            setattr(e, key, _int(obj[key], f"{where}: \"{key}\"", 1, 1 << 20))
    for key in ("schedule", "negative_prompt"):
        if key in obj:
            if not isinstance(obj[key], str) or not obj[key]:
                raise UsageError(f"{where}: \"{key}\" must be a non-empty string, got {brief(obj[key])}")
            setattr(e, key, obj[key])
    for key in FILE_KEYS:
        if key in obj:
            if not isinstance(obj[key], str) or not obj[key]:
                raise UsageError(f"{where}: \"{key}\" must be a path (a non-empty string), got {brief(obj[key])}")
            e.files[key] = str(folder / obj[key])          # an absolute path stays itself
    if "strength" in obj:
        try:
            e.strength = check_strength(obj["strength"])
        except ValueError as err:
            raise UsageError(f"{where}: \"strength\": {err}") from None
    return e


def _int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer, got {brief(value)}")
    if not low <= value < high:
        raise UsageError(f"{name} must lie in [{low}, {high}), got {value}")
    return value


def parse_size(value, name: str = "--size") -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` (or ``[width, height]``) as ``(width, height)``."""
    if isinstance(value, list) and len(value) == 2:
        return _int(value[0], f"{name} width", 1, 1 << 20), _int(value[1], f"{name} height", 1, 1 << 20)
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            return _int(int(parts[0]), f"{name} width", 1, 1 << 20), _int(int(parts[1]), f"{name} height", 1, 1 << 20)
    raise UsageError(f"{name} must be \"WIDTHxHEIGHT\" (e.g. \"1024x768\") or [width, height], got {brief(value)}")


@dataclass(frozen=True)
class Plan:
    """The images of a run (see the module docstring), a :class:`Job` computed per index:
    ``len``, indexing and iteration cost nothing per image until an image is asked for. The
    seed limit is checked at construction, in arithmetic over the prompts."""

    entries: tuple
    num_images: int
    seed: int
    height: int
    width: int
    negative_prompt: str | None = None
    suffix: str = ".png"            # ".mp4" for a video model's clips

    def __post_init__(self):
        object.__setattr__(self, "entries", tuple(self.entries))
        first = self._first_seed_overflow()
        if first is not None:
            raise UsageError(f"image {first} would get seed {self._seed(first)}, beyond 2**63 - 1; use a smaller "
                             "--seed")

    def __len__(self) -> int:
        return len(self.entries) * self.num_images

    def _seed(self, i: int) -> int:
        e = self.entries[i // self.num_images]
        return (self.seed + i) if e.seed is None else (e.seed + i % self.num_images)

    def _first_seed_overflow(self) -> int | None:
        """The first image whose seed would pass 2**63 - 1, found per prompt, not per image."""
        n, worst = self.num_images, None
        for j, e in enumerate(self.entries):
            lo, hi = j * n, (j + 1) * n
            i = max(lo, SEED_LIMIT - self.seed) if e.seed is None else lo + max(0, SEED_LIMIT - e.seed)
            if i < hi:
                worst = i if worst is None else min(worst, i)
        return worst

    def __getitem__(self, i: int) -> Job:
        if not 0 <= i < len(self):
            raise IndexError(i)
        e = self.entries[i // self.num_images]
        return Job(index=i, prompt=e.prompt, seed=self._seed(i), height=e.height or self.height,
                   width=e.width or self.width, schedule=e.schedule,
                   negative_prompt=e.negative_prompt or self.negative_prompt, file=self.file(i), line=e.line,
                   inputs=e.inputs, strength=e.strength)

    def file(self, i: int) -> str:
        return f"{i:05d}{self.suffix}"

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def index_of(self, name: str) -> int | None:
        """The index of the image this plan writes under file name ``name``, or None."""
        m = IMAGE_PATTERN.fullmatch(name)
        if m is None:
            return None
        i = int(m.group(1))
        return i if i < len(self) and self.file(i) == name else None


IMAGE_PATTERN = re.compile(r"(\d{5,})\.(?:png|mp4)")


def batches(jobs, size: int):
    """Consecutive jobs (any iterable, consumed lazily) that share a :meth:`Job.batch_key`, at
    most ``size`` to a batch: yields lists."""
    batch = []
    for job in jobs:
        if batch and (len(batch) >= size or batch[-1].batch_key() != job.batch_key()):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


#: The recipe fields that decide an image's pixels: an existing file whose recipe agrees on
#: all of them is this job done. Versions, timings and the batch it was drawn in are left out.
IDENTITY = ("model", "prompt", "negative_prompt", "true_cfg", "seed", "height", "width", "guidance_scale",
            "max_sequence_length", "dtype", "device", "upsample", "select", "parameters", "schedule", "loras",
            "compile", "num_frames", "fps", "inputs", "strength")


def identity(recipe: dict) -> dict:
    """What of ``recipe`` decides the pixels: :data:`IDENTITY`, an input file by its SHA-256 (the
    same bytes under another path are the same input; changed bytes under the same path are not)."""
    ident = {k: recipe.get(k) for k in IDENTITY}
    inputs = ident["inputs"] if isinstance(ident["inputs"], dict) else {}
    ident["inputs"] = {k: v.get("sha256") if isinstance(v, dict) else None for k, v in inputs.items()}
    # a schedule solved at call time (from the model's config; for a strength): the same source, model, size and
    # strength give the same schedule
    if recipe.get("parameters") == "optimised" or recipe.get("schedule_at_call"):
        ident["schedule"] = recipe.get("schedule_source")
    ident["device"] = str(ident["device"] or "").split(":")[0]       # cuda:3 and cuda:0 draw the same
    return ident


def differences(want: dict, have: dict) -> list[str]:
    a, b = identity(want), identity(have)
    return [k for k in IDENTITY if a[k] != b[k]]


def check_writable_dir(path: Path, flag: str = "--out-dir", create: bool = True) -> Path:
    """An output directory: refused if its path is too long for the file system with the names
    written in it, if it is a file, if it is missing and so is its parent, or if anything is not
    writable; made (only itself, not its parents) when ``create``."""
    check_path(path, flag, below=BELOW_OUTPUT_DIR)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {brief(str(path))} is a file, not a directory")
    if not path.exists():
        check_parent(path, f"{flag} {brief(str(path))}")
        if create:
            path.mkdir(exist_ok=True)   # exist_ok: another process of the same run may have made it
    elif not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {brief(str(path))} is not writable")
    return path


def append_line(path: Path, record: dict) -> None:
    """One manifest line, on disk before the next image starts (an interrupted run keeps it). A
    write that fails (a full disk) takes back what part of the line got out, so the next
    run's lines do not join a torn one."""
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict]:
    """The records of a manifest (or part); a torn last line of an interrupted run is dropped."""
    if not path.is_file():
        return []
    out = []
    for line in read_text(path).splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("file"), str):
            out.append(rec)
    return out


def merge_manifest(directory: Path, extra: dict | None = None) -> int:
    """Fold every process's part into ``manifest.jsonl``: one line per file, the newest kept,
    sorted by file name; ``extra`` (file -> record) fills files no line describes yet. A
    manifest that would not change is left untouched. Returns its number of lines."""
    directory = Path(directory)
    records = {}
    for rec in read_lines(directory / MANIFEST):
        records[rec["file"]] = rec
    parts = sorted(directory.glob(PART.format(rank="*")))
    for part in parts:
        for rec in read_lines(part):
            records[rec["file"]] = rec
    for name, rec in (extra or {}).items():
        records.setdefault(name, rec)
    text = "".join(json.dumps(records[name], sort_keys=True) + "\n" for name in sorted(records))
    target = directory / MANIFEST
    if not target.is_file() or target.read_text(encoding="utf-8") != text:     # unchanged: not even touched
        tmp = directory / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    for part in parts:
        part.unlink()
    return len(records)


def lora_spec(text: str) -> tuple[str, float]:
    """``--lora PATH[:SCALE]``: the path (local file or directory, or a hub id) and its scale."""
    path, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
        except ValueError:
            pass                         # a colon in the path itself (C:\..., or none at all)
        else:
            path = head
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise UsageError(f"--lora {brief(text)}: the scale must be finite")
    p = check_path(path, "--lora")
    if not p.exists():
        hub_id = (path.count("/") == 1 and not path.startswith((".", "/", "~")) and all(path.split("/"))
                  and p.suffix.lower() not in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"))
        if not hub_id:
            raise UsageError(f"--lora {brief(path)}: no such file or directory (give a .safetensors file, a folder "
                             "holding one, or a hub id owner/name, optionally :SCALE)")
    return path, scale


#: The lock file a run holds in its output directory (removed when the run ends).
LOCK = ".ralu-generate.lock"


class DirectoryLock:
    """One writer per output directory: an advisory lock (``flock``) on a file in it, held for the
    run. The kernel releases it when the process ends, however it ends, so a crashed run's leftover
    file locks nothing. The file names its holder (process id, host, start time) for the message
    a second run gets; the run removes it when it ends."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK
        self.fd = None

    def acquire(self) -> str | None:
        """Take the lock; None on success, else a description of the process holding it."""
        import socket
        import time

        try:
            import fcntl
        except ImportError:                    # no flock (Windows): an exclusive create, stale if its owner is gone
            return self._acquire_by_create()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                return holder
            try:                               # the file we locked may have been removed by its last holder
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        os.fsync(fd)
        self.fd = fd
        return None

    def holder(self) -> str | None:
        """Who holds the lock now, without taking it or creating anything (a run checks this
        before it loads a model); None when nobody does."""
        try:
            import fcntl
        except ImportError:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _acquire_by_create(self) -> str | None:
        import socket

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return self.path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
