"""The RALU nodes inside a real ComfyUI, headless on the CPU (docs/comfyui.md says how to run it).

Runs when ComfyUI is importable: ``RALU_COMFYUI=/path/to/ComfyUI`` (a checkout), with
``RALU_COMFYUI_PATHS`` naming extra folders for its imports (os.pathsep-separated: pure-Python
requirements installed with ``pip install --target``, a torchvision stand-in on a CPU torch
without torchvision), or ComfyUI's folder already on ``sys.path``. Skipped otherwise.

The model is a tiny FLUX built through ComfyUI's own classes (``supported_models.Flux``,
``model_base.Flux``, ``ModelPatcher``) with the random weights of ``ralu_torch.testing``'s tiny
diffusers ``FluxTransformer2DModel``, carried over by ComfyUI's own converter of diffusers'
FLUX layout (``comfy.model_detection.convert_diffusers_mmdit``; diffusers' converter the other
way, ``convert_flux_transformer_checkpoint_to_diffusers``, fixes FLUX.1's width 3072 and cannot
convert a tiny model). The VAE is FLUX's architecture with random weights, loaded by ComfyUI
from the diffusers state dict as its VAELoader loads a file.
"""

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
COMFYUI = os.environ.get("RALU_COMFYUI")
EXTRA = [p for p in os.environ.get("RALU_COMFYUI_PATHS", "").split(os.pathsep) if p]


def _available() -> str | None:
    """Why the tests cannot run, or None."""
    if COMFYUI:
        return None if (Path(COMFYUI) / "comfy" / "model_base.py").is_file() else \
            f"RALU_COMFYUI={COMFYUI} is not a ComfyUI checkout (no comfy/model_base.py)"
    if importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("comfy_extras") is not None:
        return None
    return "ComfyUI is not importable: set RALU_COMFYUI=/path/to/ComfyUI (docs/comfyui.md)"


pytestmark = [pytest.mark.skipif(_available() is not None, reason=str(_available())), pytest.mark.slow]

SEED = 7
GUIDANCE = 3.5


@pytest.fixture(scope="module")
def ralu_nodes():
    """ComfyUI imported headless on the CPU, and the RALU node package; sys.path and
    sys.modules as they were afterwards (the stand-in tests use the same module names)."""
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    # transformers decides once whether torchvision exists; decide it before a stand-in can be seen
    import transformers.utils.import_utils as tiu

    import ralu_torch.pipeline  # noqa: F401  (diffusers and transformers imported before ComfyUI's paths)

    tiu.is_torchvision_available()
    sys.path[:0] = ([COMFYUI] if COMFYUI else []) + EXTRA + [str(ROOT)]
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401

    import comfyui_ralu

    yield comfyui_ralu
    sys.path[:] = saved_path
    roots = [str(Path(p).resolve()) for p in ([COMFYUI] if COMFYUI else []) + EXTRA + [str(ROOT / "comfyui_ralu")]]
    for name in set(sys.modules) - saved_modules:          # ComfyUI's modules only: torch's stay registered
        origin = str(Path(getattr(sys.modules[name], "__file__", None) or "/").resolve())
        if any(origin.startswith(r) for r in roots) or name.split(".")[0] in ("comfy", "comfyui_ralu"):
            del sys.modules[name]


@pytest.fixture(scope="module")
def models(ralu_nodes):
    """(ComfyUI MODEL, ComfyUI VAE, the diffusers FluxPipeline with the same weights)."""
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    from diffusers import AutoencoderKL, FluxPipeline

    from ralu_torch.testing import FLUX_VAE, flux_pipeline

    tiny = flux_pipeline(tiny=True)
    t = tiny.transformer
    c = t.config
    unet = dict(image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=c.pooled_projection_dim,
                context_in_dim=c.joint_attention_dim, hidden_size=c.num_attention_heads * c.attention_head_dim,
                mlp_ratio=4.0, num_heads=c.num_attention_heads, depth=c.num_layers,
                depth_single_blocks=c.num_single_layers, axes_dim=list(c.axes_dims_rope), theta=10000, qkv_bias=True,
                guidance_embed=c.guidance_embeds)
    config = comfy.supported_models.Flux(unet)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    # ComfyUI's converter writes some tensors in place: give it copies
    weights = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in t.state_dict().items()}, "")
    missing, unexpected = base.diffusion_model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    cpu = torch.device("cpu")
    model = comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)
    torch.manual_seed(11)
    vae_d = AutoencoderKL(**FLUX_VAE)
    vae = comfy.sd.VAE(sd={k: v.clone() for k, v in vae_d.state_dict().items()})
    pipe = FluxPipeline(scheduler=tiny.scheduler, vae=vae_d, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=t)
    pipe.set_progress_bar_config(disable=True)
    return model, vae, pipe


def embeddings(pipe, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = pipe.transformer.config
    return torch.randn(batch, 8, c.joint_attention_dim, generator=g), torch.randn(batch, c.pooled_projection_dim,
                                                                                    generator=g)


def conditioning(text, pooled):
    return [[text, {"pooled_output": pooled, "guidance": GUIDANCE}]]


def custom_sample(sampler, sigmas, model, cond, latent):
    from comfy_extras.nodes_custom_sampler import BasicGuider, Noise_RandomNoise, SamplerCustomAdvanced

    guider = BasicGuider().get_guider(model, cond)[0]
    return SamplerCustomAdvanced().sample(Noise_RandomNoise(SEED), guider, sampler, sigmas, latent)[0]["samples"]


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_one_stage_ralu_sampler_equals_comfyuis_own_sampler(ralu_nodes, models, solver):
    """Evidence 1: a one-stage schedule through the RALU Sampler and SamplerCustomAdvanced is
    ComfyUI's own sampler of that name on the same sigmas."""
    import comfy.samplers

    model, vae, pipe = models
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    spec, sigmas = nodes["RALUSchedule"]().build(model, "custom", "default", steps="6", ends="1.0")[:2]
    assert len(sigmas) == 7 and float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
    ralu = nodes["RALUSampler"]().get_sampler(spec, vae, solver, "edges", "latent", "exact")[0]
    text, pooled = embeddings(pipe, 2)
    latent = {"samples": torch.zeros(2, 16, 16, 12)}
    ours = custom_sample(ralu, sigmas, model, conditioning(text, pooled), latent)
    stock = custom_sample(comfy.samplers.sampler_object(solver), sigmas, model, conditioning(text, pooled), latent)
    diff = (ours - stock).abs().max().item()
    print(f"one stage, {solver}: max |RALU Sampler - ComfyUI {solver}| = {diff:.2e}")
    assert torch.isfinite(ours).all() and ours.abs().max() > 0.1
    assert diff <= 1e-5


def ralu_reference(pipe, preset, text, pooled, first_noise, *, select="edges", negative=None, cfg=1.0):
    from ralu_torch import RALU
    from ralu_torch.tokens import unpack

    kwargs = dict(prompt_embeds=text, pooled_prompt_embeds=pooled, guidance_scale=GUIDANCE)
    if negative is not None:
        kwargs.update(negative_prompt_embeds=negative[0], negative_pooled_prompt_embeds=negative[1], true_cfg_scale=cfg)
    H, W = first_noise.shape[-2] * 16, first_noise.shape[-1] * 16
    out = RALU(pipe, preset, select=select)(**kwargs, height=H, width=W, latents=first_noise, output_type="latent",
                                            generator=torch.Generator().manual_seed(SEED + 1))
    return unpack(out.images, (H // 16, W // 16)), out.stage_tokens


@pytest.mark.parametrize("preset, cfg", [("flux-dev-7x", 1.0), ("flux-dev-4x", 1.0), ("flux-dev-7x", 2.0)])
def test_ralu_ksampler_equals_ralu_on_diffusers(ralu_nodes, models, preset, cfg):
    """Evidence 2: the RALU KSampler node on ComfyUI's FLUX and ralu_torch.RALU on diffusers'
    FLUX with the same weights and the same noise give the same final latents (batch 2, so the
    mixed stage's images hold different tokens; cfg 2 batches positive and negative)."""
    import comfy.sample
    import torch.nn.functional as F

    model, vae, pipe = models
    text, pooled = embeddings(pipe, 2)
    neg_text, neg_pooled = embeddings(pipe, 2, seed=5)
    latent = {"samples": torch.zeros(2, 16, 32, 24)}                    # 256x192 pixels: 48 low-resolution tokens
    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]()
    out = node.sample(model, SEED, preset, "default", cfg, "euler", conditioning(text, pooled),
                      conditioning(neg_text, neg_pooled), latent, vae)[0]["samples"]
    ours = model.model.process_latent_in(out)
    first = F.avg_pool2d(comfy.sample.prepare_noise(latent["samples"], SEED), 2) * 2      # what the node pools
    negative = (neg_text, neg_pooled) if cfg > 1 else None
    ref, stage_tokens = ralu_reference(pipe, preset, text, pooled, first, negative=negative, cfg=cfg)
    diff = (ours - ref).abs().max().item()
    print(f"{preset}, cfg {cfg}: stage tokens {stage_tokens}; max |RALU KSampler - ralu_torch.RALU| = {diff:.2e} "
          f"(latents up to {ref.abs().max().item():.2f})")
    assert stage_tokens[1] not in (stage_tokens[0], stage_tokens[-1])      # a real mixed stage
    assert diff <= 1e-4


def test_mixed_stage_runs_short_sequence_with_per_image_positions(ralu_nodes, models):
    """The mixed stage hands ComfyUI's FLUX only its tokens (the strip), and the ids it sees
    are each image's coordinate-rule positions."""
    model, vae, pipe = models
    seen = []
    net = model.model.diffusion_model
    original = net.forward_orig

    def spy(img, img_ids, *args, **kwargs):
        options = kwargs.get("transformer_options", args[6] if len(args) > 6 else {})  # forward_orig(img, img_ids, txt, txt_ids, timesteps, y, guidance, control, transformer_options)
        patches = options.get("patches", {})
        after = img_ids
        for p in patches.get("post_input", []):
            after = p({"img": img, "txt": None, "img_ids": img_ids, "txt_ids": None})["img_ids"]
        seen.append((img.shape[1], after.clone()))
        return original(img, img_ids, *args, **kwargs)

    net.forward_orig = spy
    try:
        text, pooled = embeddings(pipe, 2)
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]().sample(model, SEED, "flux-dev-4x", "default", 1.0, "euler",
                                                           conditioning(text, pooled), conditioning(text, pooled),
                                                           {"samples": torch.zeros(2, 16, 16, 12)}, vae)
    finally:
        del net.forward_orig
    lengths = [n for n, _ in seen]
    assert lengths[0] == 12 and lengths[-1] == 48 and any(12 < n < 48 for n in lengths)
    mixed = next(ids for n, ids in seen if 12 < n < 48)
    assert not torch.equal(mixed[0], mixed[1])                         # each image its own positions
    frac = mixed[..., 1:] % 1
    assert set(frac.unique().tolist()) == {0.0, 0.5}                   # coarse tokens and half-step children


class _PooledNoise:
    """A NOISE for the first stage of a pyramid wired by hand: ComfyUI's noise of the full-size
    latent pooled to the first stage's size, as the RALU Sampler pools it."""

    seed = SEED

    def __init__(self, full):
        self.full = full

    def generate_noise(self, latent):
        import torch.nn.functional as F

        return F.avg_pool2d(self.full, 2) * 2


def test_pyramid_wired_by_hand_from_stock_nodes_equals_the_ralu_sampler(ralu_nodes, models):
    """SamplerCustomAdvanced with ComfyUI's euler on the schedule's stage_1 sigmas, RALU Upsample
    Latent, SamplerCustomAdvanced with Disable Noise on stage_2: the RALU Sampler's run."""
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import BasicGuider, Noise_EmptyNoise, Noise_RandomNoise, \
        SamplerCustomAdvanced

    model, vae, pipe = models
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    spec, flat, stage1, stage2 = nodes["RALUSchedule"]().build(model, "custom", "default", steps="3, 4",
                                                               ends="0.35, 1.0")[:4]
    text, pooled = embeddings(pipe, 2)
    guider = BasicGuider().get_guider(model, conditioning(text, pooled))[0]
    latent = {"samples": torch.zeros(2, 16, 16, 12)}
    run = SamplerCustomAdvanced().sample
    ralu = nodes["RALUSampler"]().get_sampler(spec, vae, "euler", "edges", "latent", "exact")[0]
    whole = run(Noise_RandomNoise(SEED), guider, ralu, flat, latent)[0]["samples"]
    euler = comfy.samplers.sampler_object("euler")
    full = comfy.sample.prepare_noise(latent["samples"], SEED)
    low = run(_PooledNoise(full), guider, euler, stage1, {"samples": torch.zeros(2, 16, 8, 6)})[0]
    up = nodes["RALUUpsampleLatent"]().upsample(model, low, spec, 1, SEED + 1, "latent")[0]
    by_hand = run(Noise_EmptyNoise(), guider, euler, stage2, up)[0]["samples"]
    diff = (by_hand - whole).abs().max().item()
    print(f"pyramid 3+4 steps: max |by hand - RALU Sampler| = {diff:.2e}")
    assert diff <= 1e-5


def test_documented_api_workflow_runs_headless_and_writes_an_image(ralu_nodes, models, tmp_path):
    """Evidence 3: the API-format workflow of docs/comfyui.md, run by ComfyUI's executor with
    the RALU package loaded by ComfyUI's custom-node loader. Its VAELoader reads a FLUX VAE file
    (random weights); the FLUX and text-encoder loaders return tiny models built through
    ComfyUI's classes (ComfyUI fixes FLUX's width and T5-XXL's size when it reads files); the
    image is made 128x96 pixels instead of 1024x1024."""
    import json

    import comfy.sd
    import comfy.text_encoders.flux
    import execution
    import folder_paths
    import nodes
    from safetensors.torch import save_file

    model, vae, pipe = models
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    assert asyncio.run(nodes.load_custom_node(str(ROOT / "comfyui_ralu")))
    prompt = json.loads((ROOT / "comfyui_ralu" / "example_workflows" / "ralu_flux_api.json").read_text())
    files = {node["class_type"]: node["inputs"] for node in prompt.values()}
    vae_dir = tmp_path / "vae"
    vae_dir.mkdir()
    save_file({k: v.contiguous() for k, v in pipe.vae.state_dict().items()}, str(vae_dir / files["VAELoader"]["vae_name"]))
    folder_paths.add_model_folder_path("vae", str(vae_dir), is_default=True)
    folder_paths.set_output_directory(str(tmp_path / "out"))

    class TinyFlux(nodes.UNETLoader):
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"unet_name": ([files["UNETLoader"]["unet_name"]],),
                                 "weight_dtype": (["default"],)}}

        def load_unet(self, unet_name, weight_dtype):
            return (model,)

    class TinyText(nodes.DualCLIPLoader):
        @classmethod
        def INPUT_TYPES(cls):
            d = files["DualCLIPLoader"]
            return {"required": {"clip_name1": ([d["clip_name1"]],), "clip_name2": ([d["clip_name2"]],),
                                 "type": (["flux"],)}}

        def load_clip(self, clip_name1, clip_name2, type):
            target = _ClipTarget(comfy.text_encoders.flux.flux_clip(), comfy.text_encoders.flux.FluxTokenizer)
            width = pipe.transformer.config.joint_attention_dim
            options = {"clip_l_model_config": dict(hidden_size=width, intermediate_size=37, num_hidden_layers=1,
                                                   num_attention_heads=2, projection_dim=width),
                       "t5xxl_model_config": dict(d_model=width, d_ff=37, d_kv=16, num_layers=1, num_heads=2)}
            clip = comfy.sd.CLIP(target, model_options=options)
            g = torch.Generator().manual_seed(3)
            for p in clip.cond_stage_model.parameters():
                p.data.copy_(torch.randn(p.shape, generator=g) * 0.02)
            return (clip,)

    mappings = nodes.NODE_CLASS_MAPPINGS
    saved = {k: mappings[k] for k in ("UNETLoader", "DualCLIPLoader")}
    mappings.update(UNETLoader=TinyFlux, DualCLIPLoader=TinyText)
    try:
        for node in prompt.values():
            if node["class_type"] == "EmptySD3LatentImage":
                node["inputs"].update(width=128, height=96)
        valid = asyncio.run(execution.validate_prompt("ralu-check", prompt, None))
        assert valid[0], valid[1:]
        executor = execution.PromptExecutor(_Server(), cache_type=False)
        executor.execute(prompt, "ralu-check", {}, valid[2])
        errors = [m for m in executor.status_messages if m[0] == "execution_error"]
        assert executor.success, errors
    finally:
        mappings.update(saved)
    images = sorted((tmp_path / "out").rglob("*.png"))
    assert len(images) == 1
    from PIL import Image

    with Image.open(images[0]) as im:
        assert im.size == (128, 96)
    print(f"workflow wrote {images[0].name}, {images[0].stat().st_size} bytes")


class _ClipTarget:
    def __init__(self, clip, tokenizer):
        self.clip, self.tokenizer, self.params = clip, tokenizer, {}


class _Server:
    """What ComfyUI's executor reports progress to, headless: nothing."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, *args, **kwargs):
        pass
