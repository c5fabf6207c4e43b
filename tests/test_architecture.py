"""Structure: no import cycle inside either package, the backend contract holds, the
layering points one way (bench -> ralu_torch -> ralu_schedule), and the core stays light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("ralu_schedule", "ralu_torch")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: set) -> set:
    """Every module of ``modules`` that ``path`` imports, at any depth (lazy imports inside
    functions included, ``if TYPE_CHECKING`` blocks excluded: they never run)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(node):
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            submodules = {f"{target}.{a.name}" for a in node.names} & modules
            found.update(submodules)                                  # `from pkg import submodule`
            if len(submodules) < len(node.names):                     # names defined in `target` itself
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def import_graph(package: str) -> dict:
    files = sorted((ROOT / package).rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def find_cycle(graph: dict):
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    graph = import_graph(package)
    assert len(graph) > 5
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _top_level_imports(f) -> set:
    tree = ast.parse(f.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
    return {m.split(".")[0] for m in names}


def test_layering_points_one_way():
    """The core never imports the adapter or torch; the adapter never imports bench or the
    ComfyUI nodes (which sit on top of both)."""
    for f in (ROOT / "ralu_schedule").rglob("*.py"):
        assert not _top_level_imports(f) & {"torch", "ralu_torch", "diffusers", "bench", "comfyui_ralu"}, f
    for f in (ROOT / "ralu_torch").rglob("*.py"):
        assert not _top_level_imports(f) & {"bench", "comfyui_ralu", "comfy"}, f


def test_backends_conform_to_the_contract():
    from tiny import tiny_flux

    from ralu_torch.testing import sd3_pipeline

    from ralu_torch import PipelineBackend, SamplerBackend
    from ralu_torch.backends import backend_for
    from ralu_torch.backends.gaussian import GaussianBackend, GaussianField

    from ralu_torch.testing import wan_pipeline

    for pipe in (tiny_flux(), sd3_pipeline(), wan_pipeline(experts=2)):
        be = backend_for(pipe)
        assert isinstance(be, PipelineBackend) and isinstance(be, SamplerBackend), type(be).__name__
    gauss = GaussianBackend(GaussianField(height=16, width=16))
    assert isinstance(gauss, SamplerBackend)
    assert not isinstance(object(), SamplerBackend)


LIGHT = """
import sys
import ralu_schedule
heavy = [m for m in ("scipy.optimize", "scipy.spatial", "sympy", "torch") if m in sys.modules]
assert not heavy, heavy
ralu_schedule.preset("flux-dev-7x").to_json()        # the metric loads scipy.spatial, not the optimiser
assert "scipy.optimize" not in sys.modules
ralu_schedule.solve(ralu_schedule.Layout(steps=(2, 3), ends=(0.3, 1.0)))
assert "scipy.optimize" in sys.modules
"""


def test_core_import_loads_no_optimiser():
    """Importing the core loads no scipy; reading a preset loads no scipy.optimize; a solve does."""
    r = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


NO_TORCH = """
import sys
sys.modules["torch"] = None          # as if torch were not installed
from ralu_torch.cli import main
sys.exit(main(["demo"]))
"""


def test_ralu_command_without_torch_says_what_to_install():
    r = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ralu: error: ") and "pip install 'ralu[torch]'" in lines[0]
