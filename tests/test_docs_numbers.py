"""The numbers the docs quote are the numbers the commands print.

A table in ``docs/`` that follows a marker ``<!-- numbers: COMMAND -->`` is compared with
the table of the same header that COMMAND prints now: same rows, same cells, except
columns whose header says ``time`` (wall-clock times differ between runs). Only cheap
commands carry the marker; the quality benchmark's tables (minutes per run) are refreshed
by hand with the command printed beside them.
"""

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MARK = re.compile(r"<!-- numbers: (.+?) -->")


def tables(text: str) -> list:
    """Markdown tables of ``text``: lists of rows, each a list of stripped cells."""
    out, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            out.append(current)
            current = []
    return out


def quoted() -> list:
    cases = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        for m in MARK.finditer(text):
            table = tables(text[m.end():])[0]
            cases.append(pytest.param(m.group(1), table, id=f"{page.name}: {m.group(1)}"))
    return cases


@functools.lru_cache(maxsize=None)
def run(command: str) -> str:
    """What ``command`` prints, run once per test process (several tables may quote one command)."""
    argv = shlex.split(command)
    exe = {"python": [sys.executable], "ralu-schedule": [sys.executable, "-m", "ralu_schedule.cli"],
           "ralu": [sys.executable, "-m", "ralu_torch"]}[argv[0]]
    r = subprocess.run(exe + argv[1:], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_docs_quote_checked_tables():
    pages = {c.id.split(":")[0] for c in quoted()}
    assert {"schedule.md", "cost.md", "sampler.md"} <= pages


@pytest.mark.slow
@pytest.mark.parametrize("command, table", quoted())
def test_quoted_table_is_what_the_command_prints(command, table):
    printed = [t for t in tables(run(command)) if t[0] == table[0]]
    assert printed, f"{command} prints no table with the header {table[0]}"
    fresh = printed[0]
    assert len(fresh) == len(table), f"{command} prints {len(fresh) - 2} rows, the docs quote {len(table) - 2}"
    keep = [i for i, head in enumerate(table[0]) if "time" not in head.lower()]
    for doc_row, new_row in zip(table[2:], fresh[2:]):
        assert [doc_row[i] for i in keep] == [new_row[i] for i in keep], f"docs: {doc_row}\nnow:  {new_row}"
