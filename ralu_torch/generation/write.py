"""Writing a run's images: each under a temporary name and renamed (never half a file) with its
recipe, its manifest line appended and synced after it, the output directory locked for the
run, and pictures side by side (``--compare``, ``ralu eval``'s contact sheet)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ralu_schedule._errors import UsageError, brief
from ralu_schedule._files import VIDEO_SUFFIXES, temporary

from .. import console as _console
from ..jobs import MANIFEST, PART, DirectoryLock, append_line, batches, check_writable_dir, merge_manifest
from ..recipe import manifest_line, needs_room, save_options, sidecar
from .execute import ran_with, run_batch, versions
from .plan import things, unit


class RunFailure(RuntimeError):
    """A run that stopped part way (a write failed): one line for the command line, exit 1."""


def write_locked(args, plan, mine, ralus, target, wanted, out_dir, state, rank, world, many, device, todo,
                 from_batch, resumed) -> tuple:
    """This process's images (:func:`write_images`) under ``out_dir``'s lock, then, once every
    process is done, the manifest merged by the first: (images written, manifest lines, None
    on the other processes and without a directory). On failure the lock is released and a
    directory this run made and left empty is removed."""
    lock, created = take_directory(out_dir, state, rank)
    try:
        written = write_images(args, plan, mine, ralus, target, wanted, out_dir, rank, world, many, device, todo,
                               from_batch)
        if state is not None:
            state.wait_for_everyone()
        lines = merge_manifest(out_dir, resumed) if out_dir is not None and rank == 0 else None
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()                            # nothing written: leave no empty directory behind
        raise
    finally:
        if lock is not None:
            lock.release()
    return written, lines


def take_directory(out_dir, state, rank):
    """The output directory, made if needed, and its lock (:class:`~ralu_torch.jobs.DirectoryLock`)
    taken by the first process of the run; a second run into it stops with one line."""
    if out_dir is None:
        return None, False
    created = False
    if rank == 0:
        created = not out_dir.exists()
        check_writable_dir(out_dir)
    lock, holder = None, None
    if rank == 0:
        lock = DirectoryLock(out_dir)
        holder = lock.acquire()
    if state is not None:
        from accelerate.utils import broadcast_object_list

        holder = broadcast_object_list([holder])[0]
        state.wait_for_everyone()
    if holder is not None:
        if created and rank == 0 and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise UsageError(busy(out_dir, holder))
    return lock, created


def busy(out_dir: Path, holder: str) -> str:
    return (f"{brief(str(out_dir))} is being written by another ralu generate ({holder}); wait for it to finish "
            "or write elsewhere")


def write_images(args, plan, mine, ralus, target, wanted, out_dir, rank, world, many, device, todo, from_batch):
    """Generate and write this process's images, batch by batch; returns how many it wrote."""
    console = _console.current()
    manifest = None if out_dir is None else out_dir / (MANIFEST if world == 1 else PART.format(rank=rank))
    size = len(plan) if from_batch else args.batch_size
    share = 1 if from_batch else todo if world == 1 else None
    progress = console.progress(share, unit=unit(plan), enabled=rank == 0)
    written, made_with, result = 0, versions(), None
    try:
        for group in batches(mine, size):
            ralu = ralus[group[0].schedule]
            made = sum(target(job) is not None for job in group)
            seconds, out = run_batch(ralu, group, args, device, progress.steps(made, ralu.layout.total_steps))
            tflops = sum(st.tflops for st in out.stage_calls) / len(group)
            members = [{"prompt": j.prompt, "seed": j.seed, "negative_prompt": j.negative_prompt} for j in group]
            sound = getattr(out, "audio", None)            # a joint pipeline's waveforms (LTX-2), one per clip
            for k, (job, image) in enumerate(zip(group, out.images)):
                path = target(job)
                if path is None:
                    continue
                rec = {**wanted(job), **ran_with(ralu, out, job), "versions": made_with}
                if len(group) > 1:
                    rec["batch"] = {"members": members, "index": k}
                line = None if manifest is None else {
                    **manifest_line(rec), "file": path.name, "index": job.index, "seconds": seconds / len(group),
                    "batch_seconds": seconds, "batch_size": len(group), "tflops": tflops,
                    "stage_tokens": out.stage_tokens, "rank": rank}
                try:
                    save(image, path, rec, None if sound is None else (sound[k], ralu.backend.audio_sample_rate))
                    if line is not None:
                        try:
                            append_line(manifest, line)
                        except OSError:
                            path.unlink(missing_ok=True)   # an image the manifest does not list is not left
                            raise
                except OSError as err:
                    reason = f"cannot write {path}: {err.strerror or err}"
                    if out_dir is None:
                        raise RunFailure(f"{reason}; nothing partial is left") from None
                    reason += (f"; {written} {things(plan)} of this run are written (listed in {manifest}), nothing "
                               "partial is left; rerun the same command to resume")
                    raise RunFailure(reason) from None
                written += 1
                progress.advance(1, str(path))
                if manifest is None:
                    result = f"wrote {path} ({job.width}x{job.height}, tokens per stage {out.stage_tokens})"
    finally:
        progress.close()                               # an error's line goes below the bar, not into it
    if result is not None:
        console.result(result)
    return written


def save(image, path: Path, recipe: dict, audio=None) -> None:
    """Under a temporary name in the same directory, then renamed: never half an image. A clip
    (a list of frames) is an MP4 (diffusers' ``export_to_video``, imageio's ffmpeg) whose recipe
    goes in a JSON file beside it, written first: a clip on disk always has its recipe. ``audio``:
    ``(waveform (channels, samples) in [-1, 1], sample rate)``, the clip's sound (LTX-2), muxed
    into the MP4 as AAC."""
    if isinstance(image, (list, tuple)):
        return save_clip(image, path, recipe, audio)
    options = save_options(path, recipe)              # the format, and the recipe in its metadata
    tmp = temporary(path)
    try:
        image.save(tmp, **options)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_clip(frames, path: Path, recipe: dict, audio=None) -> None:
    try:
        from diffusers.utils import export_to_video
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UsageError("writing MP4 needs imageio and imageio-ffmpeg: pip install 'ralu[video]'") from None
    side = sidecar(path)
    tmp_side = temporary(side)
    tmp = temporary(path, suffix=path.suffix)          # ffmpeg picks the container by suffix
    extra = [] if audio is None else [temporary(path, suffix=".wav"), temporary(path, suffix="a")]
    done = False
    try:
        tmp_side.write_text(json.dumps(recipe))
        try:
            export_to_video(list(frames), str(tmp), fps=recipe.get("fps") or 16)
            if audio is not None:                      # the sound track, muxed in beside the video stream
                write_wav(extra[0], *audio)
                mux_audio(tmp, extra[0], extra[1])
                os.replace(extra[1], tmp)
        except OSError:
            raise
        except Exception as err:                       # imageio / ffmpeg: what they raise is theirs
            said = " ".join(str(err).split())                # its message on one line, at most 200 characters
            raise OSError(f"ffmpeg could not write the clip ({type(err).__name__}: {said[:200]})") from None
        os.replace(tmp_side, side)                     # the recipe, then the clip: a clip is never without one
        os.replace(tmp, path)
        done = True
    finally:
        for t in (tmp_side, tmp, *extra):
            if t.exists():
                t.unlink()
        if not done and not path.exists():
            side.unlink(missing_ok=True)               # no recipe is left beside no clip


def write_wav(path: Path, waveform, rate: int) -> None:
    """A ``(channels, samples)`` waveform in ``[-1, 1]`` as 16-bit PCM (Python's ``wave``)."""
    import wave

    import numpy as np

    pcm = (np.clip(waveform.detach().float().cpu().numpy(), -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(pcm.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(np.ascontiguousarray(pcm.T).tobytes())


def mux_audio(video: Path, audio: Path, out: Path) -> None:
    """``video``'s stream copied and ``audio`` encoded as AAC into ``out`` (imageio's ffmpeg)."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video), "-i", str(audio),
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-f", "mp4", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise OSError(f"ffmpeg could not add the audio ({' '.join(done.stderr.split())[:200]})")


def check_recipe_fits(path: Path, recipe: dict, schedule) -> None:
    """An image whose recipe its format cannot hold (a JPEG's EXIF segment holds 64 KB: a prompt
    of tens of thousands of characters) is refused before loading: the recipe as it will be
    written, its schedule solved as the run will solve it, with room for the versions and
    ``--compare``'s timings."""
    if path.suffix.lower() in VIDEO_SUFFIXES or not needs_room(path):
        return
    fixed, layout, _ = schedule
    if fixed is None:
        from ralu_schedule import solve

        fixed = solve(layout)
    save_options(path, {**recipe, "schedule": fixed.to_dict(), "guidance_used": 0.0,
                        "versions": dict.fromkeys(("ralu", "diffusers", "torch"), "0" * 32), "room": "0" * 400})


def font(size: int):
    """PIL's default font at ``size`` pixels (Pillow < 10.1: its fixed bitmap font)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def side_by_side(images, captions):
    """The images in a row, each with its caption lines under it (panels widen for long captions)."""
    from PIL import Image, ImageDraw

    w, h = images[0].size
    size = max(10, w // 32)
    face = font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    gap, line = max(4, w // 64), int(size * 1.4)
    panel = max(w, max(int(probe.textlength(t, font=face)) for lines in captions for t in lines) + 2 * gap)
    canvas = Image.new("RGB", (len(images) * panel + (len(images) - 1) * gap,
                               h + 2 * gap + line * max(map(len, captions))), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (img, lines) in enumerate(zip(images, captions)):
        x = k * (panel + gap)
        canvas.paste(img.convert("RGB"), (x + (panel - w) // 2, 0))
        for n, text in enumerate(lines):
            draw.text((x + gap, h + gap + n * line), text, fill="black", font=face)
    return canvas
