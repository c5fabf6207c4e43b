"""The files an image-conditioned model is given on the command line, and ``--strength``.

Which flags there are comes from one place, the families' tables: every
:class:`~ralu_torch.backends.families.Input` of a :class:`~ralu_torch.backends.families.Conditioned`
entry is a flag ``--KEY`` of ``ralu generate`` and ``ralu eval`` (:func:`add_input_flags`:
``--image``, ``--mask``, ``--control-image``, ``--video``, ``--last-image``) and a prompts file's
JSON key ``"KEY"``; ``--strength`` belongs to the pipelines that start from their input. A
pipeline that takes new files (reference images) gets its flags by its table entry alone.

The model's pipeline class is read from its ``model_index.json`` (no weights, no torch), and
:func:`prepare_inputs`, before any weights load:

- refuses a file (or a strength) the pipeline does not take, and a file it needs that is
  missing, naming the prompts file's line where the line names it;
- reads every file once, whole: a missing, unreadable or undecodable file, an animation or a
  clip where an image is due, an image where a clip is due, a mode that cannot be read as RGB
  (a mask: as grey) without loss, a mask of another size than its image, a clip whose frame
  count the VAE cannot encode: one line each. It keeps each file's SHA-256, byte count and size
  (:class:`InputFile`), which the image's recipe records;
- gives a prompt of an image model without a size its first file's size (where neither
  ``--height`` nor ``--width`` is given); a pipeline that does not resize its image (Z-Image
  img2img) refuses any other size;
- with ``--from``, checks each file the recipe names against the SHA-256 it recorded.

At run time :func:`call_inputs` reads each file again (one that changed since it was checked
is refused) and hands it to the pipeline's argument: one per generated image, or one per call
where the table says so (``WanImageToVideoPipeline``). Images go as RGB PIL images, masks as
grey ones, clips as lists of RGB frames.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ralu_schedule._errors import UsageError, brief
from ralu_schedule._files import VIDEO_SUFFIXES, check_path
from ralu_schedule.strength import check_strength

from ..backends.families import conditioned_pipeline, input_flags, strength_pipelines

#: PIL modes that read as RGB (a mask: as grey) without loss: their values, a palette's colours,
#: and an alpha channel only where every pixel is opaque.
LOSSLESS = ("RGB", "RGBX", "L", "1", "P", "RGBA", "LA", "PA")
#: What each kind of file becomes for the pipeline.
AS = {"image": "RGB", "mask": "L"}
CHUNK = 1 << 20


def flag(key: str) -> str:
    """The command-line flag of input ``key``."""
    return "--" + key.replace("_", "-")


def add_input_flags(parser) -> None:
    """``--KEY FILE`` for every file input of the families' tables (:func:`input_flags`), and
    ``--strength``, in their own group of ``parser``."""
    group = parser.add_argument_group("image-conditioned models")
    for key, takers in input_flags().items():
        uses = {}
        for name, spec in takers:
            uses.setdefault(spec.help, []).append(name)
        group.add_argument(flag(key), default=None, metavar="FILE",
                           help="; ".join(f"{what} ({', '.join(names)})" for what, names in uses.items()))
    group.add_argument("--strength", type=float, default=None,
                       help="where the run starts, in (0, 1]: 1 from noise, less keeps more of the input (default: "
                            f"the pipeline's own): {', '.join(strength_pipelines())}")


@dataclass(frozen=True)
class InputFile:
    """One file a job is conditioned on, as read before any weights load: its key (``image``,
    ``mask``, ...), its path, the SHA-256 and byte count of its bytes, its size (a clip's frames'
    size, and its frame count) and its kind."""

    key: str
    path: str
    sha256: str
    bytes: int
    width: int
    height: int
    frames: int | None = None
    kind: str = "image"

    def record(self) -> dict:
        """What an image's recipe records of it (``inputs[key]``)."""
        out = {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "width": self.width,
               "height": self.height}
        return out if self.frames is None else {**out, "frames": self.frames}


def pipeline_entry(read):
    """``(pipeline class name, its Conditioned entry or None)`` from a model's configs (``read``
    as :func:`~ralu_torch.generation.plan.read_configs` gives it)."""
    name = str(read("").get("_class_name", ""))
    found = conditioned_pipeline(name)
    return name, (found[1] if found is not None else None)


def starts_from(read) -> str | None:
    """``"image"`` or ``"video"`` for a model whose pipeline starts from its input, else None."""
    _, entry = pipeline_entry(read)
    return entry.start if entry is not None else None


# -- before any weights ---------------------------------------------------------------------------

def prepare_inputs(entries, args, read, *, video: bool = False, frames_rule=None, recorded: dict | None = None) -> list:
    """``entries`` (:class:`~ralu_torch.jobs.Entry`) with their files read and checked
    (``Entry.inputs``), their strength and, where it comes from a file, their size (module
    docstring). ``args``: the parsed command line (its ``--KEY`` flags, ``--strength``,
    ``--height``/``--width``, ``--prompts``); ``read``: the model's configs; ``video``: a video
    model (its size stays the model's default); ``frames_rule(n)``: raises ``ValueError`` for a
    frame count the model's VAE cannot encode; ``recorded``: the input files a ``--from``
    recipe names (``{key: {"path", "sha256", ...}}``) whose flags are not given."""
    name, entry = pipeline_entry(read)
    takes = {i.key: i for i in entry.inputs} if entry is not None else {}
    prompts = Path(args.prompts).name if getattr(args, "prompts", None) else None
    recorded = recorded or {}
    missing = [m for m in (entry.requires if entry is not None else ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{name} needs {', '.join(missing)}, which is not installed (diffusers' pipeline calls it on "
                         f"every prompt): pip install {' '.join(missing)}")

    run = {}                                        # key -> (path, where, recorded SHA-256 or None)
    for key in input_flags():
        if getattr(args, key, None) is not None:
            run[key] = (getattr(args, key), flag(key), None)
        elif key in recorded:
            run[key] = (recorded[key]["path"], f"--from {brief(args.from_image)}: its recipe's {key}",
                        recorded[key]["sha256"])
    for key, (_, where, _) in run.items():
        _taken(key, name, takes, read, where)
    strength = None
    if getattr(args, "strength", None) is not None:
        strength = _strength(args.strength, name, entry, "--strength")
    if entry is not None and entry.start == "video" and getattr(args, "num_frames", None) is not None:
        raise UsageError(f"--num-frames: {name} makes a clip of its --video's frames; leave it out")

    files, out = {}, []
    for e in entries:
        at = f"{prompts}:{e.line}: " if prompts and e.line is not None else ""
        given = dict(run)
        for key, path in e.files.items():
            given[key] = (path, f'{at}"{key}"', None)
            _taken(key, name, takes, read, given[key][1])
        if e.strength is not None:
            _strength(e.strength, name, entry, f'{at}"strength"')
        for spec in takes.values():
            if spec.key not in given and spec.needed(read) and (spec.refused is None or spec.refused(read) is None):
                line = f' (or a "{spec.key}" on each line)' if prompts else ""
                raise UsageError(f"{at}{name} needs {flag(spec.key)} FILE{line}: {spec.help}")
        got = {}
        for key, (path, where, digest) in given.items():
            spec = takes[key]
            if (path, spec.kind) not in files:
                files[path, spec.kind] = read_input(path, spec.kind, where, name, frames_rule)
            found = dataclasses.replace(files[path, spec.kind], key=key)
            if digest is not None and found.sha256 != digest:
                raise UsageError(f"{where} {brief(path)} is not the file it recorded: SHA-256 {digest} recorded, "
                                 f"{found.sha256} found; give that file, or another with {flag(key)} FILE")
            got[key] = found
        _check_masks(takes, got, given)
        out.append(_sized(dataclasses.replace(e, inputs=tuple(got[k] for k in sorted(got)),
                                              strength=e.strength if e.strength is not None else strength),
                          args, entry, [got[i.key] for i in takes.values() if i.key in got], name, at, video, read))
    return out


def check_rescaled(entries, args, read) -> None:
    """A size given to a pipeline whose call rescales it (FLUX.1 Kontext's ``max_area``) must be
    one the call keeps, so that the recipe's size is the image's and the schedule is checked
    against it before loading; refused in one line naming the size it would become."""
    _, entry = pipeline_entry(read)
    if entry is None or entry.rescales is None:
        return
    prompts = Path(args.prompts).name if getattr(args, "prompts", None) else None
    for e in entries:
        height, width = e.height or args.height, e.width or args.width
        made = entry.rescales(read, height, width)
        if made != (height, width):
            kept = made
            for _ in range(8):                          # the size the call keeps, near the one it made
                if entry.rescales(read, *kept) == kept:
                    break
                kept = entry.rescales(read, *kept)
            at = f"{prompts}:{e.line}: " if prompts and e.line is not None else ""
            raise UsageError(f"{at}{read('').get('_class_name')} rescales its size to its max_area: {width}x{height} "
                             f"(width x height) would become {made[1]}x{made[0]}; give --width {kept[1]} --height "
                             f"{kept[0]} (a size it keeps) or leave the size out (the model's own)")


def _check_masks(takes: dict, got: dict, given: dict) -> None:
    """A mask of another size than its image (the first file that is no mask) is refused: both
    are resized to the output size, so it would cover another region."""
    image = next((got[k] for k, spec in takes.items() if k in got and spec.kind != "mask"), None)
    for key, f in got.items():
        if takes[key].kind == "mask" and image is not None and (f.width, f.height) != (image.width, image.height):
            raise UsageError(f"{given[key][1]} {brief(f.path)} is {f.width}x{f.height} and its image "
                             f"{brief(image.path)} {image.width}x{image.height} (width x height); a mask must be its "
                             "image's size (both are resized to the output size, so it would cover another region)")


def _taken(key: str, name: str, takes: dict, read, where: str) -> None:
    """Input ``key`` given where ``where`` says: refused unless pipeline ``name`` takes it."""
    if key not in takes:
        owners = ", ".join(n for n, _ in input_flags()[key])
        if not takes:                                   # (FLUX.2's reference images are not among them yet)
            raise UsageError(f"{where}: ralu generate gives {name} no files (a text-to-image model: load an "
                             f"image-conditioned pipeline for them); {flag(key)} is for {owners}")
        raise UsageError(f"{where}: {name} takes no {key}, it takes {', '.join(flag(k) for k in takes)}; "
                         f"{flag(key)} is for {owners}")
    why = takes[key].refused(read) if takes[key].refused is not None else None
    if why is not None:
        raise UsageError(f"{where}: this {name} model takes no {key}: {why}")


def _strength(value, name: str, entry, where: str) -> float:
    if entry is None or entry.start is None:
        raise UsageError(f"{where}: {name} does not start from an image or a clip, so it takes no strength; "
                         f"strength is for {', '.join(strength_pipelines())}")
    try:
        return check_strength(value)
    except ValueError as err:
        raise UsageError(f"{where}: {err}") from None


def _sized(e, args, entry, files: list, name: str, at: str, video: bool, read):
    """``e`` with its size from its first file where none is given (image models; the size its
    pipeline gives that file where its table entry says, :attr:`Conditioned.size
    <ralu_torch.backends.families.Conditioned>`), or refused where its pipeline does not resize
    its image and the size given is another."""
    first = files[0] if files else None
    if first is None or video or first.kind == "video":
        return e
    height = e.height if e.height is not None else args.height
    width = e.width if e.width is not None else args.width
    if entry.size is not None:
        own = None if height is not None and width is not None else entry.size(read, first.width, first.height)
        if own is None:
            return e                                    # given, or the pipeline's own default (Kontext)
        return dataclasses.replace(e, height=own[0] if height is None else e.height,
                                   width=own[1] if width is None else e.width)
    if not entry.resizes:
        for what, given, own in (("height", height, first.height), ("width", width, first.width)):
            if given is not None and given != own:
                raise UsageError(f"{at}{name} runs at its image's size, {first.width}x{first.height} (width x height) "
                                 f"for {brief(first.path)}, and does not resize it; got {what} {given}: leave the size "
                                 "out or give the image's")
        return dataclasses.replace(e, height=first.height, width=first.width, size_from=first.path)
    if height is not None and width is not None:
        return e
    return dataclasses.replace(e, height=first.height if height is None else e.height,
                               width=first.width if width is None else e.width, size_from=first.path)


def read_input(path: str, kind: str, where: str, pipeline: str, frames_rule=None) -> InputFile:
    """A file read whole and checked before any weights load (module docstring); ``where``
    names it in the one line a fault is (``--image``, ``p.txt:3: "mask"``)."""
    check_path(path, where)
    digest, size = file_digest(path, where)
    if kind == "video":
        frames, (width, height), _ = decode_clip(path, where, pipeline)
        if frames_rule is not None:
            try:
                frames_rule(frames)
            except ValueError as err:
                raise UsageError(f"{where} {brief(path)}: a clip of {frames} frames; {err}") from None
        return InputFile("", str(path), digest, size, width, height, frames, kind)
    width, height = decode_image(path, kind, where, pipeline).size
    return InputFile("", str(path), digest, size, width, height, None, kind)


def file_digest(path: str, where: str) -> tuple:
    """``(SHA-256 hex digest, byte count)`` of a file, read in chunks; one line if it cannot be read."""
    h, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise UsageError(f"{where} {brief(path)}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{where} {brief(path)} is a directory, not a file") from None
    except OSError as err:
        raise UsageError(f"{where} {brief(path)}: cannot read it ({err.strerror or err})") from None
    return h.hexdigest(), size


def decode_image(path: str, kind: str, where: str, pipeline: str):
    """The image (a mask) at ``path``, decoded whole and converted without loss to what the
    pipeline takes (RGB; a mask grey); one line for a clip, an animation, an undecodable file or
    a mode that would lose information (transparent pixels, CMYK, 16-bit or float values)."""
    from PIL import Image, UnidentifiedImageError

    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        raise UsageError(f"{where} {brief(path)} is a clip; {pipeline} takes an image here")
    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise UsageError(f"{where} {brief(path)} holds {frames} frames (an animation); {pipeline} takes one "
                                 "image here")
            img.load()
            mode = img.mode
            if mode not in LOSSLESS:
                raise UsageError(f"{where} {brief(path)} is a {mode} image; {pipeline} takes {_what(kind)}, and reads "
                                 f"{', '.join(LOSSLESS)} images as such without loss: convert it")
            opaque = img.convert("RGBA") if "A" in mode or "transparency" in img.info else None
            if opaque is not None and opaque.getchannel("A").getextrema()[0] < 255:
                raise UsageError(f"{where} {brief(path)} has transparent pixels, which {_what(kind)} cannot hold; "
                                 "flatten it onto a background (or, for a mask, paint the region to fill white)")
            return (img if opaque is None else opaque).convert(AS[kind])
    except UsageError:
        raise
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
        raise UsageError(f"{where} {brief(path)}: cannot decode it as an image ({err})") from None


def _what(kind: str) -> str:
    return "a grey mask (white: the region to fill)" if kind == "mask" else "RGB images"


def decode_clip(path: str, where: str, pipeline: str, keep: bool = False) -> tuple:
    """``(frames, (width, height), RGB PIL frames if keep else [])`` of the clip at ``path``,
    decoded whole by ffmpeg (imageio-ffmpeg); one line for a still image (an image where a clip
    is due), a file ffmpeg cannot decode, or one with no frame."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            still = getattr(img, "n_frames", 1) == 1
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError):
        still = False                                   # not a picture: ffmpeg's to read
    if still:
        raise UsageError(f"{where} {brief(path)} is one image; {pipeline} starts from a clip (an MP4; a one-frame "
                         "clip is an MP4 of one frame)")
    try:
        import imageio_ffmpeg
        import numpy as np
    except ImportError:
        raise UsageError("reading a clip needs imageio and imageio-ffmpeg: pip install 'ralu[video]'") from None
    kept, count = [], 0
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
        width, height = meta["size"]
        for frame in reader:
            count += 1
            if keep:
                kept.append(Image.fromarray(np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3)))
    except Exception as err:                           # imageio-ffmpeg / ffmpeg: what they raise is theirs
        said = [line.strip() for line in str(err).split("=== stderr ===")[-1].splitlines() if line.strip()]
        raise UsageError(f"{where} {brief(path)}: ffmpeg cannot decode it as a clip ({type(err).__name__}: "
                         f"{(said or [''])[-1][:200]})") from None
    finally:
        reader.close()
    if count == 0:
        raise UsageError(f"{where} {brief(path)}: the clip holds no frame")
    return count, (width, height), kept


# -- at run time ----------------------------------------------------------------------------------

def call_inputs(group: list, pipe) -> dict:
    """The pipeline call's file arguments and ``strength`` for a batch of jobs (which share them:
    :meth:`~ralu_torch.jobs.Job.batch_key`): each file read again and handed to its argument, a
    list of one per generated image, or one for the call where its :class:`Input` says ``one``."""
    job = group[0]
    if not job.inputs and job.strength is None:
        return {}
    name = type(pipe).__name__
    takes = {i.key: i for i in conditioned_pipeline(name)[1].inputs}
    kwargs = {}
    for f in job.inputs:
        spec = takes[f.key]
        value = decoded(f, name)
        kwargs[spec.argument] = value if spec.one else [value] * len(group)
    if job.strength is not None:
        kwargs["strength"] = job.strength
    return kwargs


@functools.lru_cache(maxsize=4)
def decoded(f: InputFile, pipeline: str):
    """File ``f`` decoded for the pipeline (a batch's files are read once), refused if its bytes
    changed since they were checked."""
    where = flag(f.key)
    digest, _ = file_digest(f.path, where)
    if digest != f.sha256:
        raise UsageError(f"{where} {brief(f.path)} changed after it was checked (SHA-256 {f.sha256} then, {digest} "
                         "now); rerun to use it as it is now")
    if f.kind == "video":
        return decode_clip(f.path, where, pipeline, keep=True)[2]
    return decode_image(f.path, f.kind, where, pipeline)
