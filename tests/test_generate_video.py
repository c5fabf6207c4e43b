"""``ralu generate`` with a video model (a tiny random Wan saved as from_pretrained reads it):
MP4 clips with their recipe beside them, ``ralu info`` and ``--from`` (the same file, byte for
byte), prompts files, manifest and resume, and the video flags' rules before torch."""

import json
import subprocess
import sys

import pytest

from ralu_torch.cli import main

SMALL = ["--height", "64", "--width", "64", "--num-frames", "5", "--max-sequence-length", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    from ralu_torch.testing import wan_pipeline_with_text

    path = tmp_path_factory.mktemp("tiny-wan")
    wan_pipeline_with_text().save_pretrained(path)
    return path


def frames_of(path) -> list:
    """The clip's frames, decoded by ffmpeg (imageio-ffmpeg), as (height, width, 3) arrays."""
    import imageio_ffmpeg
    import numpy as np

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]


def test_a_clip_is_an_mp4_with_its_recipe_and_from_makes_the_same_file(wan_dir, tmp_path, capsys):
    out = tmp_path / "fox.mp4"
    assert main(["generate", "--model", str(wan_dir), "--prompt", "a red fox", *SMALL, "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox.json", "fox.mp4"]
    frames = frames_of(out)
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3)
    recipe = json.loads((tmp_path / "fox.json").read_text())
    assert (recipe["num_frames"], recipe["fps"], recipe["schedule_source"]) == (5, 16, "wan-480p-7x")
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["prompt"] == "a red fox"
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_a_prompts_file_of_clips_resumes(wan_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text('a red fox\n{"prompt": "a blue bird", "seed": 7}\n')
    args = ["generate", "--model", str(wan_dir), "--prompts", str(prompts), "--num-images", "2", *SMALL,
            "--fps", "8", "--out-dir", str(tmp_path / "out")]
    assert main(args) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["00000.json", "00000.mp4", "00001.json", "00001.mp4", "00002.json", "00002.mp4", "00003.json",
                     "00003.mp4", "manifest.jsonl"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["file"], r["seed"], r["num_frames"], r["fps"]) for r in lines] == [
        ("00000.mp4", 0, 5, 8), ("00001.mp4", 1, 5, 8), ("00002.mp4", 7, 5, 8), ("00003.mp4", 8, 5, 8)]
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to do: 4 clip(s) already there" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--num-frames", "8"], "--num-frames: frames must be 4k + 1 for wan2.1-t2v-14b"),
    (["--num-frames", "0"], "--num-frames: frames must be an integer >= 1, got 0"),
    (["--fps", "nan"], "--fps must be finite, got nan"),
    (["--num-frames", "10001"], "a clip of 2501 latent frames of 4x4 tokens exceeds Wan's rotary table (64 positions "
                                "per axis); at most 253 frames and 1024 pixels a side"),
    (["--out", "x.png"], "needs one of the extensions ralu generate writes, each file with its recipe: .mp4 (clips)"),
    (["--compare"], "--compare puts two images side by side; for a video model"),
    (["--fps", "0"], "--fps must be from 0.01 to 480 frames per second, got 0"),
    (["--fps", "1e308"], "--fps must be from 0.01 to 480 frames per second, got 1e+308"),
])
def test_video_flags_fail_before_torch(wan_dir, tmp_path, extra, message):
    code = ("import sys; from ralu_torch.cli import main; r = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(r)")
    argv = ["generate", "--model", str(wan_dir), "--prompt", "a", "--height", "64", "--width", "64", *extra]
    if "--out" not in extra:
        argv += ["--out", str(tmp_path / "c.mp4")]
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_video_flags_on_an_image_model_are_refused(model_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", "a", "--num-frames", "5", "--out",
                 str(tmp_path / "a.png")]) == 2
    assert "--num-frames is for video models (Wan)" in capsys.readouterr().err


def test_a_clip_too_large_for_memory_is_named_in_clips_frames_and_pixels():
    """The sampler's memory check speaks of a video backend's clips, not of one image as tall as
    its stacked frames (a clip this long is first refused by the rotary table's limit)."""
    from ralu_torch.backends import backend_for
    from ralu_torch.pipeline import _check_memory
    from ralu_torch.testing import wan_pipeline

    be = backend_for(wan_pipeline())
    be.set_frames(10**8)
    with pytest.raises(ValueError, match=r"^1 clip\(s\) of 100000000 latent frames at 64x64 pixels need about "
                                         r"[\d.]+ GiB for the sampler's latents alone"):
        _check_memory(be, (4 * 10**8, 4), 1)


def test_a_clip_ffmpeg_cannot_write_is_one_line_and_leaves_nothing(wan_dir, tmp_path, capsys, monkeypatch):
    import diffusers.utils

    def broken(frames, path, fps):
        open(path, "wb").write(b"half a clip")
        raise RuntimeError("Error opening input: Invalid argument")

    monkeypatch.setattr(diffusers.utils, "export_to_video", broken)
    assert main(["generate", "--model", str(wan_dir), "--prompt", "a", *SMALL, "--out", str(tmp_path / "c.mp4")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ralu: error:")]
    assert len(errors) == 1 and "ffmpeg could not write the clip (RuntimeError: Error opening input" in errors[0]
    assert errors[0].endswith("nothing partial is left"), errors
    assert list(tmp_path.iterdir()) == []
    out_dir = tmp_path / "many"
    assert main(["generate", "--model", str(wan_dir), "--prompt", "a", "--num-images", "2", *SMALL,
                 "--out-dir", str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert "0 clip(s) of this run are written (listed in" in err and "rerun the same command to resume" in err
    assert not out_dir.exists()                        # made by the run, empty: removed


def test_a_prompts_line_too_large_for_the_rotary_table_is_named_before_loading(wan_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text('a red fox\n{"prompt": "a wide fox", "size": "1088x64"}\n')
    assert main(["generate", "--model", str(wan_dir), "--prompts", str(prompts), *SMALL,
                 "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("ralu: error: p.txt:2: a clip of 2 latent frames of 4x68 tokens exceeds Wan's rotary table (64 "
                   "positions per axis); at most 253 frames and 1024 pixels a side"), err
