"""RALU under diffusers' memory features: model, sequential and group offloading, VAE tiling.

Model and group offloading run here with the CPU itself as the target (diffusers takes an
explicit device): the same accelerate and diffusers hooks and execution-device logic as on a
GPU, which is what RALU has to cooperate with. Sequential offloading cannot target the CPU
(the stock pipeline fails there, a test below shows why); it is tested onto a GPU where
there is one."""

import pytest
import torch

from ralu_torch import RALU
from tiny import embeds, tiny_flux


def run(pipe, device="cpu", **kw):
    return RALU(pipe, "flux-dev-7x")(**embeds(2), height=128, width=128, output_type="latent",
                                     generator=[torch.Generator(device).manual_seed(i) for i in range(2)], **kw).images


@pytest.fixture(scope="module")
def reference():
    return run(tiny_flux())


@pytest.mark.parametrize("offload", ["model", "group"])
def test_offloading_gives_the_same_latents(offload, reference):
    pipe = tiny_flux()
    if offload == "model":
        pipe.enable_model_cpu_offload(device="cpu")
    else:
        pipe.transformer.enable_group_offload(onload_device=torch.device("cpu"), offload_type="block_level",
                                              num_blocks_per_group=1)
    out = run(pipe)
    assert torch.isfinite(out).all()
    assert (out - reference).abs().max() < 1e-5
    again = run(pipe)                                   # hooks survive a run: a second call works the same
    assert torch.equal(out, again)


def test_sequential_offload_to_the_cpu_fails_in_the_stock_pipeline():
    """Why ``ralu generate --offload sequential`` is refused with the CPU as the device: diffusers
    turns the device into ``cpu:0``; torch moves a CPU parameter to ``cpu:0`` by copying it, and
    the copy is a plain tensor; accelerate's hooks put it in the parameter's place, and their
    next offload (``param_cls(value, requires_grad=...)`` with ``param_cls`` now ``Tensor``) is a
    TypeError. The stock FluxPipeline fails so, before RALU is involved. When an upgrade makes
    this pass, the refusal (``ralu_torch.generation.load.check_offload``) and docs/generate.md go."""
    assert type(torch.nn.Parameter(torch.zeros(2)).to("cpu:0")) is torch.Tensor       # the copy, not the parameter
    pipe = tiny_flux()
    pipe.enable_sequential_cpu_offload(device="cpu")
    with pytest.raises(TypeError, match="requires_grad"):
        pipe(**embeds(), height=64, width=64, num_inference_steps=1, output_type="latent")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="sequential offload runs onto a GPU (on the CPU it is "
                                                             "refused: the test above)")
def test_sequential_offload_onto_a_gpu_gives_the_same_latents():
    reference = run(tiny_flux().to("cuda"), "cuda")
    pipe = tiny_flux()
    pipe.enable_sequential_cpu_offload(device="cuda")
    out = run(pipe, "cuda")
    assert torch.isfinite(out).all() and (out - reference).abs().max() < 1e-5
    assert torch.equal(out, run(pipe, "cuda"))


def test_vae_tiling_is_used_for_every_decode():
    pipe = tiny_flux()
    pipe.vae.enable_tiling()
    pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 64, 8     # tile even this small image
    tiled = []
    original = pipe.vae.tiled_decode
    pipe.vae.tiled_decode = lambda *a, **k: tiled.append(a[0].shape) or original(*a, **k)
    images = RALU(pipe, "flux-dev-7x")(**embeds(), height=256, width=256, generator=torch.Generator().manual_seed(0),
                                       output_type="pt").images
    assert images.shape == (1, 3, 256, 256) and torch.isfinite(images).all()
    assert len(tiled) == 2                              # the edge decode (128 px) and the final one (256 px)
    assert [tuple(s[-2:]) for s in tiled] == [(16, 16), (32, 32)]
