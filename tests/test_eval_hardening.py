"""``ralu eval`` against what careful use finds (issue 27): configuration strings fuzzed, a
configuration's spellings and defaults, repeated options, numeric flags out of range on either
backend, damaged and foreign files in the output folder, a folder of earlier results, refused
runs that must leave nothing behind, and the metric models offline."""

import math
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ralu_torch.cli import main
from ralu_torch.evaluation.configs import MAX_STEPS, TAYLORSEER_DEFAULTS, Config, parse_config, parse_configs

# -- configuration strings ------------------------------------------------------------------------

NUMBERS = ["0", "1", "2", "3", "4", "04", "007", "10000", "10001", "99999999999999999999", "-1", "+2", "0.05",
           "0.050", ".5", "1e-2", "1e400", "-0", "nan", "NaN", "inf", "-inf", "Infinity", "1_0", " 3", "3 ", "٤",
           "²", "0x1", "1.5", "none", ""]
PIECES = ["baseline", "baseline:", "exact", "flux-dev-7x", "flux-dev-4x", "sd3-medium-7x", "missing.json", "+",
          ":", ",", "=", "+taylorseer", "+taylorseer:", "interval=", "warmup=", "cooldown=", "order=", "lite=",
          "predicted_cost=", "+fbcache", "+fbcache:", "threshold=", "+pab", "+pab:", "skip=", "+heun", "+euler",
          "+unipc", "+upsample:", "latent", "token", "+kept-noise:", "exact", "unit", "+parameters:", "default",
          "optimised", "+select:", "edges", "authors", "+ablation:", "naive-upsampling", "no-mixed-stage"]
MODIFIERS = ["+heun", "+euler", "+unipc", "+taylorseer", "+taylorseer:interval=3,warmup=02", "+taylorseer:lite=1",
             "+taylorseer:order=1,cooldown=none", "+fbcache", "+fbcache:0.050", "+fbcache:threshold=1e-1", "+pab:2",
             "+pab:03", "+upsample:latent", "+upsample:token", "+kept-noise:unit", "+kept-noise:exact",
             "+parameters:default", "+parameters:optimised", "+select:edges", "+select:random",
             "+ablation:naive-upsampling"]
config_text = st.one_of(
    st.builds(lambda b, mods: b + "".join(mods),
              st.sampled_from(["flux-dev-7x", "flux-dev-4x", "sd3-medium-7x", "baseline:8", "baseline:008", "exact"]),
              st.lists(st.sampled_from(MODIFIERS), max_size=4)),
    st.lists(st.sampled_from(PIECES + NUMBERS), min_size=1, max_size=9).map("".join),
    st.builds(lambda b, n, mods: f"{b}:{n}" + "".join(mods), st.just("baseline"), st.sampled_from(NUMBERS),
              st.lists(st.sampled_from(["+heun", "+taylorseer", "+fbcache:0.1", "+pab:3"]), max_size=2)),
    st.builds(lambda p, c, items: f"{p}+{c}:" + ",".join(items), st.sampled_from(["flux-dev-7x", "baseline:5"]),
              st.sampled_from(["taylorseer", "fbcache", "pab"]),
              st.lists(st.builds(lambda k, v: f"{k}={v}" if k else v,
                                 st.sampled_from(["", "interval", "warmup", "cooldown", "order", "lite",
                                                  "predicted_cost", "threshold", "skip"]),
                                 st.sampled_from(NUMBERS)), max_size=3)),
    st.text(max_size=30),
)


def numbers_of(c: Config) -> list:
    return ([c.steps] if c.steps is not None else []) + ([v for _, v in c.cache.params] if c.cache else [])


@settings(max_examples=400, deadline=None)
@given(config_text)
def test_a_configuration_string_parses_to_one_canonical_form_or_is_one_error(text):
    """Anything either parses to a configuration whose numbers are finite and in range and whose
    canonical form reads back as itself, or is one ValueError line: never another exception."""
    try:
        c = parse_config(text)
    except ValueError as err:
        assert "\n" not in str(err) and str(err), repr(err)
        event("refused")
        return
    event("parsed")
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers_of(c)), c
    assert all(0 <= v <= MAX_STEPS for v in numbers_of(c)), c
    again = parse_config(c.text)
    assert again == c and again.text == c.text, (text, c.text, again.text)
    assert all(not isinstance(v, float) or repr(v) in c.text for v in numbers_of(c))


@pytest.mark.parametrize("spellings", [
    ["baseline:4", "baseline:04", "baseline:0004"],
    ["flux-dev-7x", "flux-dev-7x+upsample:latent", "flux-dev-7x+parameters:default+kept-noise:exact",
     "flux-dev-7x+select:edges"],
    ["flux-dev-7x+fbcache", "flux-dev-7x+fbcache:0.05", "flux-dev-7x+fbcache:threshold=0.050",
     "flux-dev-7x+fbcache:5e-2"],
    ["flux-dev-7x+pab", "flux-dev-7x+pab:2", "flux-dev-7x+pab:skip=02"],
    ["flux-dev-7x+taylorseer", "flux-dev-7x+taylorseer:interval=5", "flux-dev-7x+taylorseer:warmup=3,order=1,lite=0",
     "flux-dev-7x+taylorseer:cooldown=none,predicted_cost=0"],
    ["flux-dev-7x+taylorseer:interval=3,warmup=2", "flux-dev-7x+taylorseer:warmup=02,interval=3,order=1"],
    ["flux-dev-4x+heun+upsample:token", "flux-dev-4x+upsample:token+heun"],
])
def test_spellings_and_defaults_of_one_configuration_are_one_configuration(spellings):
    parsed = [parse_config(s) for s in spellings]
    assert len({c.text for c in parsed}) == 1 and all(c == parsed[0] for c in parsed)
    assert parsed[0].text == spellings[0]                  # the shortest spelling is the canonical one
    with pytest.raises(ValueError, match=re.escape(f"is the same as {spellings[0]!r} (both are {spellings[0]})")):
        parse_configs([spellings[0], spellings[-1]])


def test_a_schedule_file_is_one_configuration_under_each_of_its_paths(tmp_path, monkeypatch):
    from ralu_schedule import preset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    preset("flux-dev-7x").save("s.json")
    spellings = ["s.json", "./s.json", "sub/../s.json", str(tmp_path / "s.json")]
    assert {parse_config(s).text for s in spellings} == {"s.json"}
    with pytest.raises(ValueError, match="is the same as 's.json'"):
        parse_configs(["s.json", str(tmp_path / "s.json")])


def test_euler_is_the_analytic_backends_own_solver_and_not_a_second_configuration():
    assert [c.text for c in parse_configs(["flux-dev-7x", "flux-dev-7x+euler"])] == ["flux-dev-7x", "flux-dev-7x+euler"]
    with pytest.raises(ValueError, match="the analytic backend's solver is Euler"):
        parse_configs(["flux-dev-7x", "flux-dev-7x+euler"], analytic=True)


@pytest.mark.parametrize("text, says", [
    ("flux-dev-7x+taylorseer:interval=2,interval=3", "taylorseer option interval given twice"),
    ("flux-dev-7x+taylorseer:lite=0,lite=1", "taylorseer option lite given twice"),
    ("flux-dev-7x+fbcache:threshold=0.1,threshold=0.2", "fbcache option threshold given twice"),
    ("flux-dev-7x+fbcache:0.1,threshold=0.2", "fbcache option threshold given twice"),
    ("flux-dev-7x+pab:2,3", "pab option skip given twice"),
    ("flux-dev-7x+upsample:token+upsample:latent", "upsample given twice"),
    ("flux-dev-7x+fbcache:nan", "fbcache takes a threshold in [0, 1]"),
    ("flux-dev-7x+fbcache:inf", "fbcache takes a threshold in [0, 1]"),
    ("flux-dev-7x+taylorseer:predicted_cost=nan", "predicted_cost needs a decimal number"),
    ("flux-dev-7x+taylorseer:interval=1_0", "interval needs a decimal number"),
    ("flux-dev-7x+taylorseer:interval=20000", f"interval must be at most {MAX_STEPS}"),
    ("flux-dev-7x+pab:20000", f"an integer skip range from 1 to {MAX_STEPS}"),
    ("baseline:nan", "baseline:STEPS"),
    ("baseline:٤", "baseline:STEPS"),
    ("baseline:²", "baseline:STEPS"),
    ("baselines:4", "baseline:STEPS"),
])
def test_repeats_and_non_finite_or_foreign_numbers_are_refused_naming_them(text, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_config(text)


def test_taylorseer_defaults_are_the_policys():
    from ralu_schedule.caching import TaylorSeerPolicy

    assert parse_config("flux-dev-7x+taylorseer").cache.policy == TaylorSeerPolicy()
    assert TAYLORSEER_DEFAULTS["lite"] == 0 and TAYLORSEER_DEFAULTS["interval"] == TaylorSeerPolicy().interval


# -- the analytic eval's memory ----------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 5, 11, 37])
def test_texture_draws_gathered_in_chunks_are_the_same_bit_for_bit(n, monkeypatch):
    """The texture field's samples gather each sample's covariance factor a chunk at a time (the
    analytic eval's 1024 reference draws at 32x32 held 8 GB at once): the values are unchanged."""
    import torch

    import ralu_torch.backends.gaussian as gaussian
    from ralu_torch.evaluation.analytic import field_for

    field = field_for("texture", texture_size=16)
    N = 16 * 16
    monkeypatch.setattr(gaussian, "_GATHER_VALUES", 1 << 62)           # one gather, as before
    whole = field.sample(n, torch.Generator().manual_seed(n))
    monkeypatch.setattr(gaussian, "_GATHER_VALUES", 3 * N * N)         # chunks of 3 samples
    assert torch.equal(field.sample(n, torch.Generator().manual_seed(n)), whole)
    chunks = gaussian._chunks(n, 3)
    assert [lo for lo, _ in chunks][0] == 0 and chunks[-1][1] == n and all(hi - lo >= min(n, 2) for lo, hi in chunks)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))


# -- the flags, on both kinds of run -------------------------------------------------------------------

ANALYTIC = ["--model", "analytic", "--configs", "baseline:2", "exact", "--num-images", "3", "--height", "16",
            "--data", "gaussian"]


def refused(argv, out: Path, capsys) -> str:
    """``ralu eval argv`` exits 2 with one error line, and has made no folder."""
    capsys.readouterr()
    assert main(["eval", *argv, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ralu: error:"), err
    assert not out.exists()
    return err[0]


@pytest.mark.parametrize("flags, says", [
    (["--exponent", "nan"], "--exponent must be finite"),
    (["--exponent", "inf"], "--exponent must be finite"),
    (["--exponent", "1e300"], "--exponent must lie in [-4, 4]"),
    (["--data", "gaussian", "texture", "--texture-size", "8"], "--texture-size must be a multiple of 8 from 16"),
    (["--data", "gaussian", "texture", "--texture-size", "1024"], "--texture-size must be a multiple of 8 from 16"),
    (["--num-images", "1000000000"], "must be at most 2^24"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--seed", "-3"], "--seed must lie in [0, 2**63)"),
    (["--guidance-scale", "nan"], "--guidance-scale must be finite"),
    (["--max-sequence-length", "0"], "--max-sequence-length must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--sheet", "-1"], "--sheet must be >= 0"),
    (["--guidance-scale", "5"], "--guidance-scale is for a diffusers model only"),
    (["--batch-size", "4"], "--batch-size is for a diffusers model only"),
    (["--device", "cpu"], "--device is for a diffusers model only"),
    (["--data", "gaussian", "gaussian"], "--data: gaussian given twice"),
    (["--configs", "baseline:4", "baseline:04"], "is the same as 'baseline:4' (both are baseline:4)"),
])
def test_an_analytic_flag_out_of_range_or_unread_is_one_line_and_no_folder(tmp_path, capsys, flags, says):
    assert says in refused(ANALYTIC + flags, tmp_path / "out", capsys)


@pytest.mark.parametrize("flag, value", [("--exponent", "3"), ("--height", "32")])
def test_a_flag_of_the_stationary_field_is_refused_without_it(tmp_path, capsys, flag, value):
    argv = ["--model", "analytic", "--configs", "baseline:2", "exact", "--data", "texture", flag, value]
    assert f"{flag} is the gaussian data set's and --data is texture" in refused(argv, tmp_path / "out", capsys)


@pytest.mark.parametrize("flags, says", [
    (["--metrics", "psnr", "psnr"], "--metrics: psnr given twice"),
    (["--metrics", "psnr,psnr"], "unknown metric 'psnr,psnr'"),
    (["--exponent", "3"], "--exponent is for --model analytic only"),
    (["--data", "texture"], "--data is for --model analytic only"),
    (["--configs", "flux-dev-7x+fbcache:0.05", "flux-dev-7x+fbcache"], "is the same as"),
])
def test_a_model_flag_repeated_or_unread_is_one_line_before_the_model_is_read(tmp_path, capsys, flags, says):
    argv = ["--model", str(tmp_path / "no-model"), "--configs", "baseline:2", "flux-dev-7x", *flags]
    assert says in refused(argv, tmp_path / "out", capsys)


def test_the_unread_flags_defaults_are_the_command_lines():
    from ralu_torch.cli import build_parser
    from ralu_torch.evaluation.run import ANALYTIC_ONLY, MODEL_ONLY

    args = build_parser().parse_args(["eval", "--model", "m", "--out-dir", "d"])
    assert {k: getattr(args, k) for k in {**MODEL_ONLY, **ANALYTIC_ONLY}} == {**MODEL_ONLY, **ANALYTIC_ONLY}


FLOATS = st.sampled_from(["nan", "inf", "-inf", "1e300", "-1e300", "-4.0001", "4.5", "-4", "4", "0", "2", "-1.5"])
FLAG_VALUES = {
    "--exponent": FLOATS,
    "--height": st.sampled_from(["-4", "0", "12", "16", "18", "20", "1000000"]),
    "--num-images": st.sampled_from(["-1", "0", "1", "2", "4", "1000000000"]),
    "--seed": st.sampled_from(["-5", "0", "7", str(2**63 - 1), str(2**63), str(2**70)]),
    "--texture-size": st.sampled_from(["0", "8", "12", "16", "24", "72"]),
    "--guidance-scale": FLOATS,
    "--batch-size": st.sampled_from(["0", "1", "2"]),
    "--repeats": st.sampled_from(["0", "3", "4"]),
    "--width": st.sampled_from(["16", "20"]),
}
#: Values each flag takes on the analytic backend, at the ends of its ranges (drawn half the time).
IN_RANGE = {"--exponent": ["-4", "4", "0", "-1.5", "3.99"], "--height": ["16", "20"], "--num-images": ["2", "3"],
            "--seed": ["0", "7", str(2**63 - 1)], "--texture-size": ["16", "24"]}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_analytic_numbers_fuzzed_run_with_every_value_finite_or_are_refused_in_one_line(tmp_path_factory, capsys,
                                                                                          draw):
    """Whatever numbers the analytic backend's flags get: refused in one line with no folder
    made, or a table whose every metric is a finite number (never a blank table)."""
    import csv

    data = draw.draw(st.sampled_from([["gaussian"], ["texture"], ["gaussian", "texture"]]), label="data")
    if draw.draw(st.booleans(), label="in range"):
        readable = [f for f in IN_RANGE if not (f in ("--height", "--exponent") and "gaussian" not in data)
                    and not (f == "--texture-size" and "texture" not in data)]
        keys = draw.draw(st.lists(st.sampled_from(readable), max_size=3, unique=True), label="flags")
        flags = {k: draw.draw(st.sampled_from(IN_RANGE[k]), label=k) for k in keys}
    else:
        keys = draw.draw(st.lists(st.sampled_from(sorted(FLAG_VALUES)), max_size=2, unique=True), label="flags")
        flags = {k: draw.draw(FLAG_VALUES[k], label=k) for k in keys}
    out = tmp_path_factory.mktemp("fuzz") / "out"
    argv = ["eval", "--model", "analytic", "--configs", "baseline:2", "exact", "--data", *data,
            *(["--num-images", "2"] if "--num-images" not in flags else []),
            *(["--height", "16"] if "--height" not in flags and "gaussian" in data else []),
            *(["--texture-size", "16"] if "--texture-size" not in flags and "texture" in data else []),
            *(x for kv in flags.items() for x in kv), "--out-dir", str(out)]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exit_:        # argparse's own refusals go through main too; nothing else may exit
        rc = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    if rc == 2:
        assert len(err) == 1 and err[0].startswith("ralu: error:"), (argv, err)
        assert not out.exists(), argv
        event("refused")
        return
    assert rc == 0, (argv, err)
    event("ran")
    with open(out / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["data"] for r in rows} == set(data) and len(rows) == 2 * len(data)
    for r in rows:
        keys = ["fd", "var"] + (["band0", "band1", "band2", "band3"] if r["data"] == "gaussian" else
                                ["texture", "background"])
        assert all(r[k] != "" and math.isfinite(float(r[k])) for k in keys), (argv, r)


# -- canonical names in the tables ---------------------------------------------------------------------

def test_the_tables_name_each_configuration_by_its_canonical_form(tmp_path, capsys):
    import csv

    out = tmp_path / "out"
    assert main(["eval", "--model", "analytic", "--configs", "baseline:02", "flux-dev-7x+upsample:latent",
                 "--num-images", "2", "--height", "16", "--data", "gaussian", "--out-dir", str(out)]) == 0
    with open(out / "eval.csv", newline="") as f:
        assert [r["configuration"] for r in csv.DictReader(f)] == ["baseline:2", "flux-dev-7x"]
    md = (out / "eval.md").read_text()
    assert "| baseline:2 |" in md and "| flux-dev-7x |" in md and "baseline:02" not in md.split("```")[2]


# -- the output folder -----------------------------------------------------------------------------------

def test_a_failed_run_removes_what_it_made_and_nothing_else(tmp_path):
    from ralu_torch.evaluation.results import Folder

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="mid-run"):
        with Folder(out, {"r": 1}, ["eval.md"], False).writing("images") as folder:
            folder.stage("eval.md").write_text("half")
            raise RuntimeError("mid-run")
    assert not out.exists()                                   # made by the run and left empty: removed
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="mid-run"):
        with Folder(out, {"r": 1}, ["eval.md"], False).writing("images") as folder:
            folder.stage("eval.md").write_text("half")
            raise RuntimeError("mid-run")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]   # the folder was there: kept, with its file


def test_the_analytic_backend_resumes_refuses_and_overwrites(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--model", "analytic", "--configs", "baseline:2", "exact", "--num-images", "2", "--height", "16",
            "--data", "gaussian", "--out-dir", str(out)]
    out.mkdir()
    (out / "eval.md").write_text("# hand-written\n")
    capsys.readouterr()
    assert main(argv) == 2 and "exists and was not written by ralu eval" in capsys.readouterr().err
    assert (out / "eval.md").read_text() == "# hand-written\n"
    assert main(argv + ["--overwrite"]) == 0
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(written) == {"eval.md", "eval.csv", "eval.png", "eval.json"}
    capsys.readouterr()
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().out          # the same recipe: kept as it is
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written
    assert main(argv[:-2] + ["--seed", "1", "--out-dir", str(out)]) == 2
    assert "another ralu eval (it differs in seed)" in capsys.readouterr().err
    (out / "eval.json").write_text("{")
    assert main(argv) == 2 and "eval.json' is damaged (not valid JSON" in capsys.readouterr().err


# -- the metric models with no network ---------------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup and connection refused, as with no network; the attempts, counted."""
    import socket

    tried = []

    def refuse(*args, **kwargs):
        tried.append(args[:2])
        raise socket.gaierror(socket.EAI_NONAME, "the network is blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, *a: refuse(*a))
    return tried


def test_default_metrics_offline_are_one_line_each_with_one_look_at_the_hub(model_dir, tmp_path, capsys, caplog,
                                                                              monkeypatch, record_property, no_network):
    """The network blocked: one request to the hub, no retries, one line per metric skipped, and
    the run ends with the others. The seconds the metrics took to load go to the test's report
    (``record_property``), not into an assertion."""
    import ralu_torch.evaluation.metrics as metrics_module

    tried = no_network
    loading = []
    original = metrics_module.load_metrics

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            loading.append(time.perf_counter() - start)

    monkeypatch.setattr("ralu_torch.evaluation.run.load_metrics", timed)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["eval", "--model", str(model_dir), "--configs", "baseline:2", "flux-dev-7x", "--prompts", str(prompts),
                 "--out-dir", str(out), "--height", "64", "--width", "64", "--max-sequence-length", "16",
                 "--device", "cpu", "--repeats", "1"]) == 0               # the default metrics, the default CLIP
    captured = capsys.readouterr()
    record_property("metric_loading_seconds", round(loading[0], 3))
    said = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
    assert "Retry" not in said and "retry" not in said.lower(), said
    assert len(tried) == 1, tried                                       # the hub, asked once
    clip = [line for line in captured.out.splitlines() if line.startswith("CLIP score: skipped")]
    assert len(clip) == 1 and "openai/clip-vit-large-patch14 is not in the local cache and the hub cannot be " \
                              "reached" in clip[0] and "blocked by the test" in clip[0], clip
    skipped = [line for line in captured.out.splitlines() if ": skipped, " in line]
    assert len(skipped) == len({line.split(":")[0] for line in skipped})            # one line per metric
    assert (out / "eval.md").is_file() and "PSNR" in (out / "eval.md").read_text()


def test_a_metric_model_in_the_local_cache_loads_with_the_hub_unreachable(tmp_path, monkeypatch, no_network):
    """A hub id whose files were cached before loads from the cache (huggingface_hub's layout)."""
    from huggingface_hub import constants
    from test_eval import tiny_clip

    from ralu_torch.evaluation.configs import DEFAULT_CLIP
    from ralu_torch.evaluation.metrics import MetricModels, load_metrics

    revision = "0" * 40
    repo = tmp_path / f"models--{DEFAULT_CLIP.replace('/', '--')}"
    model, processor = tiny_clip()
    model.save_pretrained(repo / "snapshots" / revision)
    processor.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    said = []
    loaded = load_metrics(["clip-score"], MetricModels(), say=said.append)
    assert [m.name for m in loaded] == ["clip-score"] and not said and len(no_network) == 1


def test_an_analytic_result_deleted_is_made_again_and_a_directory_in_its_place_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--model", "analytic", "--configs", "baseline:2", "exact", "--num-images", "2", "--height", "16",
            "--data", "gaussian", "--out-dir", str(out)]
    assert main(argv) == 0
    png = (out / "eval.png").read_bytes()
    (out / "eval.png").unlink()
    capsys.readouterr()
    assert main(argv) == 0 and "nothing to do" not in capsys.readouterr().out     # the record lists it: made again
    assert (out / "eval.png").read_bytes() == png
    (out / "eval.md").unlink()
    (out / "eval.md").mkdir()
    assert main(argv + ["--overwrite"]) == 2
    assert "eval.md' is a directory, where ralu eval writes its eval.md" in capsys.readouterr().err
