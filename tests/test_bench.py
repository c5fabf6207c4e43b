"""The benchmark scripts run (small sizes); their numbers are printed, not asserted."""

import re
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench"


def run_script(name, argv, capsys):
    old = sys.argv
    sys.argv = [name, *argv]
    try:
        runpy.run_path(str(BENCH / name), run_name="__main__")
    finally:
        sys.argv = old
    return capsys.readouterr().out


def test_noise_bench(capsys):
    out = run_script("noise.py", ["--sizes", "256", "--ours-only", "512", "--repeats", "1"], capsys)
    assert "dense/ours" in out and "256" in out and "n/a" in out


def test_latency_tiny(capsys):
    out = run_script("latency.py", ["--model", "tiny", "--sizes", "64", "--batches", "1", "2", "--repeats", "1",
                                    "--baseline-steps", "8"], capsys)
    rows = [line for line in out.splitlines() if line.startswith("| 64 |")]
    assert len(rows) == 2 * 5 + 2 * 2          # 5 runs per batch size, then 2 breakdown rows per batch size
    assert "CPU" in out and "FLOP ratio" in out and "edge detection" in out


def test_latency_tiny_stacked(capsys):
    out = run_script("latency.py", ["--model", "tiny", "--sizes", "128", "--batches", "1", "--repeats", "1",
                                    "--baseline-steps", "8", "--presets", "flux-dev-7x", "--stacked"], capsys)
    runs = [line.split("|")[3].strip() for line in out.splitlines() if line.startswith("| 128 |")]
    assert runs[:7] == ["FluxPipeline 8 steps", "FluxPipeline 7 steps (= flux-dev-7x FLOPs)", "RALU flux-dev-7x",
                        "RALU flux-dev-10x", "FluxPipeline 4 steps (schnell's budget)", "RALU flux-schnell-16x",
                        "RALU flux-dev-7x + TaylorSeer"]


def test_latency_of_a_video_family_guided_times_its_transformer(capsys):
    """--family wan --guided: the stock pipeline and RALU with CFG, the FLOP ratio priced with two
    calls per step, and the breakdown's transformer part measured (Wan's backend runs its
    experts' blocks itself, which a hook on pipe.transformer would not see)."""
    out = run_script("latency.py", ["--family", "wan", "--model", "tiny", "--sizes", "64", "--batches", "1",
                                    "--repeats", "1", "--frames", "5", "--presets", "wan-480p-7x", "--guided"], capsys)
    assert "clips of 5 frames; guided (two calls per step)" in out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| 64 |")]
    assert [r[2] for r in rows] == ["WanPipeline 50 steps", "WanPipeline 8 steps (= wan-480p-7x FLOPs)",
                                    "RALU wan-480p-7x", "RALU wan-480p-7x"]
    assert float(rows[-1][3].rstrip("%")) > 0                 # the breakdown row: the transformer's share
    with pytest.raises(SystemExit) as stop:                   # a distilled family has nothing to guide with
        run_script("latency.py", ["--family", "flux2", "--model", "tiny", "--guided"], capsys)
    assert stop.value.code == 2


def test_latency_of_a_family_stacked_with_taylorseer_prices_the_cache(capsys):
    out = run_script("latency.py", ["--family", "qwen-image", "--model", "tiny", "--sizes", "64", "--batches", "1",
                                    "--repeats", "1", "--presets", "qwen-image-7x", "--taylorseer"], capsys)
    ratio = {r[2]: float(r[6].rstrip("x")) for r in
             ([c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| 64 |"))
             if len(r) > 6 and r[6].endswith("x")}
    assert ratio["RALU qwen-image-7x + TaylorSeer"] > ratio["RALU qwen-image-7x"] > 5


def test_memory_bench_tiny(capsys):
    """One preset (each run is a fresh process): the row's shape does not depend on how many."""
    out = run_script("memory.py", ["--model", "tiny", "--sizes", "64", "--presets", "flux-dev-7x"], capsys)
    row = [line for line in out.splitlines() if line.startswith("| 64 |")]
    assert len(row) == 1 and row[0].count("|") == 5          # size, FluxPipeline, RALU flux-dev-7x, ratio


def test_compile_bench_tiny(capsys):
    """Two FluxPipeline steps: the recompile count does not depend on them."""
    out = run_script("compile.py", ["--backend", "eager", "--size", "64", "--steps", "2"], capsys)
    assert "| RALU flux-dev-7x |" in out and "graphs added by later runs" in out


def test_cost_table(capsys):
    out = run_script("cost_table.py", [], capsys)
    assert "| flux-dev-7x | flux-dev | 1024x1024 | 1024, 1330, 4096 |" in out


@pytest.mark.slow
def test_solve_bench(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("solve_bench", BENCH / "solve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.LAYOUTS = {k: v for k, v in mod.LAYOUTS.items() if "4-stage" in k}
    mod.main()
    assert "4-stage" in capsys.readouterr().out


def test_quality_bench_small(capsys, tmp_path):
    png = tmp_path / "q.png"
    out = run_script("quality.py", ["--seeds", "4", "--size", "16", "--presets", "flux-dev-7x", "--edged-size", "16",
                                    "--baseline-steps", "10", "--plot", str(png)], capsys)
    assert out.count("RALU, authors' parameters") == 2 and "naive late upsampling" in out
    assert "Texture-patch field 16x16" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_quality_bench_solver_table(capsys):
    out = run_script("quality.py", ["--seeds", "4", "--size", "16", "--presets", "flux-dev-7x", "--data", "solvers"],
                     capsys)
    rows = [line for line in out.splitlines() if line.startswith("| flux-dev-7x")]
    assert [r.split("|")[2].strip() for r in rows[::3]] == ["euler", "heun", "dpm-multistep", "unipc"]
    assert [int(r.split("|")[4]) for r in rows[:6]] == [10, 10, 7, 17, 17, 11]   # calls: RALU, same calls, same FLOPs


def test_ralu_demo_cli(tmp_path, capsys):
    from ralu_torch.cli import main

    png = tmp_path / "demo.png"
    assert main(["demo", "--seeds", "4", "--size", "16", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "RALU flux-dev-7x" in capsys.readouterr().out
    assert main(["demo", "--size", "10"]) == 2
    assert "--size must be a multiple of 4" in capsys.readouterr().err


def test_full_size_latency_model_is_flux_dev_architecture():
    """bench/latency.py's full-size model, built on the meta device (no memory)."""
    import torch

    from ralu_torch.testing import flux_pipeline

    pipe = flux_pipeline(tiny=False, device="meta", dtype=torch.bfloat16)
    n = sum(p.numel() for p in pipe.transformer.parameters())
    assert abs(n / 1e9 - 11.90) < 0.01                      # FLUX.1-dev's 11.9B-parameter transformer
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.config.latent_channels == 16
    assert pipe.transformer.config.guidance_embeds


def test_planning_bench(capsys):
    """A billion images asked for: the first image comes in the memory one image takes (printed)."""
    out = run_script("planning.py", ["--counts", "1", "1000000000"], capsys)
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 1,000,000,000 |")]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "1.00x"


def test_gpu_check_writes_its_report_and_says_what_it_skipped(tmp_path, monkeypatch, capsys):
    """bench/gpu_check.py's report on this machine, with its sections cut to a tiny latency run
    (the full CPU run takes about a minute and a half: `python bench/gpu_check.py --report r.md`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    tiny = [sys.executable, "bench/latency.py", "--model", "tiny", "--sizes", "128", "--batches", "1", "--repeats", "1"]
    monkeypatch.setattr(gpu_check, "sections", lambda cuda, memory: [
        ("FLUX latency (tiny)", tiny, 120, None), ("FLUX.1-dev at full size", None, 0, "needs a GPU")])
    report = tmp_path / "r.md"
    assert gpu_check.main(["--report", str(report)]) == 0
    text = report.read_text()
    assert "- card: none (no CUDA device)" in text and "- FLUX.1-dev at full size: needs a GPU" in text
    assert re.search(r"- RALU flux-dev-7x at 128x128, batch 1: [\d.]+x wall speed-up over the 50-step baseline, "
                     r"FLOP ratio [\d.]+x", text)
    assert "| 128 | 1 | FluxPipeline 50 steps |" in text
    assert gpu_check.main(["--report", str(report), "--budget", "1"]) == 0        # no time: nothing runs, said so
    assert "- FLUX latency (tiny): the time budget ran out (1 s" in report.read_text()
