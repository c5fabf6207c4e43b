"""Every ```python block in docs/ runs (blocks of one page share a namespace)."""

import re
from pathlib import Path

import pytest

DOCS = sorted((Path(__file__).parents[1] / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_python_examples_run(page, tmp_path, monkeypatch):
    blocks = BLOCK.findall(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no python examples")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)


def test_readme_links_every_docs_page():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for page in DOCS:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
