"""Quantised transformers, as people run the large families: torchao int8 weight-only
(``quantize_``) and diffusers' layerwise fp8 storage casting. RALU only wraps the model it is
given, so each family keeps its call pattern, and a one-stage layout is the stock pipeline
running the same quantised model."""

import pytest
import torch

from ralu_schedule import Layout
from ralu_torch import RALU
from ralu_torch.testing import tiny_inputs, tiny_pipeline

MODELS = ["flux-dev", "chroma", "flux2-dev", "flux2-klein-base-4b", "qwen-image", "z-image"]
MIXED = Layout(steps=(2, 2, 3), ends=(0.3, 0.5, 1.0), fractions=(0.25, 1.0))


def int8_weight_only(transformer):
    torchao = pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    assert torchao
    quantize_(transformer, Int8WeightOnlyConfig())


def fp8_storage(transformer):
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)


def gens(n):
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.mark.parametrize("quantise", [int8_weight_only, fp8_storage], ids=["torchao-int8wo", "layerwise-fp8"])
@pytest.mark.parametrize("model", MODELS)
def test_quantised_transformer_runs_inside_ralu(model, quantise):
    pipe = tiny_pipeline(model)
    reference = RALU(pipe, MIXED)(**tiny_inputs(pipe, 2), height=128, width=128, generator=gens(2),
                                  output_type="latent").images
    quantise(pipe.transformer)
    inputs = tiny_inputs(pipe, 2, guided=model in ("chroma", "flux2-klein-base-4b", "qwen-image", "z-image"))
    stock = pipe(**inputs, height=128, width=128, num_inference_steps=4, generator=gens(2), output_type="latent").images
    one = RALU(pipe, Layout(steps=(4,), ends=(1.0,)))(**inputs, height=128, width=128, generator=gens(2),
                                                      output_type="latent").images
    assert (one - stock).abs().max() < 1e-4                  # the stock pipeline on the same quantised model
    out = RALU(pipe, MIXED)(**tiny_inputs(pipe, 2), height=128, width=128, generator=gens(2), output_type="latent")
    assert torch.isfinite(out.images).all()
    assert [s.calls for s in out.stage_calls] == list(MIXED.steps)
    assert 0 < (out.images - reference).abs().max() < 0.5 * reference.abs().max()   # quantised, not broken
