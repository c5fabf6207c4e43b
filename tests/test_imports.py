"""The core stays free of torch, and sympy stays off the solve and command-line paths."""

import subprocess
import sys

CHECK = """
import sys
import ralu_schedule
from ralu_schedule.cli import main
s = ralu_schedule.solve(ralu_schedule.Layout(steps=(2, 3), ends=(0.3, 1.0)))
ralu_schedule.layout_cost(s.layout)
assert main(["preset", "flux-dev-7x", "--json"]) == 0
bad = [m for m in ("torch", "sympy", "diffusers", "matplotlib") if m in sys.modules]
assert not bad, bad
ralu_schedule.derive()
assert "sympy" in sys.modules and "torch" not in sys.modules
"""


def test_core_imports():
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
