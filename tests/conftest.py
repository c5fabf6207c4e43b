import sys
from pathlib import Path

from hypothesis import settings

# Deterministic property tests (same examples every run) without per-example deadlines,
# which a loaded 2-core CI machine would turn into flaky failures.
settings.register_profile("ralu", derandomize=True, deadline=None)
settings.load_profile("ralu")

sys.path.insert(0, str(Path(__file__).parent))   # tests/tiny.py


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
