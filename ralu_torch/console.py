"""What a ``ralu`` command shows while it runs: one progress display, nothing else on stderr
but errors and the lines that say something to the user.

- **Dependency notices** that say nothing to the user are filtered for the run: torchao's
  import-time notices (CUDA-only kernel libraries that do not load on a machine without CUDA,
  torch's deprecation of how it registers enums, diffusers' note on torchao's tensor classes),
  transformers' note that an image processor falls back to its PIL version without
  torchvision, and a deprecation diffusers warns of in its own Chroma code. RALU uses none of
  them; each filter matches one logger (or warning category) and one message.
- **One progress display per run**: diffusers' and transformers' weight-loading bars and the
  pipeline's own step bars are off; the run's :class:`Progress` replaces them. On a terminal it
  is one bar (the run's images, advanced step by step); anywhere else (a file, a pipe, a
  batch job's log) it is plain lines: one per image written, and one at most every
  :data:`LINE_INTERVAL` seconds while an image is being made, no cursor-control codes.
- ``--quiet``: no progress and no notes; errors and the final result line only.

Library use (``RALU(pipe)``) is not touched: it keeps diffusers' conventions
(``pipe.set_progress_bar_config``). Everything here is undone when the command returns.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
import warnings

#: Seconds between two progress lines while one image is being made (a log, not a terminal).
LINE_INTERVAL = 30.0

#: logger -> the notice it prints that says nothing to the user (see the module docstring).
NOTICES = {
    "torchao": lambda m: m.startswith("Failed to load ") and ".so" in m,
    "torch.utils._pytree": lambda m: "register_constant() on Enum subclasses is deprecated" in m,
    "diffusers.quantizers.torchao.torchao_quantizer":
        lambda m: m.startswith("Unable to import `torchao` Tensor objects"),
    "transformers.utils.import_utils": lambda m: "requires torchvision (not installed); falling back to" in m,
}


#: Python warnings a library raises from its own code, which the user cannot act on: diffusers'
#: Chroma transformer imports a class diffusers itself deprecates.
WARNINGS = ((FutureWarning, r"`FluxPosEmbed` is deprecated"),)


class _Notice(logging.Filter):
    def __init__(self, matches):
        super().__init__()
        self.matches = matches

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.matches(record.getMessage())


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Console:
    """The run's output: :meth:`note` (stderr, informational), :meth:`say` (stdout, part of the
    result, e.g. a table) and :meth:`result` (stdout, the final line), :meth:`progress`.
    ``quiet``: only :meth:`result` prints."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._stack = None                 # a command's: what it undoes when it ends (session)

    @property
    def stream(self):
        return sys.stderr                  # looked up when used, not when made (a test may swap it)

    @property
    def terminal(self) -> bool:
        return is_terminal(self.stream)

    def note(self, text: str) -> None:
        if not self.quiet:
            _flush(sys.stdout)
            print(f"ralu: {text}", file=self.stream, flush=True)

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    def result(self, text: str) -> None:
        print(text, flush=True)

    def progress(self, total, unit: str = "image", enabled: bool = True) -> "Progress":
        """The run's one progress display over ``total`` units (None: unknown)."""
        if self.quiet or not enabled:
            return Progress(None, total, unit)
        return Progress(self, total, unit)


def _flush(stream) -> None:
    try:
        stream.flush()
    except (AttributeError, ValueError):
        pass


_CURRENT = [Console()]


def current() -> Console:
    """The console of the command running now (outside a command: a default one, not quiet)."""
    return _CURRENT[-1]


@contextlib.contextmanager
def session(quiet: bool = False):
    """A command's console for its duration: the notices filtered, and the hub's download bars
    off except on a terminal without ``--quiet``; all restored after, as are the loading bars
    :func:`loading_bars_off` turns off."""
    console = Console(quiet=quiet)
    filters = [(logging.getLogger(name), _Notice(match)) for name, match in NOTICES.items()]
    for logger, f in filters:
        logger.addFilter(f)
    _CURRENT.append(console)
    try:
        with contextlib.ExitStack() as stack:
            console._stack = stack
            stack.enter_context(warnings.catch_warnings())
            for category, message in WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            hub = _hub_bars_off()
            if hub is not None:
                stack.callback(_set_hub_bars, hub)          # last out: after transformers' own restore
                if quiet or not console.terminal:
                    _set_hub_bars(True)
            yield console
    finally:
        _CURRENT.remove(console)
        for logger, f in filters:
            logger.removeFilter(f)


def loading_bars_off() -> None:
    """diffusers' and transformers' weight-loading bars off until the command ends (imports
    both: called where the model loads, not before)."""
    console = current()
    stack = console._stack
    if stack is None:                                  # not inside a command: library use, left alone
        return
    hub = _hub_bars_off()
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            lib = importlib.import_module(module)
        except ImportError:
            continue
        if lib.is_progress_bar_enabled():
            lib.disable_progress_bar()
            stack.callback(lib.enable_progress_bar)
    if hub is not None:
        _set_hub_bars(hub)                             # transformers switches the hub's bars with its own


def _hub_bars_off():
    """Whether the hub's download bars are off (None: no huggingface_hub)."""
    try:
        from huggingface_hub.utils import are_progress_bars_disabled
    except ImportError:
        return None
    return are_progress_bars_disabled()


def _set_hub_bars(off: bool) -> None:
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    with warnings.catch_warnings():                    # HF_HUB_DISABLE_PROGRESS_BARS set: it wins, said once
        warnings.simplefilter("ignore")
        (disable_progress_bars if off else enable_progress_bars)()


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


class Progress:
    """A run's progress over ``total`` units (images; None: not known), advanced step by step
    through the pipeline's ``callback_on_step_end`` (:meth:`steps`) and unit by unit as images
    are written (:meth:`advance`). A bar on a terminal, lines elsewhere, nothing when quiet."""

    def __init__(self, console: Console | None, total, unit: str):
        self.console, self.total, self.unit = console, total, unit
        self.done, self.count, self.partial, self.step, self.of = 0, 0, 0.0, 0, 0
        self.start = self._last_line = time.perf_counter()
        self.bar = None
        if console is not None and console.terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, file=console.stream, dynamic_ncols=True,
                            bar_format="{percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}]" if total
                            else "{desc} [{elapsed}]")
            self._show()

    def _where(self) -> str:
        """``image 3/10, step 4/28`` (``images 3-4/10`` for a batch); ``images 10/10`` between calls."""
        of = f"/{self.total}" if self.total else ""
        if not self.of:
            return f"{self.unit}s {self.done}{of}"
        first = self.done + 1
        span = f"{self.unit}s {first}-{first + self.count - 1}" if self.count > 1 else f"{self.unit} {first}"
        return f"{span}{of}, step {self.step}/{self.of}"

    def _show(self) -> None:
        self.bar.n = self.done + self.partial
        self.bar.set_description_str(self._where())         # refreshes the bar

    def steps(self, count: int, steps: int):
        """A ``callback_on_step_end`` for a pipeline call that makes ``count`` units in
        ``steps`` steps (None when nothing is shown: the call runs without one)."""
        if self.console is None:
            return None
        self.count, self.step, self.of, self.partial = count, 0, steps, 0.0

        def on_step(pipe, step, timestep, kwargs):
            self.step = min(self.step + 1, steps)
            self.partial = self.count * self.step / steps
            if self.bar is not None:
                self._show()
            elif time.perf_counter() - self._last_line >= LINE_INTERVAL:
                self._line(f"{self._where()}, {_seconds(time.perf_counter() - self.start)}")
            return {}

        return on_step

    def advance(self, count: int, what: str = "") -> None:
        """``count`` units finished (``what``: the file written, for the line)."""
        self.done += count
        self.count = max(self.count - count, 0)
        self.partial = max(self.partial - count, 0.0)
        if not self.count:
            self.step, self.of = 0, 0
        if self.console is None:
            return
        if self.bar is not None:
            self._show()
            return
        elapsed = time.perf_counter() - self.start
        of = f"/{self.total}" if self.total else ""
        left = (f"; about {_seconds(elapsed / self.done * (self.total - self.done))} left"
                if self.total and self.done < self.total else "")
        self._line(f"{self.unit} {self.done}{of} done{f' ({what})' if what else ''}, {_seconds(elapsed)}{left}")

    def _line(self, text: str) -> None:
        self._last_line = time.perf_counter()
        self.console.note(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
