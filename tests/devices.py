"""The devices the device-parametrised tests run on: the CPU always (float32), CUDA when
present (float32 and bfloat16), the CUDA ones marked ``cuda`` so that ``pytest -m cuda``
runs exactly them (and skips them, saying why, on a machine without CUDA)."""

import pytest
import torch

CUDA = torch.cuda.is_available()
NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False): the CUDA set runs on a GPU machine"


def device_params(dtypes=("float32", "bfloat16")) -> list:
    """``(device, dtype)`` parameters: ``cpu`` float32, then ``cuda`` in each of ``dtypes``."""
    out = [pytest.param(("cpu", torch.float32), id="cpu")]
    for name in dtypes:
        out.append(pytest.param(("cuda", getattr(torch, name)), id=f"cuda-{name}",
                                marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason=NO_CUDA)]))
    return out


def on(inputs: dict, device, dtype) -> dict:
    """Pipeline inputs moved to ``device``, floating tensors (and lists of them) cast to ``dtype``."""
    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        if isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
            return [move(t) for t in v]
        return v
    return {k: move(v) for k, v in inputs.items()}


def parity_tolerance(stock_low, stock_fp32, dtype) -> float:
    """How far a run in ``dtype`` may lie from the stock pipeline's run in ``dtype``.

    float32: 1e-5, the CPU suite's bound. A lower precision: twice the stock pipeline's own
    distance from its float32 run on the same inputs and device. If ours is no farther from
    the float32 result than the stock pipeline is (RALU keeps its state in float32), the
    triangle inequality puts it within twice that distance of the stock low-precision run."""
    if dtype == torch.float32:
        return 1e-5
    own = (stock_low.double() - stock_fp32.double()).abs().max().item()
    assert own > 0, "the low-precision stock run equals the float32 one: nothing to derive a tolerance from"
    return 2 * own
