"""``ralu generate`` for real work, end to end on a tiny saved pipeline with text encoders:
prompts files, manifests, resuming, conflicts, ``--from`` on batched images, LoRA, offload,
compile, ``--compare`` and two processes under ``accelerate launch``."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ralu_schedule._errors import UsageError
from ralu_torch import generate as gen_module
from ralu_torch.generation import load as load_module, plan as plan_module, write as write_module
from ralu_torch.cli import main
from ralu_torch.jobs import (Entry, Plan, batches, lora_spec, merge_manifest, parse_size, read_lines,
                             read_prompts)

PROMPTS = 'a red cat\n# a comment, then a blank line\n\n{"prompt": "a blue dog", "seed": 42, "size": "96x64"}\n' \
          'a green bird\n'
SMALL = ["--height", "64", "--width", "64", "--max-sequence-length", "16", "--device", "cpu"]


def pixels(path):
    return np.asarray(Image.open(path))


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def stamps(out):
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir())}


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(PROMPTS)
    return path


def run_many(model_dir, prompts, out, *extra):
    return main(["generate", "--model", str(model_dir), "--prompts", str(prompts), "--num-images", "2",
                 "--out-dir", str(out), *SMALL, *extra])


def test_a_prompts_file_makes_its_images_and_manifest_and_a_rerun_makes_nothing(model_dir, prompts, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_many(model_dir, prompts, out, "--batch-size", "2", "--seed", "10") == 0
    names = [f"{i:05d}.png" for i in range(6)]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["manifest.jsonl"])
    lines = manifest(out)
    assert [r["file"] for r in lines] == names
    # image i gets seed 10 + i; the JSON line's seed 42 gives its images 42 and 43
    assert [r["seed"] for r in lines] == [10, 11, 42, 43, 14, 15]
    assert [r["prompt"] for r in lines] == ["a red cat"] * 2 + ["a blue dog"] * 2 + ["a green bird"] * 2
    assert [(r["width"], r["height"]) for r in lines] == [(64, 64)] * 2 + [(96, 64)] * 2 + [(64, 64)] * 2
    assert Image.open(out / "00002.png").size == (96, 64)
    for r in lines:
        assert r["model"] == str(model_dir) and r["preset"] == "flux-dev-7x" and r["schedule"]["stages"]
        assert r["batch_size"] == 2 and r["seconds"] > 0 and r["tflops"] > 0
        assert r["seconds"] == pytest.approx(r["batch_seconds"] / 2)
    assert lines[2]["tflops"] > lines[0]["tflops"]          # 96x64 costs more than 64x64
    capsys.readouterr()

    before = stamps(out)
    assert run_many(model_dir, prompts, out, "--batch-size", "2", "--seed", "10") == 0
    assert "nothing to do: 6 image(s) already there" in capsys.readouterr().out
    assert stamps(out) == before                             # nothing written, not even the manifest


def test_a_changed_recipe_is_refused_unless_overwrite(model_dir, prompts, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_many(model_dir, prompts, out) == 0
    first = pixels(out / "00000.png")
    capsys.readouterr()
    assert run_many(model_dir, prompts, out, "--seed", "5") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "00000.png' exists with another recipe (it differs in seed)" in err
    assert run_many(model_dir, prompts, out, "--seed", "5", "--overwrite") == 0
    assert [r["seed"] for r in manifest(out)] == [5, 6, 42, 43, 9, 10]
    assert not np.array_equal(first, pixels(out / "00000.png"))
    Image.new("RGB", (8, 8)).save(out / "00001.png")         # not written by ralu generate
    assert run_many(model_dir, prompts, out, "--seed", "5") == 2
    assert "00001.png' exists and was not written by ralu generate" in capsys.readouterr().err


def test_a_schedule_solved_at_call_time_resumes_too(model_dir, tmp_path, capsys):
    args = ["generate", "--model", str(model_dir), "--prompt", "a cat", "--num-images", "2", "--parameters",
            "optimised", "--preset", "flux-dev-4x", "--out-dir", str(tmp_path), *SMALL]
    assert main(args) == 0
    assert manifest(tmp_path)[0]["schedule"]["info"]["solved"] == "at call time"
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing to do: 2 image(s)" in capsys.readouterr().out
    assert main([*args[:-len(SMALL)], *SMALL, "--preset", "flux-dev-7x"]) == 2     # another layout: not the same
    assert "differs in schedule" in capsys.readouterr().err


def test_an_interrupted_run_keeps_its_images_and_lines_and_a_rerun_resumes(model_dir, prompts, tmp_path, capsys,
                                                                             monkeypatch):
    out = tmp_path / "out"
    save = write_module.save
    calls = []

    def save_then_stop(image, path, recipe, audio=None):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(path.name)
        save(image, path, recipe, audio)

    monkeypatch.setattr(write_module, "save", save_then_stop)
    assert run_many(model_dir, prompts, out) == 130
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png", "manifest.jsonl"]
    assert [r["file"] for r in manifest(out)] == ["00000.png", "00001.png", "00002.png"]
    kept = stamps(out)
    monkeypatch.setattr(write_module, "save", save)
    capsys.readouterr()
    assert run_many(model_dir, prompts, out) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 image(s)" in printed and "skipped 3 already there" in printed
    assert [r["file"] for r in manifest(out)] == [f"{i:05d}.png" for i in range(6)]
    assert all(stamps(out)[name] == kept[name] for name in ("00000.png", "00001.png", "00002.png"))
    # the same images as an uninterrupted run
    whole = tmp_path / "whole"
    assert run_many(model_dir, prompts, whole) == 0
    for i in range(6):
        assert np.array_equal(pixels(out / f"{i:05d}.png"), pixels(whole / f"{i:05d}.png"))


def test_from_regenerates_a_batched_image_bit_for_bit(model_dir, prompts, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_many(model_dir, prompts, out, "--batch-size", "2") == 0
    capsys.readouterr()
    assert main(["info", str(out / "00003.png")]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["batch"] == {"index": 1, "members": [{"prompt": "a blue dog", "seed": 42, "negative_prompt": None},
                                                        {"prompt": "a blue dog", "seed": 43, "negative_prompt": None}]}
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out / "00003.png"), "--out", str(again)]) == 0
    assert np.array_equal(pixels(out / "00003.png"), pixels(again))
    assert Image.open(again).size == (96, 64)
    capsys.readouterr()
    assert main(["generate", "--from", str(out / "00003.png"), "--out", str(again)]) == 0     # resumes: done
    assert capsys.readouterr().out == f"nothing to do: 1 image(s) already there with the same recipe ({again})\n"


@pytest.mark.parametrize("text, msg", [
    ("", "holds no prompt"),
    ("# only a comment\n", "holds no prompt"),
    ('{"prompt": "x", "sede": 3}\n', "prompts.txt:1: unknown key 'sede'; a line may have prompt, seed, size"),
    ('a\n{"prompt": "x", "seed": -1}\n', "prompts.txt:2: \"seed\" must lie in [0, 9223372036854775808), got -1"),
    ('{"prompt": "x", "size": "64 by 64"}\n', "\"size\" must be \"WIDTHxHEIGHT\""),
    ('{"prompt": ""}\n', "\"prompt\" must be a non-empty string"),
    ('{"prompt": "x",\n', "prompts.txt:1: not valid JSON"),
    ('{"prompt": "x", "schedule": "flux-dev-9x"}\n', "prompts.txt:1: unknown preset 'flux-dev-9x'"),
    ('{"prompt": "x", "size": "100x64"}\n', "prompts.txt:1: height and width must be positive multiples of 32 pixels for this schedule"),
    ('{"prompt": "x", "schedule": "sd3-medium-7x"}\n', "preset 'sd3-medium-7x' was made for sd3-medium"),
])
def test_prompts_file_faults_are_one_line_before_loading(model_dir, tmp_path, capsys, monkeypatch, text, msg):
    from diffusers import DiffusionPipeline

    def no_loading(*a, **k):
        raise AssertionError("weights loaded before the inputs were checked")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", no_loading)
    path = tmp_path / "prompts.txt"
    path.write_text(text)
    assert main(["generate", "--model", str(model_dir), "--prompts", str(path), "--out-dir", str(tmp_path / "o"),
                 *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err


@pytest.mark.parametrize("argv, msg", [
    (["--out-dir", "/nonexistent/dir/x"], "--out-dir '/nonexistent/dir/x': directory '/nonexistent/dir' does not exist"),
    (["--out", "/nonexistent/x.png"], "directory '/nonexistent' does not exist"),
    (["--out", "noext"], "needs one of the extensions ralu generate writes, each file with its recipe: .png"),
    (["--num-images", "2", "--out", "x.png"], "--out names one image"),
    (["--num-images", "0"], "--num-images must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--max-sequence-length", "0"], "--max-sequence-length must be >= 1, got 0"),
    (["--num-images", "3", "--compare"], "--compare makes one picture"),
    (["--baseline-steps", "20"], "--baseline-steps needs --compare"),
    (["--prompts", "p.txt"], "give --prompt or --prompts, not both"),
    (["--lora", "missing.safetensors"], "--lora 'missing.safetensors': no such file or directory"),
    (["--lora", "x/y:nan"], "the scale must be finite"),
    (["--seed", str(2**63 - 1), "--num-images", "2"], "image 1 would get seed 9223372036854775808"),
])
def test_bad_flags_and_paths_fail_in_one_line_before_loading(tmp_path, capsys, monkeypatch, argv, msg):
    """With a model that does not exist: the error named is the flag's, so it came first."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", str(tmp_path / "no-model"), "--prompt", "a cat", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err


FAST = """
import sys
from ralu_torch.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules and "diffusers" not in sys.modules, "imported before the paths were checked"
sys.exit(code)
"""


@pytest.mark.parametrize("argv, msg", [
    (["--num-images", "2", "--out-dir", "{tmp}/a/b"], "does not exist"),
    (["--out", "{tmp}/noext"], "needs one of the extensions ralu generate writes"),
    (["--prompts", "{tmp}/missing.txt", "--out-dir", "{tmp}"], "does not exist"),
    (["--out", "{tmp}/x.png", "--lora", "{tmp}/none.safetensors"], "no such file or directory"),
])
def test_bad_paths_fail_in_one_line_before_torch_is_even_imported(tmp_path, argv, msg):
    """Checked before torch and diffusers import (seconds) and long before any weights load:
    the command fails in a fraction of a second."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    prompt = [] if "--prompts" in argv else ["--prompt", "a"]
    r = subprocess.run([sys.executable, "-c", FAST, "generate", "--model", str(tmp_path / "no-model"), *prompt, *argv],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr


def test_lora_scales_and_is_recorded(model_dir, tmp_path, capsys):
    import torch
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = FluxPipeline.from_pretrained(model_dir)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():           # peft starts B at zero: a LoRA that changes nothing would test nothing
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    lora = tmp_path / "lora"
    FluxPipeline.save_lora_weights(lora, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))

    def make(name, *extra):
        assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", *SMALL,
                     "--out", str(tmp_path / name), *extra]) == 0
        return pixels(tmp_path / name)

    plain = make("plain.png")
    assert np.array_equal(plain, make("zero.png", "--lora", f"{lora}:0"))
    full = make("full.png", "--lora", str(lora / "pytorch_lora_weights.safetensors"))
    assert not np.array_equal(plain, full)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "full.png")]) == 0
    assert json.loads(capsys.readouterr().out)["loras"] == [[str(lora / "pytorch_lora_weights.safetensors"), 1.0]]
    assert main(["generate", "--from", str(tmp_path / "full.png"), "--out", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(full, pixels(tmp_path / "again.png"))


def test_model_offload_gives_the_same_image(model_dir, tmp_path, capsys):
    args = ["generate", "--model", str(model_dir), "--prompt", "a cat", *SMALL]
    assert main([*args, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*args, "--offload", "model", "--out", str(tmp_path / "off.png")]) == 0
    assert np.array_equal(pixels(tmp_path / "plain.png"), pixels(tmp_path / "off.png"))


def test_sequential_offload_on_the_cpu_is_refused_before_loading(model_dir, tmp_path, capsys, monkeypatch):
    """diffusers offloads to 'cpu:0' there and accelerate's hooks fail (tests/test_torch_offload.py
    shows the stock pipeline failing the same way): refused by name, before any weights load."""
    import diffusers

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    for device in ("cpu", "cpu:0"):
        assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--height", "64", "--width", "64",
                     "--device", device, "--offload", "sequential", "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ralu: error: --offload sequential needs a GPU")
    assert not (tmp_path / "x.png").exists()


def test_compile_compiles_the_blocks_and_is_recorded(model_dir, tmp_path, capsys, monkeypatch):
    import torch

    compiled = []
    original = torch.nn.Module.compile

    def eager_compile(self, *a, **k):       # dynamo's graphs without inductor's C++ build
        compiled.append(type(self).__name__)
        return original(self, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", *SMALL, "--compile",
                 "--out", str(tmp_path / "c.png")]) == 0
    assert {"FluxTransformerBlock", "FluxSingleTransformerBlock"} <= set(compiled)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "c.png")]) == 0
    assert json.loads(capsys.readouterr().out)["compile"] is True


def test_compare_writes_one_side_by_side_picture(model_dir, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", *SMALL, "--width", "96",
                 "--compare", "--baseline-steps", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "baseline, 12 steps" in printed and "RALU flux-dev-7x, 2+3+5 steps" in printed
    picture = Image.open(out)
    assert picture.size[0] >= 2 * 96 and picture.size[1] > 64
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    compare = json.loads(capsys.readouterr().out)["compare"]
    assert compare["baseline_steps"] == 12 and compare["baseline_seconds"] > 0 and compare["ralu_seconds"] > 0
    # 12 full-resolution calls against RALU's 2+3+5 calls, mostly at lower resolution
    assert compare["baseline_tflops"] > compare["ralu_tflops"] > 0
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", *SMALL, "--compare",
                 "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_accelerate_processes_split_a_prompts_file(model_dir, prompts, tmp_path, capsys):
    """``accelerate launch --multi_gpu`` starts its processes with torch's launcher; on this
    CPU-only machine they run on the CPU over gloo (``accelerate launch --cpu`` would start one)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "ralu_torch", "generate", "--model", str(model_dir),
           "--prompts", str(prompts), "--num-images", "2", "--out-dir", str(out), *SMALL[:-2]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    said = f"stdout: {r.stdout[-1500:]}\nstderr: {r.stderr[-3000:]}"
    assert r.returncode == 0, said
    assert "wrote 6 image(s)" in r.stdout and "on 2 processes" in r.stdout, said
    lines = manifest(out)
    assert [x["file"] for x in lines] == [f"{i:05d}.png" for i in range(6)], said     # none missing, none twice
    assert sorted({x["rank"] for x in lines}) == [0, 1], said
    assert sorted(p.name for p in out.iterdir()) == [x["file"] for x in lines] + ["manifest.jsonl"], said
    # the same pixels as one process with the same threads (a thread count can change rounding)
    single = tmp_path / "single"
    one = subprocess.run([sys.executable, "-m", "ralu_torch", *cmd[cmd.index("generate"):cmd.index("--out-dir")],
                          "--out-dir", str(single), *SMALL[:-2]], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    for x in lines:
        assert np.array_equal(pixels(out / x["file"]), pixels(single / x["file"])), x["file"]
    # a rerun on two processes finds everything done
    cmd[cmd.index("--main_process_port") + 1] = str(free_port())
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "nothing to do: 6 image(s)" in r.stdout, f"{r.stdout[-1500:]}\n{r.stderr[-3000:]}"


# -- the planning helpers ---------------------------------------------------------------------------

def test_seeds_names_and_batches_are_planned_as_documented():
    entries = [Entry("a"), Entry("b", seed=100), Entry("c", width=96, height=64), Entry("d")]
    jobs = list(Plan(entries, 2, 7, 64, 64))
    assert [j.seed for j in jobs] == [7, 8, 100, 101, 11, 12, 13, 14]
    assert [j.file for j in jobs] == [f"{i:05d}.png" for i in range(8)]
    # batches never mix sizes, and keep the order
    assert [[j.index for j in b] for b in batches(jobs, 3)] == [[0, 1, 2], [3], [4, 5], [6, 7]]
    assert [[j.index for j in b] for b in batches(jobs, 1)] == [[i] for i in range(8)]


def test_lora_and_size_specs(tmp_path):
    f = tmp_path / "l.safetensors"
    f.write_bytes(b"")
    assert lora_spec(str(f)) == (str(f), 1.0)
    assert lora_spec(f"{f}:0.5") == (str(f), 0.5)
    assert lora_spec("owner/name:-1") == ("owner/name", -1.0)         # a hub id
    with pytest.raises(UsageError, match="no such file"):
        lora_spec("loras/style.safetensors")
    assert parse_size("1024x768") == (1024, 768) and parse_size([96, 64]) == (96, 64)


def test_merge_keeps_one_line_per_file_and_drops_a_torn_line(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"file": "00001.png", "seed": 1}\n{"file": "00000.png", "se')
    (tmp_path / "manifest.part-1.jsonl").write_text('{"file": "00002.png", "seed": 2}\n')
    (tmp_path / "manifest.part-0.jsonl").write_text('{"file": "00001.png", "seed": 9}\n')
    assert merge_manifest(tmp_path, {"00000.png": {"file": "00000.png", "seed": 0}}) == 3
    assert [(r["file"], r["seed"]) for r in read_lines(tmp_path / "manifest.jsonl")] == \
        [("00000.png", 0), ("00001.png", 9), ("00002.png", 2)]
    assert not list(tmp_path.glob("manifest.part-*"))


@given(st.text(max_size=200))
def test_any_prompts_file_gives_prompts_or_one_usage_error(tmp_path_factory, text):
    """The whole class of prompts-file faults: every text is prompts or a UsageError, never a crash."""
    path = tmp_path_factory.mktemp("fuzz") / "p.txt"
    path.write_text(text, encoding="utf-8")
    try:
        entries = read_prompts(path)
    except UsageError as err:
        assert "\n" not in str(err)
        return
    assert entries and all(isinstance(e.prompt, str) and e.prompt.strip() for e in entries)


@given(st.dictionaries(st.sampled_from(["prompt", "seed", "size", "width", "height", "schedule", "negative_prompt",
                                        "other"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-5, 2**64), st.floats(allow_nan=True),
                                 st.text(max_size=12), st.lists(st.integers(-3, 3000), max_size=3)), max_size=5))
def test_any_json_line_gives_an_entry_or_one_usage_error(tmp_path_factory, obj):
    path = tmp_path_factory.mktemp("fuzz") / "p.txt"
    path.write_text(json.dumps(obj) + "\n")
    try:
        (e,) = read_prompts(path)
    except UsageError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(e.prompt, str) and e.prompt.strip()
    assert e.seed is None or 0 <= e.seed < 2**63
    assert e.width is None or e.width >= 1


def test_processes_that_disagree_on_the_work_are_refused(monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: mine * 2)
    plan_module.check_agreement(3, {1})                    # all agree: nothing raised
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: mine + [(2, "another digest")])
    with pytest.raises(UsageError, match=r"the processes disagree on the images still to make \(2, 2 per process\)"):
        plan_module.check_agreement(3, {1})


def test_the_dtype_keyword_follows_the_installed_diffusers(monkeypatch):
    import torch
    from diffusers.utils import deprecation_utils

    assert load_module.dtype_kwarg(torch.bfloat16) == {"dtype": torch.bfloat16}        # this diffusers: dtype
    monkeypatch.delattr(deprecation_utils, "_resolve_dtype")                          # an older one
    assert load_module.dtype_kwarg(torch.bfloat16) == {"torch_dtype": torch.bfloat16}


def test_the_default_preset_is_the_models_own(tmp_path, capsys):
    from ralu_torch.testing import flux_pipeline
    from tiny import tiny_sd3_with_text

    sd3 = tmp_path / "sd3"
    tiny_sd3_with_text().save_pretrained(sd3)
    assert main(["generate", "--model", str(sd3), "--prompt", "a cat", "--num-images", "2",
                 "--out-dir", str(tmp_path / "out"), *SMALL]) == 0
    assert {r["preset"] for r in manifest(tmp_path / "out")} == {"sd3-medium-7x"}
    schnell = tmp_path / "schnell"
    flux_pipeline(guidance_embeds=False).save_pretrained(schnell)
    family, variant = plan_module.model_family(str(schnell))
    assert (family.name, variant) == ("flux", "flux-schnell")


def test_flags_given_with_from_override_the_recipe(model_dir, tmp_path, capsys):
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", *SMALL, "--select", "random",
                 "--out", str(first)]) == 0
    assert main(["generate", "--from", str(first), "--upsample", "token", "--out", str(again)]) == 0
    capsys.readouterr()
    assert main(["info", str(again)]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert (recipe["select"], recipe["upsample"]) == ("random", "token")    # kept from the recipe, and the flag's


class Loaded(Exception):
    """Raised in place of loading the weights: every check before it passed."""


FLAG_VALUES = {
    "--prompt": ["a cat", "", "x" * 500],
    "--seed": ["0", "-1", str(2**63), "1.5", "nan"],
    "--height": ["64", "0", "-64", "100", "65536"],
    "--width": ["96", "0", "33"],
    "--num-images": ["1", "3", "0", "-2"],
    "--batch-size": ["1", "4", "0"],
    "--preset": ["flux-dev-4x", "sd3-medium-7x", "nope", "flux-schnell-16x"],
    "--schedule": ["missing.json", "prompts.txt", "."],
    "--guidance-scale": ["3.5", "inf", "-1"],
    "--true-cfg": ["4", "nan"],
    "--negative-prompt": ["blurry"],
    "--max-sequence-length": ["16", "0"],
    "--device": ["cpu", "cuda:7", "tpu", "cpu:0"],
    "--dtype": ["float32", "float64"],
    "--lora": ["missing.safetensors", "owner/name:0.5", "x:inf"],
    "--offload": ["none", "model", "disk"],
    "--baseline-steps": ["4", "0"],
    "--out": ["x.png", "noext", "/nonexistent/x.png", "."],
    "--out-dir": ["out", "/nonexistent/a/b", "prompts.txt"],
    "--prompts": ["prompts.txt", "missing.txt", "."],
    "--from": ["missing.png", "prompts.txt"],
}
FLAGS_ONLY = ["--compare", "--compile", "--overwrite", "--force"]


@given(st.dictionaries(st.sampled_from(sorted(FLAG_VALUES)), st.integers(0, 10), max_size=6),
       st.sets(st.sampled_from(FLAGS_ONLY), max_size=2))
def test_any_flags_give_one_error_line_or_reach_loading(tmp_path_factory, model_dir, flags, switches):
    """The whole class of bad command lines: whatever the flags, ``ralu generate`` either
    stops with one error line (exit 2) or gets as far as loading the weights; never a traceback."""
    import contextlib
    import io

    work = tmp_path_factory.mktemp("flags")
    (work / "prompts.txt").write_text("a red cat\n")
    argv = ["generate", "--model", str(model_dir)]
    if not {"--prompts", "--from"} & set(flags):
        argv += ["--prompt", "a cat"]                          # a flag below may still replace it
    for flag, pick in flags.items():
        values = FLAG_VALUES[flag]
        argv += [flag, values[pick % len(values)]]
    argv += sorted(switches)
    cwd, load = os.getcwd(), gen_module.load_pipeline
    err = io.StringIO()
    os.chdir(work)
    gen_module.load_pipeline = lambda *a, **k: (_ for _ in ()).throw(Loaded())
    try:
        with contextlib.redirect_stderr(err):
            code = main(argv)
    except Loaded:
        code = "loaded"
    finally:
        os.chdir(cwd)
        gen_module.load_pipeline = load
    if code != "loaded":
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and lines and lines[-1].startswith("ralu: error: "), (argv, err.getvalue())
        assert "Traceback" not in err.getvalue()
