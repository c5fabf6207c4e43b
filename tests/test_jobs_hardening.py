"""``ralu generate`` with untrusted files, huge counts, two runs in one directory, failing writes,
missing and offline models, and wrong tensors from Python callers: each class of fault is one
line (or one ``ValueError``), never a traceback, never a partial file."""

import errno
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from profiles import examples
from ralu_torch import RALU
from ralu_torch import generate as gen_module
from ralu_torch.generation import write as write_module
from ralu_torch.cli import main
from ralu_torch.jobs import LOCK, DirectoryLock, Entry, Plan
from ralu_torch.recipe import RECIPE_FORMAT, RECIPE_KEY
from tiny import embeds, tiny_flux

SMALL = ["--height", "64", "--width", "64", "--max-sequence-length", "16", "--device", "cpu"]


def one_line(capsys):
    """The run's one error line, the last on stderr (the progress lines before it aside)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("ralu: error:", "ralu-schedule: error:"))]
    assert "Traceback" not in err and "\x1b" not in err and len(lines) == 1 and err.endswith(lines[0] + "\n"), err
    return lines[0]


def png_with_recipe(path: Path, recipe) -> Path:
    info = PngInfo()
    info.add_text(RECIPE_KEY, recipe if isinstance(recipe, str) else json.dumps(recipe))
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


# -- weights named by an image are safetensors only ------------------------------------------------
@pytest.fixture(scope="module")
def pickle_model(tmp_path_factory):
    from tiny import tiny_flux_with_text

    path = tmp_path_factory.mktemp("pickle-flux")
    tiny_flux_with_text().save_pretrained(path, safe_serialization=False)
    tf = path / "transformer"                 # (transformers saves its encoders as safetensors regardless)
    assert not list(tf.glob("*.safetensors")) and list(tf.glob("*.bin"))
    return path


def test_a_recipe_naming_pickle_weights_is_refused_and_naming_them_yourself_loads_them(model_dir, pickle_model,
                                                                                      tmp_path, capsys):
    out = tmp_path / "a.png"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", *SMALL, "--out", str(out)]) == 0
    recipe = json.loads(Image.open(out).text[RECIPE_KEY])
    hostile = png_with_recipe(tmp_path / "hostile.png", {**recipe, "model": str(pickle_model)})
    capsys.readouterr()
    assert main(["generate", "--from", str(hostile), "--out", str(tmp_path / "b.png")]) == 2
    err = one_line(capsys)
    assert "pickle" in err and f"--model '{pickle_model}'" in err
    assert not (tmp_path / "b.png").exists()
    # named on the command line: loaded, and the run says it falls back to pickle files
    assert main(["generate", "--model", str(pickle_model), "--prompt", "a cat", *SMALL,
                 "--out", str(tmp_path / "c.png")]) == 0
    assert "has pickle weights without safetensors" in capsys.readouterr().err
    lora = png_with_recipe(tmp_path / "lora.png", {**recipe, "loras": [[str(tmp_path / "evil.bin"), 1.0]]})
    (tmp_path / "evil.bin").write_bytes(b"not really a pickle")
    assert main(["generate", "--from", str(lora), "--out", str(tmp_path / "d.png")]) == 2
    assert "pickle file (evil.bin)" in one_line(capsys)


JSONS = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                     max_leaves=8)
FIELDS = st.sampled_from(["model", "prompt", "seed", "height", "width", "guidance_scale", "true_cfg", "dtype",
                          "loras", "schedule", "batch", "negative_prompt", "compile", "parameters", "upsample",
                          "num_frames", "fps"])


def clip_with_recipe(path: Path, recipe) -> Path:
    """A clip as ralu generate leaves it: the MP4 (here any bytes) and its recipe beside it."""
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    path.with_suffix(".json").write_text(recipe if isinstance(recipe, str) else json.dumps(recipe))
    return path


@examples(60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(FIELDS, JSONS | st.just("x" * 200_000) | st.just("../../etc/passwd"), max_size=5),
       suffix=st.sampled_from([".png", ".mp4"]))
def test_hostile_recipes_give_one_line_never_a_traceback(tmp_path_factory, monkeypatch, capsys, fields, suffix):
    """Images' recipes (a PNG text chunk) and clips' (the JSON beside the MP4) alike."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")              # a hub-like model name fails at once
    tmp = tmp_path_factory.mktemp("hostile")
    write = png_with_recipe if suffix == ".png" else clip_with_recipe
    path = write(tmp / f"r{suffix}", {"format": RECIPE_FORMAT, **fields})
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    json.loads(capsys.readouterr().out)
    code = main(["generate", "--from", str(path), "--out", str(tmp / f"o{suffix}")])
    assert code == 2
    one_line(capsys)


def test_deeply_nested_or_damaged_recipes_are_one_line(tmp_path, capsys):
    deep = png_with_recipe(tmp_path / "deep.png", "[" * 100_000 + "]" * 100_000)
    assert main(["info", str(deep)]) == 2
    assert "damaged RALU recipe" in one_line(capsys)
    clip = clip_with_recipe(tmp_path / "deep.mp4", "[" * 100_000 + "]" * 100_000)
    assert main(["info", str(clip)]) == 2
    assert "damaged RALU recipe" in one_line(capsys)
    clip.with_suffix(".json").write_bytes(b"\xff\xfe\x00bad")
    assert main(["info", str(clip)]) == 2
    assert "cannot read" in one_line(capsys)
    clip.with_suffix(".json").unlink()
    assert main(["info", str(clip)]) == 2
    assert "carries no RALU recipe" in one_line(capsys)


# -- huge counts: planning does not grow with the images asked for ---------------------------------
def test_a_plan_of_a_billion_images_costs_nothing_until_asked():
    entries = [Entry(prompt="a"), Entry(prompt="b", seed=7, line=2)]
    plan = Plan(entries, 10**9, 5, 64, 64)
    assert len(plan) == 2 * 10**9
    job = plan[10**9 + 3]
    assert (job.prompt, job.seed, job.file) == ("b", 10, "1000000003.png")
    assert plan.index_of("1000000003.png") == 10**9 + 3 and plan.index_of("00001.png") == 1
    assert [plan.index_of(n) for n in ("2000000000.png", "0001.png", "000001.png", "a.png")] == [None] * 4
    with pytest.raises(ValueError, match=r"image 2 would get seed 9223372036854775808, beyond 2\*\*63 - 1"):
        Plan(entries, 10, 2**63 - 2, 64, 64)


def test_a_billion_image_run_writes_its_first_image_at_once(model_dir, tmp_path, capsys, monkeypatch):
    saved = []
    original = write_module.save

    def save_then_stop(image, path, recipe, audio=None):
        original(image, path, recipe, audio)
        saved.append(path.name)
        raise KeyboardInterrupt                               # as a user stopping it after the first image

    monkeypatch.setattr(write_module, "save", save_then_stop)
    out = tmp_path / "out"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--num-images", str(10**9),
                 "--out-dir", str(out), *SMALL]) == 130
    assert saved == ["00000.png"]
    assert sorted(p.name for p in out.iterdir()) == ["00000.png"]     # no lock left, no temporary file


# -- one writer per output directory ---------------------------------------------------------------
def test_a_second_run_into_a_directory_being_written_is_refused(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = DirectoryLock(out)
    assert holder.acquire() is None
    try:
        args = ["generate", "--model", str(model_dir), "--prompt", "a cat", "--out-dir", str(out), *SMALL]
        assert main(args) == 2
        err = one_line(capsys)
        assert f"is being written by another ralu generate (process {os.getpid()} on" in err
        assert not list(out.glob("*.png"))
    finally:
        holder.release()
    (out / LOCK).write_text("process 999999 on a crashed machine")        # a crashed run's leftover: stale
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "manifest.jsonl"]


def test_a_run_that_takes_the_directory_while_the_model_loads_wins(model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "new"                                # not there yet: nothing to find before loading
    other = DirectoryLock(out)
    original = gen_module.load_pipeline

    def load_while_another_run_starts(*args, **kwargs):
        out.mkdir()
        assert other.acquire() is None
        return original(*args, **kwargs)

    monkeypatch.setattr(gen_module, "load_pipeline", load_while_another_run_starts)
    try:
        assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--out-dir", str(out), *SMALL]) == 2
        assert "is being written by another ralu generate" in one_line(capsys)
        assert [p.name for p in out.iterdir()] == [LOCK]   # the other run's directory, untouched
    finally:
        other.release()


# -- failing writes --------------------------------------------------------------------------------
def test_a_full_disk_stops_with_one_line_and_a_rerun_resumes(model_dir, tmp_path, capsys, monkeypatch):
    original = Image.Image.save
    count = {"n": 0}

    def fill_up(self, fp, *args, **kwargs):
        count["n"] += 1
        if count["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fill_up)
    out = tmp_path / "out"
    args = ["generate", "--model", str(model_dir), "--prompt", "a cat", "--num-images", "3", "--out-dir", str(out),
            *SMALL]
    assert main(args) == 1
    err = one_line(capsys)
    assert re.search(r"cannot write .*00001\.png: No space left on device; 1 image\(s\) of this run are written", err)
    assert "rerun the same command to resume" in err
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "manifest.jsonl"]   # no temp file, no lock
    assert [json.loads(x)["file"] for x in (out / "manifest.jsonl").read_text().splitlines()] == ["00000.png"]
    monkeypatch.setattr(Image.Image, "save", original)
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png", "manifest.jsonl"]


def test_a_manifest_line_that_cannot_be_written_takes_its_image_back(model_dir, tmp_path, capsys, monkeypatch):
    from ralu_torch import jobs as jobs_module

    original, count = jobs_module.os.write, {"n": 0}

    def half_then_full(fd, data):
        count["n"] += 1
        if count["n"] == 2:                                    # the second manifest line: half of it, then ENOSPC
            original(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(fd, data)

    out = tmp_path / "out"
    args = ["generate", "--model", str(model_dir), "--prompt", "a cat", "--num-images", "3", "--out-dir", str(out),
            *SMALL]
    monkeypatch.setattr(write_module, "append_line", lambda path, rec: _patched(monkeypatch, jobs_module, half_then_full,
                                                                                path, rec))
    assert main(args) == 1
    assert "cannot write" in one_line(capsys)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["file"] for x in lines] == ["00000.png"]             # no torn line
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "manifest.jsonl"]
    monkeypatch.undo()
    assert main(args) == 0
    assert [json.loads(x)["file"] for x in (out / "manifest.jsonl").read_text().splitlines()] == [
        "00000.png", "00001.png", "00002.png"]


def _patched(monkeypatch, module, write, path, rec):
    with monkeypatch.context() as m:
        m.setattr(module.os, "write", write)
        module.append_line(path, rec)


def test_a_real_full_disk(model_dir, tmp_path, capsys):
    """A small tmpfs filled up (where this machine lets the test mount one)."""
    import shutil
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the monkeypatched ENOSPC tests cover the logic")
    try:
        out = disk / "out"
        args = lambda n: ["generate", "--model", str(model_dir), "--prompt", "a cat", "--num-images", str(n),  # noqa
                          "--out-dir", str(out), *SMALL]
        assert main(args(1)) == 0                                          # one image: how big is one?
        size = (out / "00000.png").stat().st_size
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(free - size // 2, 0))   # room for half an image more
        capsys.readouterr()
        assert main(args(3)) == 1
        err = one_line(capsys)
        assert "cannot write" in err and "No space left on device" in err and "rerun the same command" in err
        pngs = sorted(p.name for p in out.glob("*.png"))
        listed = sorted(json.loads(x)["file"] for x in (out / "manifest.jsonl").read_text().splitlines())
        assert pngs == listed == ["00000.png"] and not [p for p in out.iterdir() if p.name.startswith(".")]
        (disk / "filler").unlink()
        assert main(args(3)) == 0
        assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_failed_run_leaves_no_empty_output_directory(tmp_path, capsys, model_dir, monkeypatch):
    out = tmp_path / "never"
    monkeypatch.setattr(write_module, "run_batch", lambda *a, **k: (_ for _ in ()).throw(ValueError("the model broke")))
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--out-dir", str(out), *SMALL]) == 2
    assert not out.exists()


# -- models that are not there ---------------------------------------------------------------------
@pytest.mark.parametrize("env, model, message", [
    ({}, "./no-such-folder", "--model './no-such-folder': no such directory"),
    ({"HF_HUB_OFFLINE": "1"}, "someone/not-cached", "is not in the local hub cache and HF_HUB_OFFLINE is set"),
    ({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}, "someone/not-cached",
     "is not in the local hub cache and the hub cannot be reached"),
])
def test_missing_and_unreachable_models_fail_at_once_before_torch(tmp_path, env, model, message):
    import subprocess

    code = ("import sys; from ralu_torch.cli import main; r = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(r)")
    r = subprocess.run([sys.executable, "-c", code, "generate", "--model", model, "--prompt", "a",
                        "--out", str(tmp_path / "x.png")], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "HF_HUB_ETAG_TIMEOUT": "2", **env}, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr


# -- command lines ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["generate", "--num-image", "2"], ["generate", "--promp", "x"]])
def test_abbreviated_flags_are_refused(argv, capsys):
    assert main(argv) == 2
    assert "unrecognized arguments" in one_line(capsys)


def test_a_size_off_the_grid_fails_before_torch(model_dir, tmp_path):
    import subprocess

    code = ("import sys; from ralu_torch.cli import main; r = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(r)")
    r = subprocess.run([sys.executable, "-c", code, "generate", "--model", str(model_dir), "--prompt", "a",
                        "--height", "100", "--width", "64", "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "multiples of 32 pixels" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_the_docs_prompts_file_runs_as_shown(model_dir, tmp_path, capsys):
    text = (Path(__file__).parents[1] / "docs" / "generate.md").read_text()
    block = text.split("**The prompts file**")[1].split("```\n")[1]
    command = text.split("## Many images")[1].split("```\n")[1]
    assert "--true-cfg" in command                        # the documented command guides the negative prompt
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(block)
    assert main(["generate", "--model", str(model_dir), "--prompts", str(prompts), "--true-cfg", "2",
                 "--max-sequence-length", "16", "--height", "64", "--width", "64", "--out-dir",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [r["negative_prompt"] for r in lines] == [None, None, "blurry"]


def test_a_negative_prompt_refused_in_a_prompts_file_names_its_line(model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text('a cat\n{"prompt": "a dog", "negative_prompt": "blurry"}\n')
    assert main(["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out-dir",
                 str(tmp_path / "out"), *SMALL]) == 2
    assert one_line(capsys).startswith("ralu: error: p.txt:2: a negative prompt on FLUX.1 needs true_cfg_scale > 1")
    assert not (tmp_path / "out").exists()


# -- wrong tensors from Python callers -------------------------------------------------------------
@pytest.fixture(scope="module")
def dev():
    return tiny_flux()


@pytest.mark.parametrize("returned, message", [
    (lambda t: {"latents": t["latents"][:, :11]}, r"'latents' must keep its shape \(1, 16, 64\), got \(1, 11, 64\)"),
    (lambda t: {"latents": t["latents"].long()}, "'latents' must be a floating-point tensor"),
    (lambda t: {"noise": t["latents"]}, "callback_on_step_end returned 'noise'; it may return latents"),
    (lambda t: ["latents"], "callback_on_step_end must return a dict"),
    (lambda t: {"prompt_embeds": t["prompt_embeds"][..., :5]}, "'prompt_embeds' must keep its width 32"),
])
def test_callback_outputs_are_checked(dev, returned, message):
    with pytest.raises(ValueError, match=message):
        RALU(dev, "flux-dev-7x")(**embeds(), height=64, width=64, output_type="latent",
                                 callback_on_step_end=lambda pipe, i, t, tensors: returned(tensors),
                                 callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])


def test_prompt_embeddings_are_checked_against_the_transformer_and_cast(dev):
    e = embeds()
    with pytest.raises(ValueError, match=r"prompt_embeds must have width 32 .* got \(1, 8, 31\)"):
        RALU(dev, "flux-dev-7x")(prompt_embeds=e["prompt_embeds"][..., :31],
                                 pooled_prompt_embeds=e["pooled_prompt_embeds"], height=64, width=64)
    with pytest.raises(ValueError, match=r"pooled_prompt_embeds must have width 32 .* got \(1, 7\)"):
        RALU(dev, "flux-dev-7x")(prompt_embeds=e["prompt_embeds"], pooled_prompt_embeds=e["pooled_prompt_embeds"][:, :7],
                                 height=64, width=64)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ref = RALU(dev, "flux-dev-7x")(**e, height=64, width=64, output_type="latent", generator=g()).images
    wide = {k: v.double() for k, v in e.items()}                 # float64, as a caller may hold them
    out = RALU(dev, "flux-dev-7x")(**wide, height=64, width=64, output_type="latent", generator=g()).images
    assert torch.equal(out, ref)


# -- sources compile cleanly ------------------------------------------------------------------------
def test_every_source_compiles_without_warnings():
    import warnings

    root = Path(__file__).parents[1]
    files = [p for d in ("ralu_schedule", "ralu_torch", "tests", "bench") for p in (root / d).rglob("*.py")]
    assert len(files) > 20
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")                  # an invalid escape sequence is a SyntaxWarning
            compile(path.read_text(), str(path), "exec")
