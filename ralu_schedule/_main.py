"""The frame both command lines (``ralu``, ``ralu-schedule``) run their commands in: every
error one line on stderr, after everything the command printed; a reader that stops reading
(``ralu info x.png | head -5``) ends the command quietly; Ctrl-C is one line.

Exit status: 0 done, 2 bad input (a :class:`ValueError`: what was wrong and what is allowed,
a path too long for the file system included), 1 a run that failed part way or a missing
optional dependency, 130 interrupted, 141 the reader closed the pipe (128 + SIGPIPE, what a
shell reports for a program the closed pipe stopped).
"""

from __future__ import annotations

import os
import sys

from ._errors import MissingDependency
from ._files import too_long

CLOSED_PIPE = 141


def run_main(prog: str, body, failures: tuple = ()) -> int:
    """Run ``body()`` as command ``prog``; returns the exit status. ``failures``: exception
    classes that mean a run stopped part way (one line, exit 1); anything else unexpected is a
    bug and keeps its traceback."""
    try:
        body()
        sys.stdout.flush()                 # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        return _closed_pipe()
    except ValueError as err:              # UsageError included
        return _error(prog, err, 2)
    except (MissingDependency, *failures) as err:
        return _error(prog, err, 1)
    except OSError as err:
        line = too_long(err)
        if line is None:
            raise
        return _error(prog, line, 2)
    except KeyboardInterrupt:
        return _error(prog, None, 130)
    return 0


def _error(prog: str, err, code: int) -> int:
    """The one error line, last: what the command printed to stdout goes out first (a log
    that holds both streams keeps the order)."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence(sys.stdout)
    try:
        print(f"{prog}: interrupted" if err is None else f"{prog}: error: {err}", file=sys.stderr, flush=True)
    except BrokenPipeError:
        _silence(sys.stderr)
    return code


def _closed_pipe() -> int:
    """The reader went away: what is still buffered for it goes nowhere, without the
    interpreter's own complaint when it flushes at exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            _silence(stream)
    return CLOSED_PIPE


def _silence(stream) -> None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):          # not a file (a test's capture): nothing to flush later
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
