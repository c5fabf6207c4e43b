import sys
from pathlib import Path

from hypothesis import settings

# Deterministic property tests (same examples every run) without per-example deadlines,
# which a loaded 2-core CI machine would turn into flaky failures.
settings.register_profile("ralu", derandomize=True, deadline=None)
settings.load_profile("ralu")

sys.path.insert(0, str(Path(__file__).parent))   # tests/tiny.py
