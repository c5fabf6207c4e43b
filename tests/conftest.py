import os
import sys
from pathlib import Path

# One torch (OpenMP) thread per test process, and in every process a test starts (the variable
# is inherited), unless the caller sets OMP_NUM_THREADS. The tests run tiny models, where a
# second thread gains little; on a loaded machine it costs a great deal: OpenMP's threads
# spin at each parallel region's barrier while their partner waits for a core, so a run's CPU
# time and wall time grow many times over. The cores are used by pytest-xdist's worker
# processes instead (README: `python -m pytest -q -n auto`).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:                      # imported before this file (a plugin): set it there too
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from hypothesis import HealthCheck, settings  # noqa: E402

# Two hypothesis profiles (docs/verification.md, "The project's test profiles"):
# - "ralu", the default and CI's: the same examples every run (derandomized, so no example
#   database), each test's own count (100 unless it states one), and nothing timed: no
#   per-example deadline and no too-slow health check, which a loaded machine would turn
#   into failures that say nothing about the code;
# - "thorough", on demand (`pytest --hypothesis-profile=thorough`): ten times the examples,
#   drawn afresh each run, failures kept in .hypothesis/ and replayed first.
# A test that states its count writes `@examples(n)` (tests/profiles.py), which follows the profile.
UNTIMED = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, print_blob=True, **UNTIMED)
settings.register_profile("ralu", derandomize=True, **UNTIMED)
settings.load_profile("ralu")

sys.path.insert(0, str(Path(__file__).parent))   # tests/tiny.py, tests/profiles.py


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _library_state():
    """Put back the process-wide state a script run in-process may change (bench/*.py set
    torch's grad mode and diffusers' log level for their own run): a later test sees the
    defaults whatever ran before it."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    grad, level = torch.is_grad_enabled(), diffusers_logging.get_verbosity()
    yield
    torch.set_grad_enabled(grad)
    diffusers_logging.set_verbosity(level)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny FLUX pipeline with text encoders, saved as from_pretrained reads it."""
    from tiny import tiny_flux_with_text

    path = tmp_path_factory.mktemp("tiny-flux")
    tiny_flux_with_text().save_pretrained(path)
    return path


@pytest.fixture
def watched_steps(monkeypatch):
    """Run every stage's step loop under a host-sync detector; collect what it saw per stage."""
    import ralu_torch.sampler as sampler_module
    from ralu_torch.testing import HostSyncDetector

    seen = []
    original = sampler_module.run_steps

    def watched(*args, **kwargs):
        with HostSyncDetector() as sync:
            out = original(*args, **kwargs)
        seen.append(sync.ops)
        return out

    monkeypatch.setattr(sampler_module, "run_steps", watched)
    return seen
