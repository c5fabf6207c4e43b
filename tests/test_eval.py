"""``ralu eval`` end to end on tiny random FLUX and SD3 pipelines and tiny random CLIP models
built from configs (nothing downloaded), and on the analytic backend."""

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ralu_torch.cli import main
from ralu_torch.evaluation.configs import parse_config, parse_configs

SMALL = ["--height", "64", "--width", "64", "--max-sequence-length", "16", "--device", "cpu", "--repeats", "1"]
PROMPTS = "a red cat\na blue dog\n{\"prompt\": \"a tiny puppy\", \"seed\": 7}\n"
CONFIGS = ["baseline:4", "flux-dev-7x", "flux-dev-7x+taylorseer:interval=2,warmup=1"]


# -- configuration strings ------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical", [
    ("baseline:50", "baseline:50"),
    ("flux-dev-7x", "flux-dev-7x"),
    ("flux-dev-7x+taylorseer:warmup=2,interval=3", "flux-dev-7x+taylorseer:interval=3,warmup=2"),
    ("flux-dev-7x+fbcache:threshold=0.08", "flux-dev-7x+fbcache:0.08"),
    ("flux-dev-4x+upsample:token+heun", "flux-dev-4x+heun+upsample:token"),
    ("baseline:7+taylorseer", "baseline:7+taylorseer"),
    ("flux-dev-7x+ablation:naive-upsampling", "flux-dev-7x+ablation:naive-upsampling"),
])
def test_configurations_parse_to_one_canonical_form(text, canonical):
    c = parse_config(text)
    assert c.text == canonical and c.label == text
    assert c.slug.startswith(re.sub(r"[^A-Za-z0-9._=-]+", "_", canonical)[:20])


@pytest.mark.parametrize("text, says", [
    ("baseline", "baseline:STEPS"),
    ("baseline:0", "baseline:STEPS"),
    ("flux-dev-9x", "a preset (chroma-4x"),
    ("flux-dev-7x+bogus", "unknown modifier 'bogus'"),
    ("flux-dev-7x+taylorseer:speed=2", "taylorseer options are cooldown, interval"),
    ("flux-dev-7x+taylorseer:interval=0", "interval must be an integer >= 1"),
    ("flux-dev-7x+fbcache:1.5", "fbcache takes a threshold in [0, 1]"),
    ("flux-dev-7x+fbcache+taylorseer", "one cache at most"),
    ("flux-dev-7x+heun+unipc", "one solver at most"),
    ("flux-dev-7x+heun:fast", "solver heun takes no options"),
    ("flux-dev-7x+upsample:cubic", "upsample must be one of latent, token"),
    ("baseline:8+kept-noise:unit", "a baseline takes a cache or a solver"),
    ("exact+heun", "exact (the data themselves) takes no modifiers"),
    ("missing/schedule.json", "does not exist"),
])
def test_a_bad_configuration_is_one_error_naming_what_is_allowed(text, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_config(text)


def test_the_same_configuration_twice_is_refused():
    with pytest.raises(ValueError, match="is the same as"):
        parse_configs(["flux-dev-7x+taylorseer:interval=3,warmup=2", "flux-dev-7x+taylorseer:warmup=2,interval=3"])


def test_cli_errors_are_one_line_before_anything_loads(tmp_path, capsys):
    out = str(tmp_path)
    cases = [(["--model", "analytic", "--out-dir", out, "--configs", "flux-dev-7x+bogus"], "unknown modifier"),
             (["--model", "analytic", "--out-dir", out, "--configs", "flux-dev-7x+fbcache:0.1"],
              "analytic backend models TaylorSeer only"),
             (["--model", str(tmp_path / "nowhere"), "--out-dir", out, "--configs", "exact"], "--model analytic only"),
             (["--model", "analytic", "--out-dir", str(tmp_path / "a" / "b")], "does not exist"),
             (["--model", "analytic", "--out-dir", out, "--metrics", "fid"], None)]
    for argv, says in cases:
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("ralu: error:") and (says is None or says in err), err


# -- on a tiny FLUX with tiny CLIP models -------------------------------------------------------------

def clip_tokenizer():
    """A word-level tokenizer that tells CLIP-IQA's anchors ("Good photo." / "Bad photo.") and
    the test prompts' words apart."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "</s>"] + "Good Bad photo . a red cat blue dog tiny puppy".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>",
                                   model_max_length=77)


def tiny_clip(seed=0):
    """A random CLIP (model, processor) from configs: 32-pixel images, a word-level tokenizer."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig,
                              CLIPVisionConfig)

    torch.manual_seed(seed)
    text = CLIPTextConfig(vocab_size=20, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, pad_token_id=0, bos_token_id=1,
                          eos_token_id=2)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=8)).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=clip_tokenizer())
    return model, processor


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-clip")
    model, processor = tiny_clip()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def flux_eval(model_dir, clip_dir, tmp_path_factory):
    """One three-configuration eval of the tiny FLUX, and its output."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("eval")
    prompts = root / "prompts.txt"
    prompts.write_text(PROMPTS)
    out = root / "out"
    argv = ["eval", "--model", str(model_dir), "--prompts", str(prompts), "--num-images", "2", "--batch-size", "2",
            "--configs", *CONFIGS, "--out-dir", str(out), "--clip-model", str(clip_dir),
            "--clip-iqa-model", str(clip_dir), "--metrics", "psnr", "ssim", "lpips", "clip-score", "clip-iqa",
            "--sheet", "2", *SMALL]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return argv, out, buf.getvalue()


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_three_configuration_eval_writes_csv_table_plot_and_sheet(flux_eval):
    _, out, printed = flux_eval
    for name in ("eval.csv", "eval.md", "scores.csv", "timing.json"):
        assert (out / name).is_file()
    for name in ("eval.png", "contact_sheet.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = rows(out / "eval.csv")
    assert [r["configuration"] for r in summary] == CONFIGS
    assert all(int(r["images"]) == 6 for r in summary)
    md = (out / "eval.md").read_text()
    assert md.count("\n| ") == 4 and all(f"| {c} |" in md for c in CONFIGS)   # header + a row per configuration
    for c in CONFIGS:                                       # every image made, with the same seeds everywhere
        d = next((out / "images").glob(re.sub(r"[^A-Za-z0-9._=-]+", "_", parse_config(c).text)[:20] + "*"))
        lines = [json.loads(x) for x in (d / "manifest.jsonl").read_text().splitlines()]
        assert [r["seed"] for r in lines] == [0, 1, 2, 3, 7, 8]
        assert all(r["tflops"] > 0 and r["batch_size"] == 2 for r in lines)
    # TFLOPs: the manifest's counted calls; TaylorSeer skips calls, so it costs less than RALU alone
    tf = {r["configuration"]: float(r["tflops"]) for r in summary}
    assert tf[CONFIGS[2]] < tf[CONFIGS[1]]
    assert float(summary[1]["speedup_tflops"]) == pytest.approx(tf[CONFIGS[0]] / tf[CONFIGS[1]])
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 3 * 64 and sheet.height > 2 * 64            # 2 prompts, 3 configurations
    assert "seconds" in printed and "wrote" in printed


def test_psnr_of_the_reference_against_itself_is_infinite_and_ssim_one(flux_eval):
    _, out, _ = flux_eval
    ref = rows(out / "eval.csv")[0]
    assert math.isinf(float(ref["psnr_mean"])) and float(ref["ssim_mean"]) == pytest.approx(1.0)
    others = rows(out / "eval.csv")[1:]
    assert all(math.isfinite(float(r["psnr_mean"])) and float(r["ssim_mean"]) < 1 for r in others)
    assert "| inf |" in (out / "eval.md").read_text()


def test_each_metric_equals_its_library_function_on_the_same_images(flux_eval, clip_dir):
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    from torchmetrics.functional.multimodal import clip_image_quality_assessment, clip_score
    from transformers import CLIPModel, CLIPProcessor

    from ralu_torch.evaluation.metrics import ClipFeatures

    _, out, _ = flux_eval
    scores = rows(out / "scores.csv")
    pair = (ClipFeatures(CLIPModel.from_pretrained(clip_dir)).eval(), CLIPProcessor.from_pretrained(clip_dir))
    ref = {r["index"]: r for r in scores if r["configuration"] == CONFIGS[0]}
    checked = 0
    clip_values = []
    for r in scores:
        if r["configuration"] != CONFIGS[1]:
            continue
        img = torch.from_numpy(np.array(Image.open(out / r["file"]).convert("RGB"))).permute(2, 0, 1)
        base = torch.from_numpy(np.array(Image.open(out / ref[r["index"]]["file"]).convert("RGB"))).permute(2, 0, 1)
        x, y = img[None].float() / 255, base[None].float() / 255
        assert float(r["psnr"]) == pytest.approx(float(peak_signal_noise_ratio(x, y, data_range=1.0)), rel=1e-6)
        assert float(r["ssim"]) == pytest.approx(float(structural_similarity_index_measure(x, y, data_range=1.0)),
                                                 rel=1e-5)
        with torch.no_grad():
            cs = float(clip_score(img, r["prompt"], model_name_or_path=lambda: pair))
            iqa = float(clip_image_quality_assessment(img[None].float(), model_name_or_path=lambda: pair,
                                                      data_range=1.0, prompts=("quality",)))
        assert float(r["clip-score"]) == pytest.approx(cs, rel=1e-5, abs=1e-6)
        assert float(r["clip-iqa"]) == pytest.approx(iqa, rel=1e-5)
        clip_values.append((cs, iqa))
        checked += 1
    assert checked == 6 and len({iqa for _, iqa in clip_values}) > 1    # six images scored, not one value six times
    assert any(cs > 0 for cs, _ in clip_values)                # CLIP score clamps at 0: some are above it


def test_a_metric_whose_model_cannot_load_is_reported_and_skipped(flux_eval):
    _, out, printed = flux_eval
    header = rows(out / "eval.csv")[0].keys()
    try:
        import torchvision  # noqa: F401
    except ImportError:                               # torchmetrics' LPIPS needs torchvision's AlexNet
        assert re.search(r"^LPIPS: skipped, its model cannot be loaded \(needs torchvision\)", printed, re.M)
        assert "lpips_mean" not in header and "LPIPS: skipped" in (out / "eval.md").read_text()
    assert {"psnr_mean", "ssim_mean", "clip-score_mean", "clip-iqa_mean"} <= set(header)


def test_a_missing_clip_model_is_one_line_and_the_other_metrics_run(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    argv = ["eval", "--model", str(model_dir), "--configs", "baseline:2", "flux-dev-7x", "--out-dir", str(out),
            "--metrics", "psnr", "clip-score", "--clip-model", str(tmp_path / "no-such-clip"), "--sheet", "0", *SMALL]
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    assert main([*argv, "--prompts", str(prompts)]) == 0
    printed = capsys.readouterr().out
    skipped = [line for line in printed.splitlines() if line.startswith("CLIP score: skipped")]
    assert len(skipped) == 1
    summary = rows(out / "eval.csv")
    assert "psnr_mean" in summary[0] and "clip-score_mean" not in summary[0]


def test_a_rerun_resumes_and_makes_nothing(flux_eval, capsys):
    argv, out, _ = flux_eval
    images = sorted((out / "images").rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in images}
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("nothing to do: 6 image(s) already there") == 3
    assert "timing: reusing" in printed
    assert {p: p.stat().st_mtime_ns for p in images} == before


def copied(flux_eval, tmp_path):
    """The fixture's command and a copy of its output folder (the recipe does not name the folder)."""
    import shutil

    argv, out, _ = flux_eval
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    k = argv.index("--out-dir")
    return argv[:k + 1] + [str(copy)] + argv[k + 2:], copy


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ralu: error:"), err
    return err[0]


@pytest.mark.parametrize("damage", ["truncated", "strings", "a configuration missing", "a directory", "not UTF-8"])
def test_a_damaged_timing_file_is_one_line_naming_it_before_anything_runs(flux_eval, tmp_path, capsys, damage):
    argv, out = copied(flux_eval, tmp_path)
    path = out / "timing.json"
    kept = json.loads(path.read_text())
    if damage == "truncated":
        path.write_text(path.read_text()[:60])
    elif damage == "strings":
        path.write_text(json.dumps({**kept, "seconds": {k: "fast" for k in kept["seconds"]}}))
    elif damage == "a configuration missing":
        path.write_text(json.dumps({**kept, "seconds": dict(list(kept["seconds"].items())[1:])}))
    elif damage == "a directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe{}")
    before = {p: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(argv) == 2
    err = one_error(capsys)
    if damage == "a directory":
        assert "timing.json' is a directory, where ralu eval writes its timing.json" in err, err
    else:
        assert "timing.json' is damaged" in err and "delete it to time again, or pass --overwrite" in err, err
    assert {p: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == before      # nothing written
    if damage == "truncated":
        assert main(argv + ["--overwrite"]) == 0                 # times again, replacing it
        assert set(json.loads(path.read_text())["seconds"]) == set(kept["seconds"])


def test_a_folder_of_earlier_results_is_refused_resumed_or_overwritten(flux_eval, tmp_path, capsys):
    argv, out = copied(flux_eval, tmp_path)
    record = json.loads((out / "eval.json").read_text())
    assert set(record["files"]) == {"eval.md", "eval.csv", "eval.png", "scores.csv", "contact_sheet.png",
                                    "timing.json"}
    md = out / "eval.md"
    md.write_text(md.read_text() + "my notes\n")                # edited by hand: never replaced unasked
    capsys.readouterr()
    assert main(argv) == 2
    assert "eval.md' is not as ralu eval wrote it" in one_error(capsys)
    assert md.read_text().endswith("my notes\n")
    md.unlink()                                                # gone: the rest resumes, eval.md is made again
    assert main(argv) == 0 and "timing: reusing" in capsys.readouterr().out and md.is_file()
    # another recipe: refused, naming what differs; --overwrite replaces the results (and drops the sheet)
    assert main(argv + ["--sheet", "0", "--repeats", "2"]) == 2
    assert "holds the results of another ralu eval (it differs in repeats, sheet)" in one_error(capsys)
    other = argv + ["--sheet", "0"]
    assert main(other + ["--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("nothing to do: 6 image(s) already there") == 3 and "timing: reusing" in printed
    assert not (out / "contact_sheet.png").exists()
    assert set(json.loads((out / "eval.json").read_text())["files"]) == {"eval.md", "eval.csv", "eval.png",
                                                                          "scores.csv", "timing.json"}
    assert main(other) == 0                                    # and they are this recipe's now: it resumes


def test_results_a_run_did_not_write_are_refused_in_one_line(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.md").write_text("# my own notes\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    capsys.readouterr()
    assert main(["eval", "--model", str(model_dir), "--configs", "baseline:2", "flux-dev-7x", "--out-dir", str(out),
                 "--prompts", str(prompts), "--metrics", "psnr", *SMALL]) == 2
    assert "eval.md' exists and was not written by ralu eval" in one_error(capsys)
    assert (out / "eval.md").read_text() == "# my own notes\n" and sorted(p.name for p in out.iterdir()) == ["eval.md"]


def test_the_baseline_is_the_stock_pipeline(flux_eval, model_dir):
    """baseline:N runs RALU's one-stage layout, which equals FluxPipeline with N steps."""
    from diffusers import FluxPipeline

    _, out, _ = flux_eval
    first = next(r for r in rows(out / "scores.csv") if r["configuration"] == CONFIGS[0])
    pipe = FluxPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(first["prompt"], height=64, width=64, num_inference_steps=4, max_sequence_length=16,
                 generator=torch.Generator().manual_seed(int(first["seed"]))).images[0]
    ours = Image.open(out / first["file"]).convert("RGB")
    diff = np.abs(np.asarray(stock).astype(int) - np.asarray(ours).astype(int))
    assert diff.max() <= 1


def test_a_cache_on_sd3_and_an_analytic_only_config_are_refused_in_one_line(tmp_path, capsys):
    from tiny import tiny_sd3_with_text

    sd3 = tmp_path / "sd3"
    tiny_sd3_with_text().save_pretrained(sd3)
    out = tmp_path / "out"
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue dog\n")
    SD3 = [*SMALL, "--prompts", str(prompts)]
    assert main(["eval", "--model", str(sd3), "--configs", "baseline:2", "sd3-medium-7x+fbcache:0.1", "--out-dir",
                 str(out), "--metrics", "psnr", *SD3]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ralu: error:")]
    assert len(errors) == 1 and "no diffusers cache support" in errors[0]
    assert not out.exists()                                # refused: no folder made
    # SD3 runs its own preset, and the FLUX preset is refused by family
    assert main(["eval", "--model", str(sd3), "--configs", "baseline:2", "sd3-medium-7x", "--out-dir", str(out),
                 "--metrics", "psnr", "ssim", "--sheet", "0", *SD3]) == 0
    summary = rows(out / "eval.csv")
    assert [r["configuration"] for r in summary] == ["baseline:2", "sd3-medium-7x"]
    assert float(summary[1]["ssim_mean"]) < 1 and math.isinf(float(summary[0]["psnr_mean"]))
    capsys.readouterr()
    assert main(["eval", "--model", str(sd3), "--configs", "baseline:2", "flux-dev-7x", "--out-dir", str(out),
                 *SD3]) == 2
    assert "was made for flux-dev" in capsys.readouterr().err


def test_a_video_model_is_refused_in_one_line_before_loading(tmp_path, capsys):
    from ralu_torch.testing import wan_pipeline_with_text

    wan = tmp_path / "wan"
    wan_pipeline_with_text().save_pretrained(wan)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\n")
    capsys.readouterr()
    assert main(["eval", "--model", str(wan), "--configs", "baseline:2", "wan-480p-7x", "--out-dir",
                 str(tmp_path / "out"), "--prompts", str(prompts), *SMALL]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ralu: error:")]
    assert len(errors) == 1 and "scores images" in errors[0] and "video model (wan)" in errors[0], errors
    assert not (tmp_path / "out" / "images").exists()


# -- the analytic backend ----------------------------------------------------------------------------

def test_analytic_eval_is_the_quality_benchmark_code_path(tmp_path, capsys):
    from ralu_schedule import preset
    from ralu_torch.analysis.quality import run, spectrum_metrics
    from ralu_torch.backends.gaussian import GaussianBackend, GaussianField

    out = tmp_path / "a"
    assert main(["eval", "--model", "analytic", "--configs", "baseline:10", "exact", "flux-dev-7x",
                 "flux-dev-7x+taylorseer:interval=3,warmup=2", "--num-images", "6", "--height", "16",
                 "--texture-size", "16", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no contact sheet" in printed
    table = rows(out / "eval.csv")
    assert [(r["data"], r["configuration"]) for r in table] == [
        (d, c) for d in ("gaussian", "texture")
        for c in ("baseline:10", "exact", "flux-dev-7x", "flux-dev-7x+taylorseer:interval=3,warmup=2")]
    field = GaussianField(height=16, width=16)
    x, _ = run(GaussianBackend(field), preset("flux-dev-7x"), 6)
    ralu = table[2]
    assert float(ralu["fd"]) == pytest.approx(1e3 * spectrum_metrics(x, field)["fd"], rel=1e-12)
    assert float(ralu["fd_low"]) <= float(ralu["fd_high"])
    assert float(ralu["tflops"]) == pytest.approx(425.8, abs=0.05)          # the cost model's flux-dev-7x
    assert float(table[3]["tflops"]) == pytest.approx(283.0, abs=0.05)      # + TaylorSeer W=2 (docs/compose.md)
    assert table[1]["tflops"] == "" and table[5]["selected"] == ""
    assert 0 <= float(table[6]["selected"]) <= 1
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"


def quoted_fd(label: str) -> float:
    """The FD that docs/quality.md's first (stationary-field) table quotes for ``label`` under flux-dev-7x."""
    text = (Path(__file__).parents[1] / "docs" / "quality.md").read_text()
    table = text[text.index("| configuration | FD x1e3 | 0-0.0625"):]
    table = table[table.index("**flux-dev-7x**"):]
    row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
    return float(row.split("|")[2])


@pytest.mark.slow
def test_analytic_eval_reproduces_the_numbers_in_quality_md(tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["eval", "--model", "analytic", "--data", "gaussian", "--configs", "flux-dev-7x", "baseline:7",
                 "flux-dev-7x+ablation:naive-upsampling", "--out-dir", str(out)]) == 0
    fd = {r["configuration"]: float(r["fd"]) for r in rows(out / "eval.csv")}
    assert round(fd["flux-dev-7x"], 2) == quoted_fd("RALU, authors' parameters")
    assert round(fd["baseline:7"], 2) == quoted_fd("baseline 7 steps (same FLOPs)")
    assert round(fd["flux-dev-7x+ablation:naive-upsampling"], 2) == quoted_fd("naive late upsampling (no noise)")
