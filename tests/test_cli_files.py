"""The files the command lines read and write (issue 27): text with a UTF-8 byte-order mark
reads as without it, in every reader; a path name the file system cannot hold is one line
naming the path and the limit, for every command that writes (and reads) a file, before any
work; and every format ``ralu generate`` writes carries its recipe, or is refused."""

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from ralu_schedule import preset
from ralu_schedule._files import BELOW_OUTPUT_DIR
from ralu_schedule.cli import main as schedule_main
from ralu_torch.cli import main
from ralu_torch.jobs import read_prompts
from ralu_torch.recipe import read_recipe

BOM = "\ufeff"
SMALL = ["--height", "64", "--width", "64", "--max-sequence-length", "16", "--device", "cpu"]
FUNCTION_SCOPED = [HealthCheck.function_scoped_fixture]


def one_error(capsys, code=2) -> str:
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(("ralu: error: ", "ralu-schedule: error: ")), err
    return err


# -- a byte-order mark --------------------------------------------------------------------------

LINES = st.lists(st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029{#\ufeff"),
            min_size=1, max_size=12).filter(str.strip),
    st.builds(lambda p, s: json.dumps({"prompt": p, "seed": s}), st.text("abc é猫", min_size=1, max_size=8)
              .filter(str.strip), st.integers(0, 2**40))), min_size=1, max_size=5)


@settings(max_examples=40, suppress_health_check=FUNCTION_SCOPED)
@given(LINES)
def test_a_prompts_file_with_a_bom_reads_as_without(tmp_path, lines):
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_text("\n".join(lines), encoding="utf-8")
    marked.write_text(BOM + "\n".join(lines), encoding="utf-8")
    assert read_prompts(marked) == read_prompts(plain)


def test_a_schedule_file_with_a_bom_reads_as_without(tmp_path, capsys):
    text = preset("flux-dev-7x").to_json()
    (tmp_path / "plain.json").write_text(text, encoding="utf-8")
    (tmp_path / "marked.json").write_text(BOM + text, encoding="utf-8")
    assert schedule_main(["check", str(tmp_path / "plain.json"), "--json"]) == 0
    plain = capsys.readouterr().out
    assert schedule_main(["check", str(tmp_path / "marked.json"), "--json"]) == 0
    assert capsys.readouterr().out == plain


def test_a_clips_recipe_with_a_bom_reads_as_without(tmp_path):
    recipe = {"format": "ralu-image/1", "prompt": "a cat", "num_frames": 5}
    (tmp_path / "clip.mp4").write_bytes(b"not looked at")
    (tmp_path / "clip.json").write_text(BOM + json.dumps(recipe), encoding="utf-8")
    assert read_recipe(tmp_path / "clip.mp4") == recipe


def test_model_configs_with_a_bom_read_as_without(model_dir, tmp_path):
    from ralu_torch.generation.plan import model_family as _family

    marked = tmp_path / "marked"
    for config in model_dir.rglob("*.json"):
        target = marked / config.relative_to(model_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(BOM + config.read_text(encoding="utf-8"), encoding="utf-8")
    family, variant = _family(str(marked))
    assert family is not None and (family, variant) == _family(str(model_dir))


def test_a_prompts_file_with_a_bom_runs_its_first_json_line(model_dir, tmp_path, capsys):
    (tmp_path / "p.txt").write_text(BOM + '{"prompt": "a blue dog", "seed": 42}\n', encoding="utf-8")
    assert main(["generate", "--model", str(model_dir), "--prompts", str(tmp_path / "p.txt"), "--out-dir",
                 str(tmp_path / "out"), *SMALL]) == 0
    line = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert (line["prompt"], line["seed"]) == ("a blue dog", 42)


# -- names and paths too long for the file system ----------------------------------------------

NAME_MAX, PATH_MAX = (os.pathconf(tempfile.gettempdir(), f"PC_{k}_MAX") for k in ("NAME", "PATH"))
#: a path's components, each a character repeated (1, 2 or 3 bytes in UTF-8)
COMPONENTS = st.lists(st.tuples(st.sampled_from(["a", "é", "猫"]), st.integers(1, 330)), min_size=1, max_size=24)


def _path(root: Path, parts, suffix: str) -> str:
    names = [c * n for c, n in parts]
    names[-1] += suffix
    return str(root.joinpath("missing", *names))          # the directory "missing" is not there


def _expect(err: str, path: str, below: int = 0) -> None:
    """One line: the name's limit if a name is too long, else the path's if the path is
    (``below``: room the command needs beneath it), else the missing directory; never both
    wrong. Near PATH_MAX either of the last two may come first (temporary names)."""
    sizes = [len(part.encode()) for part in Path(path).parts]
    total = len(path.encode()) + below
    if max(sizes) > NAME_MAX:
        assert "NAME_MAX" in err and f"at most {NAME_MAX} bytes a name" in err, err
    elif total > PATH_MAX - 1:
        assert "PATH_MAX" in err and f"at most {PATH_MAX - 1} bytes a path" in err, err
    elif total + 64 < PATH_MAX - 1:
        assert "does not exist" in err or "no such" in err.lower() or "cannot read" in err, err
    else:
        assert "PATH_MAX" in err or "does not exist" in err, err


WRITERS = {
    "generate --out": (lambda p: ["generate", "--model", "m", "--prompt", "a", "--out", p], ".png", 0),
    "generate --out-dir": (lambda p: ["generate", "--model", "m", "--prompt", "a", "--num-images", "2",
                                      "--out-dir", p], "", BELOW_OUTPUT_DIR),
    "eval --out-dir": (lambda p: ["eval", "--model", "analytic", "--out-dir", p], "", BELOW_OUTPUT_DIR),
    "demo --out": (lambda p: ["demo", "--out", p], ".png", 0),
    "ralu-schedule plot --out": (lambda p: ["plot", "--preset", "flux-dev-7x", "--out", p], ".png", 0),
}


@pytest.mark.parametrize("command", list(WRITERS))
@settings(max_examples=30, suppress_health_check=FUNCTION_SCOPED, deadline=None)
@given(parts=COMPONENTS)
@example(parts=[("a", 8)])                          # fits: the missing directory is what is wrong
@example(parts=[("猫", 85)] * 20)                   # every name 255 bytes, the path 5100
@example(parts=[("a", 200)] * 20)                   # near PATH_MAX
@example(parts=[("é", 128)])                        # 256 bytes in 128 characters
def test_fuzz_output_path_names(command, parts, tmp_path, capsys):
    argv, suffix, below = WRITERS[command]
    path = _path(tmp_path, parts, suffix)
    run = schedule_main if command.startswith("ralu-schedule") else main
    assert run(argv(path)) == 2
    _expect(one_error(capsys), path, below)


READERS = {
    "generate --prompts": (lambda p, d: ["generate", "--model", "m", "--prompts", p, "--out-dir", d], ".txt"),
    "generate --from": (lambda p, d: ["generate", "--from", p], ".png"),
    "generate --model": (lambda p, d: ["generate", "--model", p, "--prompt", "a", "--out", f"{d}/x.png"], ""),
    "generate --lora": (lambda p, d: ["generate", "--model", "m", "--prompt", "a", "--lora", p], ".safetensors"),
    "generate --schedule": (lambda p, d: ["generate", "--model", "m", "--prompt", "a", "--schedule", p], ".json"),
    "info": (lambda p, d: ["info", p], ".png"),
}


@pytest.mark.parametrize("command", list(READERS))
@settings(max_examples=15, suppress_health_check=FUNCTION_SCOPED, deadline=None)
@given(parts=COMPONENTS)
def test_fuzz_input_path_names(command, parts, tmp_path, capsys):
    argv, suffix = READERS[command]
    path = _path(tmp_path, parts, suffix)
    assert main(argv(path, str(tmp_path))) == 2
    err = one_error(capsys)
    if max(len(part.encode()) for part in Path(path).parts) > NAME_MAX:
        assert "NAME_MAX" in err, err


def test_a_name_at_the_limit_is_written(model_dir, tmp_path, capsys):
    """255 bytes is allowed: the temporary name the image is written under first is short."""
    name = "猫" * ((NAME_MAX - 4) // 3) + "a" * ((NAME_MAX - 4) % 3) + ".png"
    assert len(name.encode()) == NAME_MAX
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--out", str(tmp_path / name),
                 *SMALL]) == 0
    assert read_recipe(tmp_path / name)["prompt"] == "a cat"
    assert [p.name for p in tmp_path.iterdir()] == [name]
    capsys.readouterr()
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--out", str(tmp_path / ("a" + name)),
                 *SMALL]) == 2
    assert f"is {NAME_MAX + 1} bytes long" in one_error(capsys)


# -- formats ---------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jpg", ".webp"])         # .jpeg: the same format as .jpg
def test_jpeg_and_webp_carry_their_recipe_through_info_from_and_resume(model_dir, tmp_path, capsys, suffix):
    out = tmp_path / f"x{suffix}"
    args = ["generate", "--model", str(model_dir), "--prompt", "a café 猫", "--seed", "3", "--out", str(out), *SMALL]
    assert main(args) == 0
    assert Image.open(out).format == {".webp": "WEBP", ".jpg": "JPEG"}[suffix]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert (recipe["prompt"], recipe["seed"], recipe["model"]) == ("a café 猫", 3, str(model_dir))
    assert recipe["schedule"]["info"]["preset"] == "flux-dev-7x"
    assert main(args) == 0                                             # the rerun knows it: nothing to do
    assert "nothing to do: 1 image(s) already there" in capsys.readouterr().out
    again = tmp_path / f"again{suffix}"
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()                      # the same pixels, encoded the same


@pytest.mark.parametrize("suffix", [".svg", ".pdf", ".gif", ".bmp", ".tif", ".txt"])
def test_formats_that_cannot_carry_the_recipe_are_refused_before_loading(model_dir, tmp_path, capsys, monkeypatch,
                                                                        suffix):
    import diffusers

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    assert main(["generate", "--model", str(model_dir), "--prompt", "a", "--out", str(tmp_path / f"x{suffix}"),
                 *SMALL]) == 2
    assert ".png, .jpg, .jpeg, .webp (images)" in one_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_recipe_too_long_for_a_jpeg_is_refused_before_loading(model_dir, tmp_path, capsys, monkeypatch):
    import diffusers

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat " * 12000, "--out",
                 str(tmp_path / "x.jpg"), *SMALL]) == 2
    assert "a JPEG holds at most 65533" in one_error(capsys)


@pytest.mark.parametrize("comment", [b"ASCII\0\0\0{not json", b"ASCII\0\0\0[1, 2]", b"UNICODE\0x", b"ASCII\0\0\0\xff"])
def test_a_jpeg_without_a_valid_recipe_is_one_line(tmp_path, capsys, comment):
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = comment
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg", exif=exif)
    assert main(["info", str(tmp_path / "x.jpg")]) == 2
    err = one_error(capsys)
    assert any(m in err for m in ("damaged", "unknown format", "carries no RALU recipe")), err


def test_the_clip_sidecar_and_temporary_names_fit_beside_a_long_clip_name(tmp_path):
    """A clip's recipe (``.json``) is a byte longer than ``.mp4``: a name that fits only as the
    clip is refused before any work, naming the recipe's file."""
    from ralu_schedule._files import TEMPORARY_NAME, check_path
    from ralu_schedule._errors import UsageError
    from ralu_torch.recipe import sidecar

    clip = tmp_path / ("a" * (NAME_MAX - 4) + ".mp4")
    check_path(clip, "--out", names=[TEMPORARY_NAME])
    with pytest.raises(UsageError, match=f"is {NAME_MAX + 1} bytes long"):
        check_path(sidecar(clip), "--out", names=[TEMPORARY_NAME])
