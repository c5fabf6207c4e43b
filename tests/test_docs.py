"""Every ```python block in docs/ runs, says which block it builds on, and prints what it says.

A block runs in a fresh namespace unless its first line is ``# continues the example above``:
then it runs in the namespace of the block just above it (which may continue another). A block
that uses a name defined only by a block above must say so, and a block that says so must use
one (:func:`test_blocks_say_which_blocks_they_build_on`). A ``print(...)  # 425.8 2990.3``
line's comment is what it prints: each number (and ``True``/``False``) of the comment must be in
what that line printed.
"""

import ast
import builtins
import re
import sys
from pathlib import Path

import pytest

from test_docs_numbers import NUMBER, printed

DOCS = sorted((Path(__file__).parents[1] / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
CONTINUES = "# continues the example above"
PRINT_COMMENT = re.compile(r"^\s*print\(.*\)\s+#\s*(.+)$")


def blocks(page: Path) -> list:
    """``(line, code, continues)`` of each python block of ``page``."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1), m.group(1).startswith(CONTINUES + "\n"))
            for m in BLOCK.finditer(text)]


def names(code: str) -> tuple:
    """``(defined, used)``: names a block binds anywhere (assignments, imports, definitions,
    parameters) and names it reads."""
    defined, used = set(), set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.alias):
            defined.add((node.asname or node.name).split(".")[0])
    return defined, used


def dependencies(page_blocks: list) -> list:
    """Per block: the names it reads that only the blocks of its chain above define (the chain:
    the blocks it continues; for a block that continues nothing, every block above)."""
    out, chain = [], []
    for i, (_, code, continues) in enumerate(page_blocks):
        above = chain if continues else [b for _, b, _ in page_blocks[:i]]
        defined, used = names(code)
        from_above = set().union(*(names(b)[0] for b in above)) if above else set()
        out.append(sorted(n for n in used - defined if n in from_above and not hasattr(builtins, n)))
        chain = chain + [code] if continues else [code]
    return out


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_blocks_say_which_blocks_they_build_on(page):
    page_blocks = blocks(page)
    for i, ((line, _, continues), needs) in enumerate(zip(page_blocks, dependencies(page_blocks))):
        where = f"{page.name}, block {i} (line {line})"
        assert not (continues and i == 0), f"{where} says it continues the example above, but none is above"
        assert continues or not needs, f"{where} uses {needs} from the blocks above: start it with '{CONTINUES}'"
        assert not continues or needs, f"{where} says '{CONTINUES}' but uses no name of the blocks above"


def _recorder(filename: str, outputs: dict):
    """A ``print`` that also records, per line of ``filename``, what each call printed."""
    def record(*args, sep=" ", end="\n", file=None, flush=False):
        frame = sys._getframe(1)
        if file is None and frame.f_code.co_filename == filename:
            outputs.setdefault(frame.f_lineno, []).append((sep if sep is not None else " ").join(map(str, args)))
        builtins.print(*args, sep=sep, end=end, file=file, flush=flush)
    return record


def check_print_comments(code: str, outputs: dict, where: str):
    for n, row in enumerate(code.splitlines(), 1):
        m = PRINT_COMMENT.match(row)
        if not m:
            continue
        said = "\n".join(outputs.get(n, []))
        assert said, f"{where}, line {n}: {row.strip()!r} printed nothing"
        quoted = NUMBER.findall(m.group(1))
        missing = [q for q in quoted if not printed(q, said)]
        missing += [w for w in re.findall(r"\b(?:True|False|None)\b", m.group(1)) if w not in said.split()]
        assert not missing, f"{where}, line {n}: the comment says {missing}, the line printed {said!r}"


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_python_examples_run(page, tmp_path, monkeypatch):
    page_blocks = blocks(page)
    if not page_blocks:
        pytest.skip(f"{page.name} has no python examples")
    monkeypatch.chdir(tmp_path)
    namespace = None
    for i, (line, code, continues) in enumerate(page_blocks):
        filename, outputs = f"{page.name}[block {i}, line {line}]", {}
        if not continues or namespace is None:
            namespace = {"__name__": f"docs_{page.stem}_{i}"}
        namespace["print"] = _recorder(filename, outputs)
        exec(compile(code, filename, "exec"), namespace)
        check_print_comments(code, outputs, filename)


def test_the_dependency_check_reads_a_page():
    page = [(1, "x = 1\n", False), (5, f"{CONTINUES}\nprint(x)\n", True), (9, "print(x)\n", False),
            (12, f"{CONTINUES}\ny = 2\n", True)]
    assert dependencies(page) == [[], ["x"], ["x"], []]


def test_print_comments_are_checked():
    outputs = {1: ["425.8 2990.3 7.02"], 2: ["True False"]}
    check_print_comments("print(a)   # 425.8 2990.3 7.02, the cost\nprint(b)   # True False\n", outputs, "p")
    with pytest.raises(AssertionError, match=r"the comment says \['7.03'\]"):
        check_print_comments("print(a)   # 425.8 7.03\n", outputs, "p")
    with pytest.raises(AssertionError, match="printed nothing"):
        check_print_comments("x = 1\nprint(b)   # 3\nprint(c)   # 4\n", {2: ["3"]}, "p")


def test_readme_links_every_docs_page():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for page in DOCS:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
