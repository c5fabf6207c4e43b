"""The ralu-schedule command line: outputs, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest

from ralu_schedule import Schedule, preset
from ralu_schedule.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_preset_json(capsys):
    code, out, err = run(capsys, "preset", "flux-dev-7x", "--json")
    assert code == 0 and err == ""
    assert Schedule.from_json(out) == preset("flux-dev-7x")


def test_preset_table_and_list(capsys):
    code, out, _ = run(capsys, "preset", "flux-dev-4x")
    assert code == 0 and "paper metric (JSD) = 0.0175" in out and "5.019" in out
    code, out, _ = run(capsys, "preset", "--list")
    assert "flux-dev-4x" in out and "flux-dev-7x" in out


def test_solve_json(capsys):
    code, out, _ = run(capsys, "solve", "--steps", "2", "3", "5", "--ends", "0.2", "0.3", "1.0",
                       "--fractions", "0.1", "1.0", "--factor", "2", "--base-shift", "3.0", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["jsd"] < 0.0266 and [t["fraction"] for t in d["transitions"]] == [0.1, 1.0]


def test_check_and_plot(capsys, tmp_path):
    f = tmp_path / "s.json"
    preset("flux-dev-7x").save(f)
    code, out, _ = run(capsys, "check", str(f))
    assert code == 0 and "flux-dev-7x" in out
    png = tmp_path / "d.png"
    code, out, _ = run(capsys, "plot", "--preset", "flux-dev-7x", "--out", str(png))
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "ralu_schedule", "preset", "flux-dev-7x", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["format"] == "ralu-schedule/1"


def test_error_is_one_line_without_traceback():
    r = subprocess.run([sys.executable, "-m", "ralu_schedule", "solve", "--steps", "2", "3",
                        "--ends", "0.2", "0.3", "1.0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "steps and ends must have the same length" in r.stderr


LAYOUT = ["--steps", "2", "3", "5", "--ends", "0.2", "0.3", "1.0"]


@pytest.mark.parametrize("argv, msg", [
    (["solve", "--steps", "2", "3", "--ends", "0.2", "0.3", "1.0"], "steps and ends must have the same length"),
    (["solve", "--steps", "2", "0", "5", "--ends", "0.2", "0.3", "1.0"], "step count must be an integer >= 1"),
    (["solve", "--steps", "2", "3", "5", "--ends", "0.3", "0.2", "1.0"], "ends must increase strictly"),
    (["solve", "--steps", "2", "3", "5", "--ends", "0.2", "0.3", "0.9"], "finish at 1.0"),
    (["solve", "--steps", "2", "3", "5", "--ends", "-0.2", "0.3", "1.0"], r"within (0, 1]"),
    (["solve", *LAYOUT, "--fractions", "0.1", "1.5"], r"fractions must lie in (0, 1]"),
    (["solve", *LAYOUT, "--fractions", "0.1"], "fractions must have one entry per transition (2)"),
    (["solve", *LAYOUT, "--factor", "1"], "each factor must be an integer >= 2"),
    (["solve", *LAYOUT, "--base-shift", "0"], "base shift must lie in [0.001, 1e+06], got 0"),
    (["solve", *LAYOUT, "--z-bounds", "1", "100"], "allow c = 1/Z^2 > 1/n = 0.25"),
    (["solve", "--steps", "2", "x", "--ends", "1.0"], "invalid int value: 'x'"),
    (["preset", "flux-pro-9x"], "unknown preset 'flux-pro-9x'; known presets: chroma-4x, chroma-7x, flux-dev-10x, flux-dev-4x"),
    (["cost", "flux-pro-9x"], "unknown preset 'flux-pro-9x'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments(capsys, argv, msg):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("ralu-schedule: error: ") and err.count("\n") == 1
    assert msg in err


@pytest.mark.parametrize("edit, msg", [
    (lambda d: d.update(format="other/1"), "format must be 'ralu-schedule/1'"),
    (lambda d: d.pop("transitions"), "missing keys: transitions"),
    (lambda d: d["transitions"][1].update(a=0.5), "transitions[1].a = 0.5 contradicts"),
])
def test_bad_json_files(capsys, tmp_path, edit, msg):
    d = preset("flux-dev-7x").to_dict()
    edit(d)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(d))
    code, _, err = run(capsys, "check", str(f))
    assert code == 2 and msg in err and err.count("\n") == 1


def test_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read schedule file" in err


def test_plot_without_matplotlib_says_what_to_install(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    code, _, err = run(capsys, "plot", "--preset", "flux-dev-7x", "--out", str(tmp_path / "x.png"))
    assert code == 1 and "plotting needs matplotlib: pip install 'ralu[plot]'" in err
    assert err.count("\n") == 1


# -- nothing given is silently dropped (issue 27): conflicting inputs, ignored options, empty strings --

from argparse import _StoreAction  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from ralu_schedule.cli import build_parser  # noqa: E402
from ralu_schedule.layout import MAX_FACTOR  # noqa: E402

TWO = ["--steps", "2", "3", "--ends", "0.3", "1.0"]


@pytest.mark.parametrize("argv, msg", [
    (["plot", "--preset", "flux-dev-7x", *TWO, "--out", "{out}"],
     "name one schedule, a --preset, a --schedule file or a layout (--steps and --ends); "
     "got a preset (flux-dev-7x) and a layout (--steps, --ends)"),
    (["plot", "--preset", "flux-dev-7x", "--schedule", "{json}", "--out", "{out}"], "and a --schedule file"),
    (["plot", "--schedule", "{json}", *TWO, "--out", "{out}"], "got a --schedule file"),
    (["plot", "--preset", "flux-dev-7x", "--factor", "3", "--out", "{out}"], "and a layout (--factor)"),
    (["plot", "--out", "{out}"], "name one schedule, a --preset"),
    (["plot", "--steps", "2", "3", "--out", "{out}"], "a layout needs both --steps and --ends; got only --steps"),
    (["plot", "--preset", "flux-dev-7x", "--method", "single-start", "--out", "{out}"],
     "--method only apply when solving a layout; a preset (flux-dev-7x) is already solved"),
    (["plot", "--schedule", "{json}", "--per-transition", "--z-bounds", "2", "9", "--out", "{out}"],
     "--per-transition, --z-bounds only apply when solving a layout; a --schedule file"),
    (["plot", *TWO, "--parameters", "authors", "--out", "{out}"], "--parameters chooses a preset's parameters"),
    (["plot", "--schedule", "{json}", "--parameters", "default", "--out", "{out}"], "--parameters chooses"),
    (["cost", "flux-dev-7x", *TWO], "got a preset (flux-dev-7x) and a layout (--steps, --ends)"),
    (["cost", "flux-dev-7x", "--fractions", "0.5", "1.0"], "and a layout (--fractions)"),
    (["cost", "flux-dev-7x", "--base-shift", "3"], "and a layout (--base-shift)"),
    (["cost"], "name one schedule, a preset or a layout (--steps and --ends)"),
    (["cost", "--ends", "0.3", "1.0"], "a layout needs both --steps and --ends; got only --ends"),
    (["preset", "flux-dev-7x", "--list"], "--list prints the table of presets; it takes no preset name (flux-dev-7x)"),
    (["preset", "--list", "--parameters", "authors", "--json"], "it takes no --parameters, --json"),
])
def test_conflicting_inputs_are_refused(capsys, tmp_path, argv, msg):
    preset("flux-dev-7x").save(tmp_path / "s.json")
    argv = [a.format(out=tmp_path / "d.png", json=tmp_path / "s.json") for a in argv]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert msg in err
    assert not (tmp_path / "d.png").exists()


def test_each_schedule_source_alone_still_plots(capsys, tmp_path):
    preset("flux-dev-4x").save(tmp_path / "s.json")
    for i, source in enumerate([["--preset", "flux-dev-7x", "--parameters", "authors"],
                                ["--schedule", str(tmp_path / "s.json")],
                                [*TWO, "--method", "single-start"]]):
        code, out, err = run(capsys, "plot", *source, "--out", str(tmp_path / f"{i}.png"))
        assert code == 0 and err == "" and (tmp_path / f"{i}.png").exists()


def string_options():
    """Every option of every ralu-schedule subcommand that takes one string: (command, flag or dest)."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if isinstance(action, _StoreAction) and action.nargs in (None, "?") and action.type not in (int, float):
                yield name, action.option_strings[0] if action.option_strings else action.dest


#: A valid command line per subcommand; a string option is appended or replaces its entry.
VALID = {"preset": {"name": "flux-dev-7x"}, "check": {"file": "{json}"}, "solve": {"--steps": TWO[1:3], "--ends": TWO[4:6]},
         "plot": {"--preset": "flux-dev-7x", "--out": "{out}"}, "cost": {"preset": "flux-dev-7x"}}


@pytest.mark.parametrize("command, option", list(string_options()))
@settings(max_examples=3, suppress_health_check=[HealthCheck.function_scoped_fixture])   # run() reads capsys
@given(blank=st.text(" \t\n\r\u00a0\u2003", max_size=3))
def test_every_empty_or_blank_string_option_is_refused(capsys, tmp_path_factory, command, option, blank):
    tmp = tmp_path_factory.mktemp("blank")
    preset("flux-dev-7x").save(tmp / "s.json")
    args = dict(VALID[command], **{option: blank})
    argv = [command]
    for key, value in args.items():
        values = value if isinstance(value, list) else [value]
        values = [v.format(out=tmp / "d.png", json=tmp / "s.json") for v in values]
        argv += values if not key.startswith("-") else [key, *values]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "") and err.count("\n") == 1, (argv, err)
    allowed = "must not be empty; " in err or "invalid choice: " in err and "choose from" in err
    assert allowed, err                                  # says what is allowed
    assert not (tmp / "d.png").exists()


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(factor=st.integers(2, MAX_FACTOR))
def test_solve_takes_every_factor(capsys, factor):
    code, out, err = run(capsys, "solve", *TWO, "--factor", str(factor), "--method", "single-start", "--json")
    assert code == 0 and err == "", err
    t = json.loads(out)["transitions"][0]
    assert t["factor"] == factor and 0 < t["c"] <= 1 / factor**2


def test_schedule_load_refuses_an_empty_name():
    for name in ("", " "):
        with pytest.raises(ValueError, match="schedule file name is empty"):
            Schedule.load(name)


def test_solve_refuses_a_factor_above_the_limit(capsys):
    code, _, err = run(capsys, "solve", *TWO, "--factor", str(MAX_FACTOR + 1))
    assert code == 2 and f"each factor must be at most {MAX_FACTOR}" in err
