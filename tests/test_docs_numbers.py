"""The numbers the docs quote are the numbers the commands print.

Tables: a table in ``docs/`` that follows a marker ``<!-- numbers: COMMAND -->`` is compared
with the table of the same header that COMMAND prints now: same rows, same cells, except
columns whose header says ``time`` (wall-clock times differ between runs).

Quotes in prose and output blocks, in ``docs/*.md`` and ``README.md`` (:func:`quotes` finds them):

- inline: a command in backticks that *prints, gives, shows, reports, returns, says* or *took*
  numbers (``ralu-schedule cost X`` prints 98.3 ...), a command in parentheses followed by a colon
  and numbers (``At 2048x2048 (`python bench/cost_table.py`): ... 11.38x``), and a sentence that
  ends in a colon followed by a paragraph that is only the command. Every number of the quote
  (to the end of its clause) must appear in what the command prints, or in the command itself
  (an argument such as ``--frames 81``);
- blocks: a fenced block of ``$ COMMAND`` lines, each followed by lines of its output, and a
  fenced block of output after a sentence that names its command and ends in a colon: every
  line of the block (``...`` skips) must appear in the output, in order.

Commands that are cheap and deterministic run here; the others (wall-clock benchmarks, runs of
minutes, model weights) are listed in :data:`BY_HAND` with the reason, and their numbers are
refreshed by hand with the command printed beside them. A quote whose command is neither fails.
"""

import functools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MARK = re.compile(r"<!-- numbers: (.+?) -->")
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]

#: Commands whose quoted numbers are refreshed by hand, and why they are not rerun here.
BY_HAND = {
    "python bench/latency.py": "wall-clock seconds of minutes-long runs: they differ run to run",
    "python bench/compile.py": "compiles with inductor (minutes)",
    "python bench/memory.py": "peak memory of fresh processes (minutes)",
    "python bench/noise.py": "wall-clock times",
    "python bench/planning.py": "wall-clock times of fresh processes",
    "python bench/quality.py": "minutes of sampling; tests/test_eval.py reruns three of its numbers",
    "python bench/preset_search.py": "minutes of sampling per family",
    "python bench/compose.py --quality": "sampling on the analytic backend",
    "python bench/gpu_check.py": "needs a GPU",
    "ralu eval": "minutes of sampling; tests/test_eval.py reruns the analytic numbers quality.md quotes",
    "ralu generate": "needs model weights",
    "ralu info": "reads an image that ralu generate wrote",
    "pytest": "the test suite",
    "python -m pytest": "the test suite",
    "accelerate": "needs several GPUs",
}

COMMAND = r"`((?:ralu-schedule|ralu|python|pytest|accelerate) [^`]+)`"
VERB = re.compile(COMMAND + r"[^`;]*?\b(?:prints?|gives?|shows?|reports?|returns?|says|took)\b", re.S)
PAREN = re.compile(COMMAND + r"[^()`]*\)\s*:", re.S)
ALONE = re.compile(r"\s*" + COMMAND + r"\s*")
SPAN = re.compile(r"`[^`]*`")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[^\n]*$", re.S | re.M)
#: A number standing alone (not inside a name such as flux-dev-7x or FLUX.1), with its x or %:
#: the digits are compared; ``1024x1024`` is one number.
NUMBER = re.compile(r"(?<![\w.\-/])(\d+x\d+|\d+(?:,\d{3})*(?:\.\d+)?)(?:x|%)?(?![\w\-/]|\.\d)")
PLACEHOLDER = re.compile(r"\.\.\.|\s\[|\b(?:NAME|PRESET|FILE|THAT_MODEL)\b")


@dataclass(frozen=True)
class Quote:
    page: str
    line: int
    command: str
    numbers: tuple = ()         # an inline quote: numbers that must be printed
    lines: tuple = ()           # a block: output lines that must be printed, in order

    @property
    def by_hand(self):
        return next((why for prefix, why in BY_HAND.items() if self.command.startswith(prefix)), None)

    def __str__(self):
        return f"{self.page}:{self.line}: {self.command}"


def clauses(paragraph: str, semicolons: bool = True) -> list:
    """``(offset, text)`` of the clauses of a paragraph: split after ``;`` (unless not
    ``semicolons``: sentences) and after a full stop that ends a sentence, never inside a code span."""
    out, start, inspan = [], 0, False
    for i, ch in enumerate(paragraph):
        if ch == "`":
            inspan = not inspan
        elif not inspan and (ch == ";" and semicolons or ch == "." and re.match(r"\.\s+[A-Z(`\[]", paragraph[i:])):
            out.append((start, paragraph[start:i + 1]))
            start = i + 1
    out.append((start, paragraph[start:]))
    return out


def numbers(text: str) -> tuple:
    """The numbers of prose ``text``: code spans and link targets left out."""
    return tuple(NUMBER.findall(SPAN.sub(" ", re.sub(r"\]\([^)]*\)", "]", text))))


def _command(span: str) -> str:
    return " ".join(span.split())


def quotes(text: str, page: str = "page") -> list:
    """Every quote of ``text`` (a markdown page) that names numbers or output lines."""
    found = []
    masked = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)        # prose only, same lines
    paragraphs = [(m.start(), m.group(0)) for m in re.finditer(r"(?:[^\n]*\S[^\n]*\n?)+", masked)]
    line = lambda offset: masked.count("\n", 0, offset) + 1                    # noqa: E731 (same lines as text)
    for k, (at, para) in enumerate(paragraphs):
        if para.lstrip().startswith("|"):
            continue
        for off, clause in clauses(para):
            for rx in (VERB, PAREN):
                for m in rx.finditer(clause):
                    nums = numbers(clause[m.end():])
                    if nums:
                        found.append(Quote(page, line(at + off + m.start()), _command(m.group(1)), nums))
        alone = ALONE.fullmatch(para)
        if alone and k and paragraphs[k - 1][1].rstrip().endswith(":"):
            nums = numbers(clauses(paragraphs[k - 1][1].rstrip())[-1][1])
            if nums:
                found.append(Quote(page, line(at), _command(alone.group(1)), nums))
    for m in FENCE.finditer(text):
        lang, body = m.group(1).strip(), m.group(2)
        if lang not in ("", "console", "text"):
            continue
        rows = body.splitlines()
        if rows and rows[0].startswith("$ "):
            current = None
            for row in rows + ["$ "]:
                if row.startswith("$ "):
                    if current:
                        found.append(Quote(page, current[0], current[1], lines=tuple(current[2])))
                    current = (text.count("\n", 0, m.start()) + 2, row[2:].strip(), [])
                else:
                    current[2].append(row)
            continue
        before = text[:m.start()].rstrip()
        before = before[before.rfind("\n\n") + 1:]                         # the paragraph above
        alone = ALONE.fullmatch(before)
        sentence = clauses(before, semicolons=False)[-1][1] if before.endswith(":") else ""
        said = re.findall(COMMAND, sentence)                             # the last command named
        command = alone.group(1) if alone else said[-1] if said else None
        first = rows[0].split(" ")[0] if rows else ""
        if command and first not in ("ralu-schedule", "ralu", "python", "pytest", "accelerate", "pip", "git"):
            found.append(Quote(page, text.count("\n", 0, m.start()) + 1, _command(command), lines=tuple(rows)))
    return found


def all_quotes() -> list:
    return [q for p in PAGES for q in quotes(p.read_text(), p.name)]


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


def printed(number: str, text: str) -> bool:
    """Whether ``number`` (a quote's digits, or ``HxW``) appears in ``text`` as a whole number."""
    parts = number.split("x") if "x" in number and number not in text else [number]
    return all(re.search(rf"(?<![\d.]){re.escape(p.replace(',', ''))}(?!\d|\.\d)", text.replace(",", ""))
               for p in parts)


def mismatches(quote: Quote, output: str) -> list:
    """What ``quote`` says that ``output`` (the command's output) does not: numbers, or block lines."""
    if quote.numbers:
        return [n for n in quote.numbers if not printed(n, output) and not printed(n, quote.command)]
    have = [row.rstrip() for row in output.splitlines()]
    missing, at = [], 0
    for row in (r.rstrip() for r in quote.lines):
        if not row or row == "...":
            continue
        try:
            at = have.index(row, at) + 1
        except ValueError:
            missing.append(row)
    return missing


def runnable(quote: Quote) -> bool:
    return quote.by_hand is None and not PLACEHOLDER.search(quote.command) and \
        quote.command.split()[0] in ("ralu-schedule", "python")


def test_every_quote_is_checked_or_refreshed_by_hand():
    found = all_quotes()
    assert len(found) >= 5
    unchecked = [str(q) for q in found if not runnable(q) and q.by_hand is None]
    assert not unchecked, ("quotes whose command can neither run here nor is listed in BY_HAND "
                           "(give a runnable command, or add it to BY_HAND with the reason):\n" + "\n".join(unchecked))
    used = {prefix for prefix in BY_HAND for q in found if q.command.startswith(prefix)}
    assert {"python bench/latency.py", "ralu eval"} <= used


@pytest.mark.parametrize("quote", [q for q in all_quotes() if runnable(q)], ids=str)
def test_quoted_numbers_are_what_the_command_prints(quote):
    missing = mismatches(quote, run(quote.command))
    assert not missing, f"{quote}: the docs quote {missing}, which the command does not print"


# -- the checker itself, on pages written for it -----------------------------------------------------

OLD_SD3 = """Their predicted cost (`ralu-schedule cost
sd3-medium-7x`, paper convention, classifier-free guidance counted twice): 98.3 TFLOPs
against 616.1 for 50 steps at 1024x1024, 6.26x; `sd3-medium-4x`: 156.9, 3.93x.
"""


def test_checker_finds_a_number_the_command_does_not_print():
    """The mismatch issue 27 found in docs/sd3.md: the command prices against 28 steps."""
    (q,) = quotes(OLD_SD3)
    assert q.command == "ralu-schedule cost sd3-medium-7x" and q.numbers == ("98.3", "616.1", "50", "1024x1024", "6.26")
    output = "sd3-medium at 1024x1024\ntotal  98.3\nbaseline (28 steps)  351.5\npredicted speed-up  3.57x\n"
    assert mismatches(q, output) == ["616.1", "50", "6.26"]


def test_checker_reads_every_quote_form():
    page = """`ralu-schedule cost a-7x` prints 12.5 TFLOPs, 3.1x; unrelated 9.

A decode costs 275 TFLOPs against 21 x 30 steps:

`python -c "print(275, 21 * 30)"`

At 2048x2048 (`python bench/cost_table.py`): 11.38x.

```
$ ralu-schedule preset a-7x --format sigmas
1.0, 0.5
...
```

`ralu-schedule cost b-4x --json` (as JSON):

```
{"tflops": 1.5}
```
"""
    qs = quotes(page)
    assert [(q.command, q.numbers, q.lines) for q in qs] == [
        ("ralu-schedule cost a-7x", ("12.5", "3.1"), ()),
        ('python -c "print(275, 21 * 30)"', ("275", "21", "30"), ()),
        ("python bench/cost_table.py", ("11.38",), ()),
        ("ralu-schedule preset a-7x --format sigmas", (), ("1.0, 0.5", "...")),
        ("ralu-schedule cost b-4x --json", (), ('{"tflops": 1.5}',))]
    assert mismatches(qs[1], "275 630\n") == []                       # 21 and 30: in the command
    assert mismatches(qs[3], "x\n1.0, 0.5\n0.0\n") == [] and mismatches(qs[3], "1.0, 0.25\n") == ["1.0, 0.5"]
    assert not printed("3.1", "3.14") and not printed("12.5", "112.5") and printed("1024x1024", "1024x1024 px")


# -- time estimates: measured, or not given ---------------------------------------------------------

_WORD_NUMBER = r"(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|twenty|thirty|half an|a half)"
#: "about a minute", "under 8 minutes", "(about 20 s)", "instant", "in seconds", "a few minutes"
TIME_ESTIMATE = re.compile(
    r"\b(?:about|around|roughly|approximately|nearly|almost|under|less than|some|several|a few)\s+"
    rf"(?:{_WORD_NUMBER}\s+(?:and a half\s+)?(?:seconds?|minutes?|hours?)\b|\d[\d.,]*\s*(?:s|sec|seconds?|min|minutes?|h|hours?)\b)"
    r"|\binstant(?:ly)?\b|\bin (?:seconds|minutes|hours)\b|\ba few (?:seconds|minutes|hours)\b", re.I)


def time_estimates(text: str) -> list:
    """Sentences of ``text`` that estimate how long something takes without saying it was measured."""
    sentences = re.split(r"(?<=[.!?:;])\s+(?=[A-Z`(\[])|\n\s*\n", text)
    return [" ".join(s.split()) for s in sentences if TIME_ESTIMATE.search(s) and "measured" not in s]


def bench_prose(path: Path) -> str:
    """The docstrings and comments of a bench script."""
    import ast
    import io
    import tokenize

    source = path.read_text()
    docs = [ast.get_docstring(n) for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(n)]
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    return "\n\n".join(docs + comments)


def doc_prose(text: str) -> str:
    """A page's prose and its code blocks' comments: what a program printed inside a fenced block
    (a captured log's "about 5.0 s left") is output, checked against its command elsewhere, not a
    claim of the page's; a comment beside a command (``# about a minute``) is the page's."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        elif not fenced:
            out.append(line)
        elif "#" in line:
            out.append(line[line.index("#"):])
    return "\n".join(out)


def test_time_estimates_in_docs_and_benchmarks_are_measured():
    """Issue 27: "about a minute" for bench/quality.py, which took 9.5. A time in docs/ or in a
    benchmark's docstrings and comments is a measurement that says so (and on what), or absent."""
    found = [f"docs/{p.name}: {s}" for p in sorted((ROOT / "docs").glob("*.md"))
             for s in time_estimates(doc_prose(p.read_text()))]
    found += [f"bench/{p.name}: {s}" for p in sorted((ROOT / "bench").glob("*.py")) for s in time_estimates(bench_prose(p))]
    assert not found, "time estimates not said to be measured:\n" + "\n".join(found)


def test_the_time_estimate_check_reads_prose():
    assert time_estimates("python bench/quality.py   # the full table (about a minute here)")
    assert time_estimates("It finishes in about two minutes on a 2-core machine. Another.")
    assert time_estimates("    python bench/compose.py   # (instant)\n")
    assert time_estimates("runs (about 20 s) here") and time_estimates("under 8 minutes on an H100")
    assert not time_estimates("It took 8.3 s of CPU time (measured on a loaded 2-core machine).")
    assert not time_estimates("costs about as much as two steps; does not answer within 5 seconds")
    page = "Run it:\n\n```\npython bench/quality.py   # the full table (about a minute here)\n```\n\n```\nralu: about 5.0 s left\n```\n"
    assert time_estimates(doc_prose(page)) == ["# the full table (about a minute here)"]
