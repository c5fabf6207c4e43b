"""What the command lines print (issue 27, part 3): one progress display per run, a bar on a
terminal and plain lines elsewhere, no dependency notices, ``--quiet``, errors one line and
last, a closed pipe ending quietly; and docs/generate.md's captured log is what the command
prints."""

import fcntl
import io
import logging
import os
import re
import shlex
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from ralu_schedule._main import CLOSED_PIPE, run_main
from ralu_torch import console as console_module
from ralu_torch.cli import main

ROOT = Path(__file__).parents[1]
SMALL = ["--height", "64", "--width", "64", "--max-sequence-length", "16", "--device", "cpu"]
PROMPTS = 'a red cat\n{"prompt": "a blue dog", "seed": 42, "size": "96x64"}\n'
#: what must never reach a log: dependency notices, loading and stage bars, cursor control
NOISE = ("torchvision", "torchao", "register_constant", "Loading pipeline components", "Loading weights",
         "RALU stage", "\x1b", "\r", "Traceback")


def _times(text: str) -> str:
    """Wall times (``1.5 s``, ``2 min 05 s``) as ``T``: they differ from run to run."""
    return re.sub(r"\d+ (h|min) \d+ (min|s)|\d+\.\d+ s", "T", text)


def _documented_log():
    """docs/generate.md's logged command (its argv) and the log it shows."""
    text = (ROOT / "docs" / "generate.md").read_text()
    after = text[text.index("<!-- log: tests/test_console.py"):]
    command, log = re.findall(r"^```\n(.*?)^```", after, re.S | re.M)[:2]
    argv = shlex.split(command.replace("\\\n", " "))
    return argv, log


def test_a_batch_jobs_log_is_plain_lines_and_the_documented_one(model_dir, tmp_path):
    """In a fresh process (the notices come at import), stdout and stderr into one file."""
    argv, documented = _documented_log()
    assert argv[:2] == ["ralu", "generate"] and argv[-2:] == ["run.log", "2>&1"] and argv[-3] == ">"
    (tmp_path / "tiny-flux").symlink_to(model_dir)
    (tmp_path / "prompts.txt").write_text(PROMPTS)
    with open(tmp_path / "run.log", "w") as log:
        r = subprocess.run([sys.executable, "-m", "ralu_torch", *argv[1:-3]], cwd=tmp_path, stdout=log, stderr=log,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    text = (tmp_path / "run.log").read_text()
    assert r.returncode == 0, text
    assert not [n for n in NOISE if n in text], text
    lines = text.splitlines()
    assert all(line.startswith("ralu: ") for line in lines[:-1]) and lines[-1].startswith("wrote 2 image(s)")
    assert _times(text) == _times(documented)


class _Terminal:
    """A pseudo-terminal as ``sys.stderr`` (100 columns), what it shows read in a thread."""

    def __init__(self, monkeypatch):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.stream = io.TextIOWrapper(io.FileIO(slave, "w"), encoding="utf-8", write_through=True)
        self.chunks = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        monkeypatch.setattr(sys, "stderr", self.stream)

    def _read(self):
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:                        # the slave side closed
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    def shown(self) -> str:
        self.stream.close()
        self.reader.join(timeout=10)
        os.close(self.master)
        return b"".join(self.chunks).decode()


def test_a_terminal_gets_one_bar_and_nothing_else(model_dir, tmp_path, monkeypatch, capsys):
    term = _Terminal(monkeypatch)
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--num-images", "3", "--batch-size", "2",
                 "--out-dir", str(tmp_path / "out"), *SMALL]) == 0
    shown = term.shown()
    assert not [n for n in NOISE if n not in ("\r", "\x1b") and n in shown], shown
    lines = [line for line in shown.replace("\r\n", "\n").split("\n") if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("ralu: loading "), shown     # the note, then one bar
    frames = lines[1].split("\r")
    assert "images 1-2/3, step" in shown and "image 3/3, step 10/10" in shown
    assert frames[-1].startswith("100%|") and "images 3/3" in frames[-1]
    assert capsys.readouterr().out.startswith("wrote 3 image(s) to ")


def test_a_log_gets_a_step_line_at_most_every_interval(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(console_module, "LINE_INTERVAL", 0.0)       # every step: a long image, in short
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--out", str(tmp_path / "a.png"),
                 *SMALL]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [_times(line) for line in lines[1:]] == [f"ralu: image 1/1, step {k}/10, T" for k in range(1, 11)] + \
        [f"ralu: image 1/1 done ({tmp_path / 'a.png'}), T"]


def test_quiet_prints_the_result_line_only(model_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--out", str(tmp_path / "a.png"),
                 "--quiet", *SMALL]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 1 and out.startswith(f"wrote {tmp_path / 'a.png'} (64x64")
    assert main(["demo", "--seeds", "2", "--size", "8", "--out", str(tmp_path / "d.png"), "-q"]) == 0
    assert capsys.readouterr() == (f"wrote {tmp_path / 'd.png'}\n", "")


def test_quiet_eval_prints_its_last_line_only(monkeypatch, capsys, tmp_path):
    import ralu_torch.evaluation.run as run

    def evaluate(args, say=print):
        for line in ("a: images in x", "| table |", "", "wrote x/eval.csv, x/eval.md"):
            say(line)
        return tmp_path

    monkeypatch.setattr(run, "evaluate", evaluate)
    argv = ["eval", "--model", "analytic", "--out-dir", str(tmp_path)]
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr() == ("wrote x/eval.csv, x/eval.md\n", "")
    assert main(argv) == 0
    assert capsys.readouterr().out == "a: images in x\n| table |\n\nwrote x/eval.csv, x/eval.md\n"


@pytest.mark.parametrize("logger", sorted(console_module.NOTICES))
def test_notices_are_filtered_for_a_command_only(logger):
    """Each notice the command line drops, dropped while a command runs and shown outside one
    (library use is left alone); another message of the same logger always shows."""
    notice = {"torchao": "Failed to load /x/_C_mxfp8.so: Could not load this library",
              "torch.utils._pytree": "<enum 'KernelPreference'> is an Enum subclass ... Calling register_constant() "
                                     "on Enum subclasses is deprecated and will be an error in a future release.",
              "diffusers.quantizers.torchao.torchao_quantizer":
                  "Unable to import `torchao` Tensor objects. This may affect loading checkpoints",
              "transformers.utils.import_utils": "`CLIPImageProcessor` requires torchvision (not installed); falling "
                                                 "back to `CLIPImageProcessorPil` for backward compatibility."}[logger]
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        with console_module.session():
            log.warning(notice)
            log.warning("something else")
        log.warning(notice)
    finally:
        log.removeHandler(handler)
    assert seen == ["something else", notice]
    assert not [f for f in log.filters if isinstance(f, console_module._Notice)]


def test_library_warnings_the_user_cannot_act_on_are_filtered_for_a_command_only():
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with console_module.session():
            warnings.warn("`FluxPosEmbed` is deprecated and will be removed in version 1.0.0.", FutureWarning)
            warnings.warn("something else", FutureWarning)
        warnings.warn("`FluxPosEmbed` is deprecated and will be removed in version 1.0.0.", FutureWarning)
    assert [str(w.message)[:14] for w in seen] == ["something else", "`FluxPosEmbed`"]


def test_a_command_leaves_the_libraries_progress_bars_as_it_found_them(model_dir, tmp_path, capsys):
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog
    from huggingface_hub.utils import are_progress_bars_disabled

    before = (dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled(), are_progress_bars_disabled())
    seen = []
    original = console_module.loading_bars_off

    def watched():
        original()
        seen.append((dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled(), are_progress_bars_disabled()))

    import ralu_torch.generate as gen

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gen._console, "loading_bars_off", watched)
        assert main(["generate", "--model", str(model_dir), "--prompt", "a cat", "--out", str(tmp_path / "a.png"),
                     *SMALL]) == 0
    assert seen == [(False, False, True)]          # off while the model loaded (a log: the hub's too)
    assert (dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled(), are_progress_bars_disabled()) == before


# -- a reader that stops reading ------------------------------------------------------------------

def _closed_pipe_run(argv, cwd) -> subprocess.CompletedProcess:
    """``argv`` with stdout a pipe whose reading end is closed before it starts: every write fails."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, *argv], cwd=cwd, stdout=w, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    finally:
        os.close(w)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from ralu_schedule import preset
    from ralu_torch.recipe import RECIPE_FORMAT, RECIPE_KEY

    d = tmp_path_factory.mktemp("pipe")
    info = PngInfo()
    info.add_text(RECIPE_KEY, '{"format": "%s", "prompt": "%s"}' % (RECIPE_FORMAT, "a cat " * 2000))
    Image.new("RGB", (8, 8)).save(d / "x.png", pnginfo=info)
    preset("flux-dev-7x").save(d / "s.json")
    return d


@pytest.mark.parametrize("argv", [
    ["-m", "ralu_torch", "info", "x.png"],
    ["-m", "ralu_schedule", "preset", "--list"],
    ["-m", "ralu_schedule", "preset", "flux-dev-7x", "--format", "sigmas"],
    ["-m", "ralu_schedule", "solve", "--steps", "2", "3", "5", "--ends", "0.2", "0.3", "1.0", "--json"],
    ["-m", "ralu_schedule", "check", "s.json"],
    ["-m", "ralu_schedule", "cost", "flux-dev-7x", "--json"],
    ["-m", "ralu_schedule", "plot", "--preset", "flux-dev-7x", "--out", "p.png", "--overwrite"],
], ids=lambda a: " ".join(a[1:3]))
def test_a_closed_pipe_ends_quietly(files, argv):
    r = _closed_pipe_run(argv, files)
    assert r.returncode == CLOSED_PIPE and r.stderr == "", r.stderr


def test_the_common_frame_ends_every_command_the_same_way(capsys):
    """Both command lines run their commands in run_main: what it does with each ending."""
    def raising(err):
        def body():
            print("partial output")
            raise err
        return body

    assert run_main("x", raising(BrokenPipeError())) == CLOSED_PIPE
    assert run_main("x", raising(ValueError("bad"))) == 2
    assert run_main("x", raising(KeyboardInterrupt())) == 130
    assert run_main("x", raising(OSError(36, "File name too long", "a" * 300))) == 2
    out, err = capsys.readouterr()
    assert out == "partial output\n" * 4
    assert err.splitlines()[0] == "x: error: bad" and err.splitlines()[1] == "x: interrupted"
    assert "NAME_MAX 255 bytes a name" in err.splitlines()[2] and len(err.splitlines()) == 3
    with pytest.raises(OSError):                   # any other OSError is a bug: its traceback is kept
        run_main("x", raising(OSError(5, "Input/output error")))
