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
