"""RALU under diffusers' memory features: model, sequential and group offloading, VAE tiling.

On this CPU-only machine the offload target is the CPU itself (diffusers takes an explicit
device); that runs the same accelerate hooks and execution-device logic as on a GPU, which
is what RALU has to cooperate with."""

import pytest
import torch

from ralu_torch import RALU
from tiny import embeds, tiny_flux


def run(pipe, **kw):
    return RALU(pipe, "flux-dev-7x")(**embeds(2), height=128, width=128, output_type="latent",
                                     generator=[torch.Generator().manual_seed(i) for i in range(2)], **kw).images


@pytest.fixture(scope="module")
def reference():
    return run(tiny_flux())


@pytest.mark.parametrize("offload", ["model", "sequential", "group"])
def test_offloading_gives_the_same_latents(offload, reference):
    pipe = tiny_flux()
    if offload == "model":
        pipe.enable_model_cpu_offload(device="cpu")
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device="cpu")
        try:                                            # does the stock pipeline run like this here at all?
            pipe(**embeds(), height=64, width=64, num_inference_steps=1, output_type="latent")
        except TypeError as err:
            pytest.skip(f"FluxPipeline itself fails under sequential CPU offload in this environment: {err}"[:200])
    else:
        pipe.transformer.enable_group_offload(onload_device=torch.device("cpu"), offload_type="block_level",
                                              num_blocks_per_group=1)
    out = run(pipe)
    assert torch.isfinite(out).all()
    assert (out - reference).abs().max() < 1e-5
    again = run(pipe)                                   # hooks survive a run: a second call works the same
    assert torch.equal(out, again)


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
