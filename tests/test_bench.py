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


def load(name):
    """A bench script as a module (its main not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_latency_of_ltx2_guided_prices_its_three_calls(capsys):
    """--family ltx2 --guided: LTX-2's encode needs the clip's size, so the bench prices it from
    its transformer's spec (only backends whose calls depend on their conditioning are encoded
    first), and says LTX2Pipeline's guidance is up to three calls a step."""
    out = run_script("latency.py", ["--family", "ltx2", "--model", "tiny", "--sizes", "64", "--batches", "1",
                                    "--repeats", "1", "--presets", "ltx2-512x768-7x", "--guided"], capsys)
    assert "guided (LTX2Pipeline's guidance: up to three calls per step)" in out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| 64 |")]
    assert [r[2] for r in rows][:3] == ["LTX2Pipeline 30 steps", "LTX2Pipeline 5 steps (= ltx2-512x768-7x FLOPs)",
                                        "RALU ltx2-512x768-7x"]


def latency_rows(out: str) -> list:
    """The rows of bench/latency.py's first table, as dicts by header."""
    lines = out[out.index("| size |"):].split("\n\n")[0].splitlines()         # up to the first blank line
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_latency_of_a_family_stacked_with_taylorseer_prices_the_cache(capsys):
    out = run_script("latency.py", ["--family", "qwen-image", "--model", "tiny", "--sizes", "64", "--batches", "1",
                                    "--repeats", "1", "--presets", "qwen-image-7x", "--taylorseer"], capsys)
    ratio = {r["run"]: float(r["FLOP ratio"].rstrip("x")) for r in latency_rows(out)}
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
    mod = load("solve.py")
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
    out = run_script("planning.py", ["--counts", "1", "1000000000", "--repeats", "1"], capsys)
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 1,000,000,000 |")]
    assert len(rows) == 2 and rows[0].split("|")[3].strip() == "1.00x"


def test_gpu_check_writes_its_report_and_says_what_it_skipped(tmp_path, monkeypatch, capsys):
    """bench/gpu_check.py's report on this machine, with its sections cut to a tiny latency run
    (the full CPU run: `python bench/gpu_check.py --report r.md`)."""
    gpu_check = load("gpu_check.py")
    tiny = [sys.executable, "bench/latency.py", "--model", "tiny", "--sizes", "128", "--batches", "1", "--repeats", "1"]
    monkeypatch.setattr(gpu_check, "sections", lambda cuda, memory: [
        ("FLUX latency (tiny)", tiny, 120, None), ("FLUX.1-dev at full size", None, 0, "needs a GPU")])
    report = tmp_path / "r.md"
    assert gpu_check.main(["--report", str(report)]) == 0
    text = report.read_text()
    assert "- card: none (no CUDA device)" in text and "- FLUX.1-dev at full size: needs a GPU" in text
    assert re.search(r"- RALU flux-dev-7x at 128x128, batch 1: [\d.]+x wall speed-up \(noise n/a\) over the 50-step "
                     r"baseline, FLOP ratio [\d.]+x \(wall / FLOP [\d.]+: one repeat, noise unknown\)", text)
    assert "--time-limit 72" in text                          # 0.6 of the section's 120 s
    assert "| 128 | 1 | FluxPipeline 50 steps |" in text
    assert gpu_check.main(["--report", str(report), "--budget", "1"]) == 0        # no time: nothing runs, said so
    assert "- FLUX latency (tiny): the time budget ran out (1 s" in report.read_text()


def test_condition_selection_bench(capsys):
    """bench/condition_selection.py: one photograph and one tiny pipeline, small."""
    out = run_script("condition_selection.py", ["--size", "256", "--photos", "astronaut", "--fractions", "0.25",
                                                "--models", "flux-control"],
                     capsys)
    assert "| astronaut |" in out and "| flux-control | image | 64 |" in out


# -- timing side by side (issue 27): interleaved repeats, minima, noise, wall against FLOPs ---------
# Driven by injected clocks and times: no wall-clock assertion anywhere.

from ralu_schedule.timing import BEYOND, UNKNOWN, WITHIN, Timing, agreement, interleaved, ratio_noise  # noqa: E402


class FakeClock:
    """A clock that each call moves on by the duration the running call was given."""

    def __init__(self):
        self.now, self.order, self.durations = 0.0, [], {}

    def __call__(self):
        return self.now

    def call(self, label, seconds):
        def run():
            self.order.append(label)
            self.now += seconds.pop(0)
        self.durations[label] = seconds
        return run


def test_interleaved_rounds_rotate_and_keep_each_runs_times():
    clock = FakeClock()
    calls = [("a", clock.call("a", [3.0, 1.0, 2.0])), ("b", clock.call("b", [5.0, 6.0, 4.0])),
             ("c", clock.call("c", [1.5, 1.5, 1.0]))]
    seen = []
    t = interleaved(calls, 3, clock=clock, before=lambda label: seen.append(("before", label)),
                    after=lambda label, s: seen.append((label, s)))
    assert clock.order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]       # rotated by one each round
    assert t["a"].times == (3.0, 1.0, 2.0) and t["b"].times == (5.0, 6.0, 4.0) and t["c"].best == 1.0
    assert seen[:2] == [("before", "a"), ("a", 3.0)]
    assert t["b"].spread == pytest.approx(0.5) and t["a"].median == 2.0


def test_interleaved_stops_at_the_deadline_after_whole_rounds():
    clock = FakeClock()
    calls = [("a", clock.call("a", [2.0] * 5)), ("b", clock.call("b", [3.0] * 5))]
    t = interleaved(calls, 5, clock=clock, deadline=6.0)                        # rounds end at 5, 10: two run
    assert t["a"].repeats == t["b"].repeats == 2
    clock = FakeClock()
    t = interleaved([("a", clock.call("a", [9.0]))], 3, clock=clock, deadline=0.0)   # at least one round
    assert t["a"].repeats == 1 and t["a"].spread is None


def test_a_loaded_baseline_is_caught_by_the_minimum_and_a_real_departure_is_flagged():
    # the gpu_check report of issue 27: one repeat of a baseline slowed by other load gave 32.46x
    # against a FLOP ratio of 7.22x; one repeat cannot tell load from a real difference
    slowed, ralu = Timing((22.9,)), Timing((0.7055,))
    assert round(slowed.best / ralu.best, 2) == 32.46
    assert agreement(slowed.best / ralu.best, 7.22, ratio_noise(slowed, ralu)) == UNKNOWN
    # interleaved repeats: the load hit one repeat of the baseline; the minimum is the quiet time
    base, ralu = Timing((22.9, 5.21, 5.25)), Timing((0.7055, 0.703, 0.71))
    assert base.best / ralu.best == pytest.approx(7.41, abs=0.01)
    assert agreement(base.best / ralu.best, 7.22, ratio_noise(base, ralu)) == WITHIN      # the noise is large
    # a quiet machine (spreads of 1-2%): 7.41x against 7.22x is beyond what that noise explains
    base, ralu = Timing((5.21, 5.25, 5.27)), Timing((0.703, 0.705, 0.71))
    assert ratio_noise(base, ralu) == pytest.approx(0.0115 + 0.00996, abs=1e-4)
    assert agreement(base.best / ralu.best, 7.22, ratio_noise(base, ralu)) == BEYOND
    assert agreement(7.22 * 1.01, 7.22, 0.02) == agreement(7.22 / 1.01, 7.22, 0.02) == WITHIN
    with pytest.raises(ValueError, match="positive, finite"):
        Timing((0.0,))


def test_latency_table_rows_from_injected_timings():
    latency = load("latency.py")
    results = [("Pipe 50 steps", Timing((10.0, 10.2, 10.1)), 1.0),
               ("Pipe 7 steps (= a-7x FLOPs)", Timing((1.40, 1.41, 1.42)), 7.0),       # 7.14x vs 7.0: within 3.4%
               ("RALU a-7x", Timing((1.0, 1.01, 1.02)), 7.2),                         # 10x vs 7.2: beyond
               ("RALU b-4x", Timing((2.5,)), 4.0)]                                     # one repeat: unknown
    per_image = {}
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in latency.table_rows(512, 1, results, per_image, 1)]
    assert rows[0][5:9] == ["1.00x", "±2.0%", "1.00x", "1.00"]
    assert rows[1][5:9] == ["7.14x", "±3.4%", "7.00x", "1.02"]
    assert rows[2][5:9] == ["10.00x", "±4.0%", "7.20x", "1.39 *"]
    assert rows[3][5:9] == ["4.00x", "n/a", "4.00x", "1.00 ?"]
    rows4 = latency.table_rows(512, 4, [(label, Timing((4 * t.best * 0.8,)), r) for label, t, r in results],
                               per_image, 1)
    assert rows4[0].endswith("| 1.25x |")                                               # per-image gain vs batch 1
    assert latency.noise_summary([t for _, t, _ in results]) == (
        "noise (spread of a run's repeats, (max - min) / min): median ±2.0%, largest ±2.0%")
    assert latency.noise_summary([Timing((1.0,))]).startswith("noise: unknown")


def test_latency_says_what_its_time_limit_cut(capsys):
    out = run_script("latency.py", ["--model", "tiny", "--sizes", "64", "--batches", "1", "2", "--repeats", "3",
                                    "--baseline-steps", "4", "--presets", "flux-dev-7x", "--time-limit", "0"], capsys)
    rows = latency_rows(out)
    assert [r["batch"] for r in rows] == ["1"] * 3 and rows[1]["noise"] == "n/a"     # one round of the first
    assert rows[2]["wall / FLOP"].endswith(" ?")
    assert "time limit: 64x64 at batch 1: 1 of 3 repeats (--time-limit 0 s reached)" in out
    assert "time limit: 64x64 at batch 2: not measured (--time-limit 0 s reached)" in out


GPU_TABLE = """| size | batch | run | min s | median s | speed-up | noise | FLOP ratio | wall / FLOP | gain |
|---|---|---|---|---|---|---|---|---|---|
| 512 | 1 | FluxPipeline 50 steps | 5.210 | 5.250 | 1.00x | ±1.2% | 1.00x | 1.00 |  |
| 512 | 1 | RALU flux-dev-7x | 0.703 | 0.705 | 7.41x | ±2.2% | 7.22x | 1.03 * |  |
| 512 | 1 | RALU flux-dev-7x + TaylorSeer | 0.600 | 0.605 | 8.68x | ±2.0% | 10.95x | 0.79 * |  |
| 512 | 4 | RALU flux-dev-7x | 2.703 | 2.705 | 7.71x | n/a | 7.22x | 1.07 ? |  |
| 512 | 1 | RALU flux2-dev-7x | 0.9 | 0.9 | 7.30x | ±9.0% | 7.48x | 0.98 |  |
"""


def test_gpu_check_summary_says_which_speed_ups_the_noise_explains():
    gpu_check = load("gpu_check.py")
    assert gpu_check.speedup_rows(GPU_TABLE) == [
        "- RALU flux-dev-7x at 512x512, batch 1: 7.41x wall speed-up (noise ±2.2%) over the 50-step baseline, "
        "FLOP ratio 7.22x (wall / FLOP 1.03: departs from the FLOP ratio by more than the noise explains)",
        "- RALU flux-dev-7x at 512x512, batch 4: 7.71x wall speed-up (noise n/a) over the 50-step baseline, "
        "FLOP ratio 7.22x (wall / FLOP 1.07: one repeat, noise unknown)",
        "- RALU flux2-dev-7x at 512x512, batch 1: 7.30x wall speed-up (noise ±9.0%) over the 50-step baseline, "
        "FLOP ratio 7.48x (wall / FLOP 0.98, within the noise)"]


def test_gpu_check_keeps_no_empty_table():
    gpu_check = load("gpu_check.py")
    partial = ("device: CPU; model: proxy FLUX\nsome notice\n\neach run: the minimum of 3 repeat(s)\n\n"
               + GPU_TABLE.splitlines()[0] + "\n" + GPU_TABLE.splitlines()[1] + "\n")
    assert gpu_check.keep(partial) == "device: CPU; model: proxy FLUX"
    assert gpu_check.table_rows(gpu_check.keep(partial)) == 0
    assert gpu_check.table_rows(gpu_check.keep(partial + GPU_TABLE.splitlines()[2] + "\n")) == 1


def test_gpu_check_report_says_plainly_when_a_section_ran_out_of_time(tmp_path, monkeypatch):
    gpu_check = load("gpu_check.py")
    header = "\\n".join(GPU_TABLE.splitlines()[:2])
    slow = [sys.executable, "-c", f"import time; print('device: CPU'); print('{header}'); time.sleep(30)"]
    monkeypatch.setattr(gpu_check, "sections", lambda cuda, memory: [("FLUX latency (stalled)", slow, 2, None)])
    report = tmp_path / "r.md"
    assert gpu_check.main(["--report", str(report)]) == 0
    text = report.read_text()
    assert ("- FLUX latency (stalled): stopped at its time limit (2 s) before any row finished: this machine was "
            "too slow or too loaded for the budget") in text
    body = text.split("```")[-2]                                   # the section's output
    assert body.strip() == "device: CPU\n\n(no row finished within the time limit)"


@pytest.mark.parametrize("family, extra", [
    ("z-image", ["--presets", "z-image-7x"]),
    ("qwen-image-2.1", ["--presets", "qwen-image-2.1-7x"]),
    ("hunyuanvideo1.5", ["--presets", "hunyuanvideo1.5-480p-7x", "--frames", "5", "--guided"]),
])
def test_latency_breakdown_sees_the_transformer_of_families_run_module_by_module(family, extra, capsys):
    """Z-Image, Qwen-Image 2.1 and HunyuanVideo 1.5 run their transformers' modules themselves (no
    call to pipe.transformer): the breakdown times the backend's velocity, so the transformer's
    share is measured (docs/backends.md's first Z-Image rows, 0.0%, came from a hook on the
    transformer's forward, before it timed the velocity)."""
    out = run_script("latency.py", ["--family", family, "--model", "tiny", "--sizes", "64", "--batches", "1",
                                    "--repeats", "1", "--baseline-steps", "4", *extra], capsys)
    breakdown = out[out.index("RALU's time by part"):]
    row = [c.strip() for c in breakdown.splitlines()[-1].strip("|").split("|")]
    assert row[2].startswith("RALU ") and float(row[3].rstrip("%")) > 0


def test_a_proxy_pipeline_reads_its_replaced_transformer():
    """bench/latency.py's proxies replace the tiny pipeline's transformer; what the pipeline's
    __init__ derives from it must follow (HunyuanVideo 1.5's image-embedding width: the stock
    proxy run failed in its image embedder on the tiny model's width)."""
    import torch

    from ralu_torch.testing import tiny_inputs

    latency = load("latency.py")
    pipe, text_tokens = latency.build_family("hunyuanvideo1.5", "proxy", "cpu", torch.float32)
    assert pipe.vision_states_dim == pipe.transformer.config.image_embed_dim == 256
    assert pipe.vision_num_semantic_tokens == 729                        # as published
    pipe.set_progress_bar_config(disable=True)
    out = pipe(**tiny_inputs(pipe, 1, text_tokens=text_tokens, guided=True), height=32, width=32, num_frames=1,
               num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    assert out.shape == (1, pipe.vae.config.latent_channels, 1, 2, 2) and torch.isfinite(out).all()
