"""The RALU nodes inside a real ComfyUI, headless on the CPU (docs/comfyui.md says how to run it).

Runs when ComfyUI is importable: ``RALU_COMFYUI=/path/to/ComfyUI`` (a checkout), with
``RALU_COMFYUI_PATHS`` naming extra folders for its imports (os.pathsep-separated: pure-Python
requirements installed with ``pip install --target``, a torchvision stand-in on a CPU torch
without torchvision), or ComfyUI's folder already on ``sys.path``. Skipped otherwise.

Every model is tiny, built through ComfyUI's own classes (``supported_models``, ``model_base``,
``ModelPatcher``), with the same weights as a diffusers model of its family, carried over by
the two libraries' own converters:

- FLUX.1: diffusers' random weights into FLUX's original layout by ComfyUI's converter of
  diffusers' layout (``comfy.model_detection.convert_diffusers_mmdit``; diffusers' converter the
  other way fixes FLUX.1's width 3072 and cannot convert a tiny model);
- Chroma: the same converter for its FLUX blocks; its distilled guidance layer, which that
  converter does not know, renamed key by key here (diffusers' Chroma converter fixes width
  3072). ComfyUI's Chroma fixes the modulation table at 344 entries (19 double and 38 single
  blocks), so the tiny Chroma keeps those block counts at width 32;
- SD3: ComfyUI's loader of a diffusers state dict (``comfy.sd.load_diffusion_model_state_dict``,
  which detects the model and converts it); ComfyUI's MMDiT fixes the head width at 64;
- Qwen-Image: ComfyUI's model takes diffusers' layout as it is;
- Wan: ComfyUI's model (Wan's original layout) with random weights, into diffusers' layout by
  diffusers' converter (``convert_wan_transformer_to_diffusers``).

The VAEs are the families' architectures with random weights: FLUX's (FLUX.1, Chroma, SD3,
loaded by ComfyUI from the diffusers state dict as its VAELoader loads a file) and Wan 2.1's
(Wan, Qwen-Image: ComfyUI's fixes its width, 96; into diffusers by ``convert_wan_vae_to_diffusers``).
Wan 2.2 TI2V-5B's VAE (705M parameters, no converter in either library) exists on the ComfyUI
side only; its comparison with ralu_torch.RALU uses the random selection, which reads no decode.
"""

import asyncio
import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

import comfyui_cases as cases

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
CFG = 2.0
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ralu_nodes():
    """ComfyUI imported headless on the CPU, and the RALU node package; sys.path and
    sys.modules as they were afterwards (the stand-in tests use the same module names)."""
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    # transformers and diffusers decide once whether torchvision exists: decide it before a stand-in can be seen
    import diffusers
    import transformers.utils.import_utils as tiu

    import ralu_torch.pipeline  # noqa: F401

    tiu.is_torchvision_available()
    for name in ("ChromaTransformer2DModel", "SD3Transformer2DModel", "QwenImageTransformer2DModel",
                 "WanTransformer3DModel", "AutoencoderKLWan", "AutoencoderKLQwenImage", "WanPipeline", "ChromaPipeline",
                 "QwenImagePipeline", "StableDiffusion3Pipeline", "FluxPipeline"):
        getattr(diffusers, name)
    import diffusers.loaders.single_file_utils  # noqa: F401

    sys.path[:0] = ([COMFYUI] if COMFYUI else []) + EXTRA + [str(ROOT)]
    # ComfyUI's utils package first: importing ComfyUI's nodes.py (comfy_extras' nodes do) puts comfy/ at the
    # front of sys.path, where comfy/utils.py would then answer to "utils"
    import utils.install_util  # noqa: F401
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


# -- the models ----------------------------------------------------------------------------------

def fill(module, seed: int, scale: float = 0.05):
    """Random weights (ComfyUI's model classes leave theirs uninitialised)."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def patcher(base):
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(base, load_device=CPU, offload_device=CPU)


def comfy_model(config_class, unet: dict, weights: dict | None = None, seed: int | None = None):
    """A ComfyUI MODEL of ``config_class`` (``comfy.supported_models``) with ``unet``'s
    configuration: ``weights`` loaded (every key), or random ones from ``seed``."""
    config = config_class(unet)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    if weights is None:
        fill(base.diffusion_model, seed)
    else:
        missing, unexpected = base.diffusion_model.load_state_dict(weights, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
    return patcher(base)


def copied(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}      # converters write in place


@dataclasses.dataclass
class Case:
    family: str
    model: object                  # ComfyUI MODEL (the high-noise expert for Wan 2.2)
    vae: object                    # ComfyUI VAE
    pipe: object                   # diffusers pipeline with the same weights
    latent: tuple                  # the checks' ComfyUI latent
    model_2: object = None         # Wan 2.2 A14B's low-noise expert
    pipe_2: object = None          # the two-expert diffusers pipeline


@pytest.fixture(scope="module")
def vaes(ralu_nodes):
    """The two VAE architectures, each in ComfyUI and in diffusers with the same weights."""
    import comfy.ldm.wan.vae
    import comfy.sd
    from diffusers import AutoencoderKL, AutoencoderKLQwenImage, AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from ralu_torch.testing import FLUX_VAE

    torch.manual_seed(11)
    flux = AutoencoderKL(**FLUX_VAE)
    wan = fill(comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                        temperal_downsample=[False, True, True], dropout=0.0), 12)
    wan_d, qwen_d = AutoencoderKLWan(), AutoencoderKLQwenImage()
    for d in (wan_d, qwen_d):
        missing, unexpected = d.load_state_dict(convert_wan_vae_to_diffusers(copied(wan)), strict=False)
        assert not missing and not unexpected
    return {"flux": (comfy.sd.VAE(sd=copied(flux)), flux), "wan": (comfy.sd.VAE(sd=copied(wan)), wan_d),
            "qwen-image": (None, qwen_d)}


def _flux(vaes):
    import comfy.model_detection
    import comfy.supported_models
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from ralu_torch.testing import FLUX_DEV_SCHEDULER, flux_pipeline

    t = flux_pipeline(tiny=True).transformer
    c = t.config
    unet = dict(image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=c.pooled_projection_dim,
                context_in_dim=c.joint_attention_dim, hidden_size=c.num_attention_heads * c.attention_head_dim,
                mlp_ratio=4.0, num_heads=c.num_attention_heads, depth=c.num_layers,
                depth_single_blocks=c.num_single_layers, axes_dim=list(c.axes_dims_rope), theta=10000, qkv_bias=True,
                guidance_embed=c.guidance_embeds)
    model = comfy_model(comfy.supported_models.Flux, unet, comfy.model_detection.convert_diffusers_mmdit(copied(t), ""))
    vae, vae_d = vaes["flux"]
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae_d, text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=t)
    return Case("flux", model, vae, pipe, (2, 16, 32, 24))


def _chroma(vaes):
    import comfy.model_detection
    import comfy.supported_models
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    from ralu_torch.testing import SCHEDULERS

    torch.manual_seed(0)
    t = ChromaTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                 attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                 axes_dims_rope=(4, 6, 6), approximator_num_channels=64, approximator_hidden_dim=32,
                                 approximator_layers=1)
    weights = comfy.model_detection.convert_diffusers_mmdit(copied(t), "")
    for k, v in copied(t).items():            # the guidance approximator, which that converter does not know
        if k.startswith("distilled_guidance_layer."):
            name = k.replace(".linear_1.", ".in_layer.").replace(".linear_2.", ".out_layer.")
            weights[name[:-len(".weight")] + ".scale" if ".norms." in name else name] = v
    unet = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=32, hidden_size=32,
                mlp_ratio=4.0, num_heads=2, depth=19, depth_single_blocks=38, axes_dim=[4, 6, 6], theta=10000,
                qkv_bias=True, patch_size=2, in_dim=64, out_dim=32, hidden_dim=32, n_layers=1)
    model = comfy_model(comfy.supported_models.Chroma, unet, weights)
    vae, vae_d = vaes["flux"]
    pipe = ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS["chroma"]), vae=vae_d,
                          transformer=t, text_encoder=None, tokenizer=None)
    return Case("chroma", model, vae, pipe, (2, 16, 32, 24))


def _sd3(vaes):
    import comfy.sd
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, \
        StableDiffusion3Pipeline

    from ralu_torch.testing import FLUX_VAE

    torch.manual_seed(0)
    t = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                              attention_head_dim=64, num_attention_heads=2, joint_attention_dim=32,
                              caption_projection_dim=128, pooled_projection_dim=32, pos_embed_max_size=48,
                              dual_attention_layers=(0,), qk_norm="rms_norm")
    model = comfy.sd.load_diffusion_model_state_dict(copied(t))
    vae, flux_d = vaes["flux"]
    vae_d = AutoencoderKL(**{**FLUX_VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609})
    vae_d.load_state_dict(flux_d.state_dict())
    pipe = StableDiffusion3Pipeline(transformer=t, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae_d,
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    return Case("sd3", model, vae, pipe, (2, 16, 32, 24))


def _qwen(vaes):
    import comfy.supported_models
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel

    from ralu_torch.testing import SCHEDULERS

    config = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6))
    torch.manual_seed(0)
    t = QwenImageTransformer2DModel(**config)
    model = comfy_model(comfy.supported_models.QwenImage, {"image_model": "qwen_image", **config}, copied(t))
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS["qwen-image"]),
                             vae=vaes["qwen-image"][1], transformer=t, text_encoder=None, tokenizer=None)
    return Case("qwen-image", model, vaes["wan"][0], pipe, (2, 16, 1, 32, 32))


WAN = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=24, ffn_dim=32,
           freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=2, window_size=(-1, -1), qk_norm=True,
           cross_attn_norm=True, eps=1e-6)


def wan_diffusers(model, **extra):
    """The diffusers ``WanTransformer3DModel`` with the weights of ComfyUI's Wan ``model``."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    net = model.model.diffusion_model
    t = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                              in_channels=net.in_dim, out_channels=net.out_dim, text_dim=32, freq_dim=32, ffn_dim=32,
                              num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", **extra)
    missing, unexpected = t.load_state_dict(convert_wan_transformer_to_diffusers(copied(net)), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return t


def _wan(vaes):
    import comfy.supported_models
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    high = comfy_model(comfy.supported_models.WAN21_T2V, WAN, seed=1)
    low = comfy_model(comfy.supported_models.WAN21_T2V, WAN, seed=2)
    vae, vae_d = vaes["wan"]
    t, t2 = wan_diffusers(high), wan_diffusers(low)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    one = WanPipeline(tokenizer=None, text_encoder=None, vae=vae_d, scheduler=sched, transformer=t)
    two = WanPipeline(tokenizer=None, text_encoder=None, vae=vae_d, scheduler=sched, transformer=t,
                      transformer_2=t2, boundary_ratio=0.875)
    for p in (one, two):
        p.set_progress_bar_config(disable=True)
    return Case("wan", high, vae, one, (2, 16, 3, 16, 12), model_2=low, pipe_2=two)


BUILDERS = {"flux": _flux, "chroma": _chroma, "sd3": _sd3, "qwen-image": _qwen, "wan": _wan}


@pytest.fixture(scope="module")
def case_of(ralu_nodes, vaes):
    made = {}

    def get(family):
        if family not in made:
            made[family] = BUILDERS[family](vaes)
            made[family].pipe.set_progress_bar_config(disable=True)
        return made[family]

    return get


def custom_sample(sampler, sigmas, model, positive, negative, latent, cfg=CFG):
    from comfy_extras.nodes_custom_sampler import CFGGuider, Noise_RandomNoise, SamplerCustomAdvanced

    guider = CFGGuider().get_guider(model, positive, negative, cfg)[0]
    return SamplerCustomAdvanced().sample(Noise_RandomNoise(SEED), guider, sampler, sigmas, latent)[0]["samples"]


def conds(case, batch=2):
    pos = cases.embeddings(case.pipe, case.family, batch)
    neg = cases.embeddings(case.pipe, case.family, batch, seed=5)
    return pos, neg


# -- evidence 1: one stage is ComfyUI's own sampler ------------------------------------------------

ONE_STAGE = [("flux", "euler"), ("flux", "heun"), ("chroma", "euler"), ("sd3", "euler"), ("qwen-image", "euler"),
             ("wan", "euler"), ("wan", "uni_pc"), ("wan", "uni_pc_bh2"), ("sd3", "dpmpp_2m")]


@pytest.mark.parametrize("family, solver", ONE_STAGE)
def test_one_stage_ralu_sampler_equals_comfyuis_own_sampler(ralu_nodes, case_of, family, solver):
    """A one-stage schedule (6 steps, solved for the MODEL's shift) through the RALU Sampler and
    SamplerCustomAdvanced is ComfyUI's own sampler of that name on the same sigmas (batch 2,
    CFG with a negative)."""
    import comfy.samplers

    case = case_of(family)
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    spec, sigmas = nodes["RALUSchedule"]().build(case.model, "custom", "default", steps="6", ends="1.0")[:2]
    assert len(sigmas) == 7 and float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0
    ralu = nodes["RALUSampler"]().get_sampler(spec, case.vae, solver, "edges", "latent", "exact")[0]
    pos, neg = conds(case)
    c = lambda e: cases.conditioning(family, e)  # noqa: E731
    latent = {"samples": torch.zeros(case.latent)}
    ours = custom_sample(ralu, sigmas, case.model, c(pos), c(neg), latent)
    stock = custom_sample(comfy.samplers.sampler_object(solver), sigmas, case.model, c(pos), c(neg), latent)
    diff = (ours - stock).abs().max().item()
    print(f"one stage, {family}, {solver}: max |RALU Sampler - ComfyUI {solver}| = {diff:.2e}")
    assert torch.isfinite(ours).all() and ours.abs().max() > 0.1
    assert diff <= 1e-5


# -- evidence 2 and 3: the whole method against ralu_torch.RALU, tokens at the model's input ------

class TokenCounter:
    """Image tokens per call at the diffusion model's input (a forward pre-hook): a latent's
    ``(frames x) height/2 x width/2`` (one frame for a strip)."""

    def __init__(self, model):
        self.counts = []
        net = model.model.diffusion_model
        self.handle = net.register_forward_pre_hook(lambda m, args: self.counts.append(self.tokens(args[0])))

    @staticmethod
    def tokens(x):
        frames = x.shape[2] if x.dim() == 5 else 1
        return frames * (x.shape[-2] // 2) * (x.shape[-1] // 2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def ksampler(ralu_nodes, case, preset, pos, neg, cfg=CFG, **optional):
    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]()
    c = lambda e: cases.conditioning(case.family, e)  # noqa: E731
    return node.sample(case.model, SEED, preset, "default", cfg, "euler", c(pos), c(neg),
                       {"samples": torch.zeros(case.latent)}, case.vae, **optional)[0]["samples"]


PARITY = [(f, p) for f, presets in cases.PRESETS.items() for p in presets] + [("flux", "flux-dev-7x@1")]


@pytest.mark.parametrize("family, preset", PARITY)
def test_ralu_ksampler_equals_ralu_on_diffusers(ralu_nodes, case_of, family, preset):
    """The RALU KSampler on ComfyUI's model and ralu_torch.RALU on the diffusers model with the
    same weights and the same noise give the same final latents: the family's 7x and 4x preset,
    batch 2 (each image its own mixed token set), CFG 2 with a negative (cfg 1 once, for
    FLUX.1-dev's distilled guidance alone). The model's input shows the stage token counts:
    the low-resolution stage, a mixed one strictly between, full resolution."""
    import comfy.sample

    preset, _, cfg = preset.partition("@")
    cfg = float(cfg or CFG)
    case = case_of(family)
    pos, neg = conds(case)
    with TokenCounter(case.model) as counter:
        out = ksampler(ralu_nodes, case, preset, pos, neg, cfg)
    ours = case.model.model.process_latent_in(out)
    noise = comfy.sample.prepare_noise(torch.zeros(case.latent), SEED)
    ref, stage_tokens = cases.reference(case.pipe, family, preset, noise, pos, neg, cfg, SEED + 1)
    diff = (ours - ref).abs().max().item()
    seen = sorted(set(counter.counts))
    print(f"{preset}, cfg {cfg:g}: stage tokens {stage_tokens}, tokens per call at the model {seen}; "
          f"max |RALU KSampler - ralu_torch.RALU| = {diff:.2e} (latents up to {ref.abs().max().item():.2f})")
    assert stage_tokens[0] < stage_tokens[1] < stage_tokens[-1]             # a real mixed stage
    assert seen[0] == stage_tokens[0] and seen[-1] == stage_tokens[-1] and any(seen[0] < n < seen[-1] for n in seen)
    assert diff <= 1e-4


def test_wan22_two_experts_equal_ralu_with_both(ralu_nodes, case_of):
    """Wan 2.2 A14B as ComfyUI loads it, two WAN21 models: the RALU KSampler with the high-noise
    expert as model and the low-noise one as model_2 (boundary 0.875) equals ralu_torch.RALU on
    the two-expert WanPipeline; each expert was called, and both more than once (RALU's
    transitions return the noise level above the boundary)."""
    import comfy.sample

    case = case_of("wan")
    pos, neg = conds(case)
    calls = {}
    hooks = [m.model.diffusion_model.register_forward_pre_hook(
        lambda mod, args, k=k: calls.__setitem__(k, calls.get(k, 0) + 1)) for k, m in (("high", case.model),
                                                                                     ("low", case.model_2))]
    try:
        out = ksampler(ralu_nodes, case, "wan-480p-7x", pos, neg, model_2=case.model_2, boundary=0.875)
    finally:
        for h in hooks:
            h.remove()
    noise = comfy.sample.prepare_noise(torch.zeros(case.latent), SEED)
    ref, stage_tokens = cases.reference(case.pipe_2, "wan", "wan-480p-7x", noise, pos, neg, CFG, SEED + 1)
    diff = (case.model.model.process_latent_in(out) - ref).abs().max().item()
    print(f"wan 2.2 two experts, wan-480p-7x, cfg {CFG:g}: model calls {calls}; "
          f"max |RALU KSampler - ralu_torch.RALU| = {diff:.2e} (latents up to {ref.abs().max().item():.2f})")
    assert calls.get("high", 0) > 1 and calls.get("low", 0) > 1
    assert diff <= 1e-4


# -- Wan 2.2 TI2V-5B (WAN22, 48 latent channels, a 16x VAE) ---------------------------------------

@pytest.fixture(scope="module")
def wan22(ralu_nodes):
    """ComfyUI's Wan 2.2 TI2V-5B model (tiny) and its VAE (the architecture ComfyUI fixes, random
    weights); the diffusers WanPipeline with the model's weights and a small 48-channel, 16x
    Wan 2.2 VAE (the random selection below reads no decode)."""
    import comfy.ldm.wan.vae2_2
    import comfy.sd
    import comfy.supported_models
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    model = comfy_model(comfy.supported_models.WAN22_T2V, {**WAN, "in_dim": 48, "out_dim": 48}, seed=4)
    vae = comfy.sd.VAE(sd=copied(fill(comfy.ldm.wan.vae2_2.WanVAE(
        dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
        temperal_downsample=[False, True, True], dropout=0.0), 13, scale=0.02)))
    fmt = model.model.latent_format
    torch.manual_seed(5)
    vae_d = AutoencoderKLWan(base_dim=8, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=1, is_residual=True,
                             in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                             latents_mean=fmt.latents_mean.flatten().tolist(),
                             latents_std=fmt.latents_std.flatten().tolist())
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae_d, transformer=wan_diffusers(model),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), expand_timesteps=True)
    pipe.set_progress_bar_config(disable=True)
    yield Case("wan", model, vae, pipe, (2, 48, 2, 8, 8))
    del vae


def test_wan22_5b_one_stage_and_the_whole_method(ralu_nodes, wan22):
    """Wan 2.2 TI2V-5B: a one-stage schedule through the RALU Sampler is ComfyUI's euler; the
    RALU Sampler on wan-480p-7x and wan-480p-4x (CFG 2, batch 2) equals ralu_torch.RALU on the
    diffusers model, both with the random selection (its VAE has no converter between the two
    layouts, so the decoded estimates the edge selection reads would differ); the model's
    input shows the low-resolution, mixed and full token counts."""
    import comfy.sample
    import comfy.samplers

    case, nodes = wan22, ralu_nodes.NODE_CLASS_MAPPINGS
    pos, neg = conds(case)
    c = lambda e: cases.conditioning("wan", e)  # noqa: E731
    latent = {"samples": torch.zeros(case.latent)}
    spec, sigmas = nodes["RALUSchedule"]().build(case.model, "custom", "default", steps="6", ends="1.0")[:2]
    ralu = nodes["RALUSampler"]().get_sampler(spec, case.vae, "euler", "edges", "latent", "exact")[0]
    diff = (custom_sample(ralu, sigmas, case.model, c(pos), c(neg), latent) -
            custom_sample(comfy.samplers.sampler_object("euler"), sigmas, case.model, c(pos), c(neg), latent))
    print(f"one stage, wan2.2-ti2v-5b, euler: max |RALU Sampler - ComfyUI euler| = {diff.abs().max().item():.2e}")
    assert diff.abs().max() <= 1e-5
    for preset in cases.PRESETS["wan"]:
        spec, sigmas = nodes["RALUSchedule"]().build(case.model, preset, "default")[:2]
        ralu = nodes["RALUSampler"]().get_sampler(spec, case.vae, "euler", "random", "latent", "exact")[0]
        with TokenCounter(case.model) as counter:
            out = custom_sample(ralu, sigmas, case.model, c(pos), c(neg), latent)
        noise = comfy.sample.prepare_noise(latent["samples"], SEED)
        ref, stage_tokens = cases.reference(case.pipe, "wan", preset, noise, pos, neg, CFG, SEED + 1, select="random")
        d = (case.model.model.process_latent_in(out) - ref).abs().max().item()
        seen = sorted(set(counter.counts))
        print(f"wan2.2-ti2v-5b {preset}, cfg {CFG:g}, random selection: stage tokens {stage_tokens}, tokens per call "
              f"at the model {seen}; max |RALU Sampler - ralu_torch.RALU| = {d:.2e}")
        assert seen == sorted(set(stage_tokens)) and stage_tokens[0] < stage_tokens[1] < stage_tokens[-1]
        assert d <= 1e-4


# -- Wan image-to-video: ComfyUI's WanImageToVideo conditioning --------------------------------------

@pytest.fixture(scope="module")
def wan_i2v(ralu_nodes, vaes):
    """ComfyUI's Wan 2.1 I2V model (tiny: 36 input channels, CLIP image embedder) and the
    positive, negative and latent that ComfyUI's WanImageToVideo node makes of a start image and
    a CLIP vision output (batch 2)."""
    import comfy.clip_vision
    import comfy.supported_models
    from comfy_extras.nodes_wan import WanImageToVideo

    model = comfy_model(comfy.supported_models.WAN21_I2V, {**WAN, "model_type": "i2v", "in_dim": 36}, seed=3)
    vae = vaes["wan"][0]
    case = Case("wan", model, vae, None, (2, 16, 3, 16, 12))
    g = torch.Generator().manual_seed(1)
    pos, neg = ({"text": torch.randn(2, 8, WAN["text_dim"], generator=g)} for _ in range(2))
    vision = comfy.clip_vision.Output()
    vision["penultimate_hidden_states"] = torch.randn(1, 257, 1280, generator=torch.Generator().manual_seed(6))
    start = torch.rand(1, 128, 96, 3, generator=torch.Generator().manual_seed(8))
    out = WanImageToVideo.execute(cases.conditioning("wan", pos), cases.conditioning("wan", neg), vae, width=96,
                                  height=128, length=9, batch_size=2, start_image=start, clip_vision_output=vision)
    positive, negative, latent = out.result
    assert tuple(latent["samples"].shape) == case.latent
    return case, positive, negative, latent


@pytest.mark.parametrize("solver", ["euler", "uni_pc"])
def test_wan_i2v_one_stage_equals_comfyuis_own_sampler(ralu_nodes, wan_i2v, solver):
    """Wan 2.1 I2V under WanImageToVideo's conditioning (the concatenated start image and mask,
    the CLIP vision features): a one-stage schedule through the RALU Sampler is ComfyUI's own
    sampler on the same sigmas (the condition at full resolution, as ComfyUI gives it)."""
    import comfy.samplers

    case, positive, negative, latent = wan_i2v
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    spec, sigmas = nodes["RALUSchedule"]().build(case.model, "custom", "default", steps="6", ends="1.0")[:2]
    ralu = nodes["RALUSampler"]().get_sampler(spec, case.vae, solver, "edges", "latent", "exact")[0]
    ours = custom_sample(ralu, sigmas, case.model, positive, negative, latent)
    stock = custom_sample(comfy.samplers.sampler_object(solver), sigmas, case.model, positive, negative, latent)
    diff = (ours - stock).abs().max().item()
    print(f"one stage, wan i2v, {solver}: max |RALU Sampler - ComfyUI {solver}| = {diff:.2e}")
    assert torch.isfinite(ours).all() and diff <= 1e-5


def test_wan_i2v_condition_follows_each_stages_tokens(ralu_nodes, wan_i2v, monkeypatch):
    """The RALU KSampler on Wan 2.1 I2V (wan-480p-7x, CFG 2): the model receives, at every
    call, the condition ComfyUI made at full resolution read on that stage's tokens
    (``ralu_torch.tokens.latent_tokens``: average-pooled on the uniform stages, per token on the
    mixed stage's strip), the low-resolution, mixed and full token counts at its input."""
    import torch.nn.functional as F

    from comfyui_ralu.families import wan
    from ralu_torch.tokens import latent_tokens, pack

    case, positive, negative, latent = wan_i2v
    full, given, stages = [], [], []

    def outer(executor, x, t, c_concat=None, *args, **kwargs):       # ComfyUI's condition, before the nodes' wrapper
        full.append(c_concat.clone())
        return executor(x, t, c_concat, *args, **kwargs)

    model = case.model.clone()
    model.add_wrapper_with_key("apply_model", "a-spy", outer)
    follow = wan.FAMILY.follow
    monkeypatch.setattr(wan.FAMILY, "follow", lambda c, tokens, *a: stages.append(tokens) or follow(c, tokens, *a))
    hook = model.model.diffusion_model.register_forward_pre_hook(lambda m, args: given.append(args[0][:, 16:].clone()))
    try:
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]().sample(model, SEED, "wan-480p-7x", "default", CFG, "euler",
                                                               positive, negative, latent, case.vae)
    finally:
        hook.remove()
    counts = sorted({TokenCounter.tokens(g) for g in given})
    print(f"wan i2v, wan-480p-7x: tokens per call at the model {counts}; condition checked at {len(given)} calls")
    assert len(counts) == 3 and len(full) == len(given) == len(stages)
    for c, g, tokens in zip(full, given, stages):
        n, C, T, H, W = c.shape
        stacked = c.reshape(n, C, T * H, W).float()
        rep = type(tokens)(cells=tokens.cells.repeat(n // tokens.batch, 1, 1), size=tokens.size.repeat(
            n // tokens.batch, 1), grid=tokens.grid)
        assert torch.allclose(pack(g.reshape(n, C, -1, g.shape[-1]).float()), latent_tokens(stacked, rep), atol=1e-5)
        if tokens.uniform and tokens.coarsest > 1:
            assert torch.allclose(g.reshape(n, C, -1, g.shape[-1]).float(), F.avg_pool2d(stacked, tokens.coarsest),
                                  atol=1e-5)


def test_wan_i2v_ralu_ksampler_equals_ralu_on_the_image_to_video_pipeline(ralu_nodes, vaes):
    """Wan image-to-video with a conditioning image, the whole method: ComfyUI's WAN21 with 36
    input channels and no CLIP (as each of Wan 2.2 I2V A14B's experts), conditioned by
    WanImageToVideo on a start image, under the RALU KSampler (wan-480p-7x, CFG 2, batch 2),
    equals ralu_torch.RALU on diffusers' WanImageToVideoPipeline with the same weights, VAE and
    image (each side encodes the image with its own VAE and builds its own mask); the model's
    input shows the low-resolution, mixed and full token counts."""
    import comfy.sample
    import comfy.supported_models
    from comfy_extras.nodes_wan import WanImageToVideo
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    model = comfy_model(comfy.supported_models.WAN21_T2V, {**WAN, "in_dim": 36}, seed=9)
    vae, vae_d = vaes["wan"]
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae_d, transformer=wan_diffusers(model),
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), image_encoder=None,
                                   image_processor=None)
    pipe.set_progress_bar_config(disable=True)
    case = Case("wan", model, vae, pipe, (2, 16, 3, 16, 12))
    pos, neg = conds(case)
    start = torch.rand(1, 128, 96, 3, generator=torch.Generator().manual_seed(8))
    positive, negative, latent = WanImageToVideo.execute(cases.conditioning("wan", pos), cases.conditioning("wan", neg),
                                                         vae, width=96, height=128, length=9, batch_size=2,
                                                         start_image=start).result
    assert tuple(latent["samples"].shape) == case.latent
    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]()
    with TokenCounter(model) as counter:
        out = node.sample(model, SEED, "wan-480p-7x", "default", CFG, "euler", positive, negative, latent, vae)[0]
    noise = comfy.sample.prepare_noise(torch.zeros(case.latent), SEED)
    ref, stage_tokens = cases.reference(pipe, "wan", "wan-480p-7x", noise, pos, neg, CFG, SEED + 1,
                                        image=start.permute(0, 3, 1, 2))
    diff = (model.model.process_latent_in(out["samples"]) - ref).abs().max().item()
    seen = sorted(set(counter.counts))
    print(f"wan i2v (36 channels, a start image), wan-480p-7x, cfg {CFG:g}: stage tokens {stage_tokens}, tokens per "
          f"call at the model {seen}; max |RALU KSampler - ralu_torch.RALU| = {diff:.2e} "
          f"(latents up to {ref.abs().max().item():.2f})")
    assert seen[0] == stage_tokens[0] and seen[-1] == stage_tokens[-1] and any(seen[0] < n < seen[-1] for n in seen)
    assert diff <= 1e-4


# -- the pyramid by hand ------------------------------------------------------------------------------

class _PooledNoise:
    """A NOISE for the first stage of a pyramid wired by hand: ComfyUI's noise of the full-size
    latent pooled to the first stage's size, as the RALU Sampler pools it."""

    seed = SEED

    def __init__(self, full):
        self.full = full

    def generate_noise(self, latent):
        return cases.first_noise(self.full, 2)


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_pyramid_wired_by_hand_from_stock_nodes_equals_the_ralu_sampler(ralu_nodes, case_of, family):
    """SamplerCustomAdvanced with ComfyUI's euler on the schedule's stage_1 sigmas, RALU Upsample
    Latent, SamplerCustomAdvanced with Disable Noise on stage_2: the RALU Sampler's run."""
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import BasicGuider, Noise_EmptyNoise, Noise_RandomNoise, \
        SamplerCustomAdvanced

    case = case_of(family)
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    spec, flat, stage1, stage2 = nodes["RALUSchedule"]().build(case.model, "custom", "default", steps="3, 4",
                                                               ends="0.35, 1.0")[:4]
    pos, _ = conds(case)
    guider = BasicGuider().get_guider(case.model, cases.conditioning(family, pos))[0]
    latent = {"samples": torch.zeros(case.latent)}
    run = SamplerCustomAdvanced().sample
    ralu = nodes["RALUSampler"]().get_sampler(spec, case.vae, "euler", "edges", "latent", "exact")[0]
    whole = run(Noise_RandomNoise(SEED), guider, ralu, flat, latent)[0]["samples"]
    euler = comfy.samplers.sampler_object("euler")
    full = comfy.sample.prepare_noise(latent["samples"], SEED)
    small = torch.zeros(cases.first_noise(full, 2).shape)
    low = run(_PooledNoise(full), guider, euler, stage1, {"samples": small})[0]
    up = nodes["RALUUpsampleLatent"]().upsample(case.model, low, spec, 1, SEED + 1, "latent")[0]
    by_hand = run(Noise_EmptyNoise(), guider, euler, stage2, up)[0]["samples"]
    diff = (by_hand - whole).abs().max().item()
    print(f"pyramid 3+4 steps, {family}: max |by hand - RALU Sampler| = {diff:.2e}")
    assert diff <= 1e-5


# -- evidence 4: every example workflow runs headless ----------------------------------------------

WORKFLOWS = sorted(p.name[:-len("_api.json")] for p in (ROOT / "comfyui_ralu" / "example_workflows").glob("*_api.json"))
#: The workflows' sizes, shrunk for the CPU: (width, height, frames) of every latent-making node.
SMALL = {"image": (128, 96, None), "ralu_qwen_image": (128, 128, None), "video": (96, 128, 9),
         "ralu_wan22_5b_t2v": (128, 128, 9)}


@pytest.fixture(scope="module")
def comfy_nodes(ralu_nodes):
    """ComfyUI's node registry, with the RALU package loaded by ComfyUI's custom-node loader."""
    import nodes  # ComfyUI's (its utils package was imported first, by ralu_nodes)

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    assert asyncio.run(nodes.load_custom_node(str(ROOT / "comfyui_ralu")))
    return nodes


def tiny_clip():
    """One tiny CLIP through ComfyUI's classes for every workflow (FLUX's CLIP-L and T5 pair at
    width 32, pooled 32): the families' own encoders have sizes ComfyUI's classes fix (T5-XXL's,
    SD3's 4096-wide padding, Qwen2.5-VL's vision tower)."""
    import comfy.sd
    import comfy.text_encoders.flux

    target = _ClipTarget(comfy.text_encoders.flux.flux_clip(), comfy.text_encoders.flux.FluxTokenizer)
    options = {"clip_l_model_config": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                           num_attention_heads=2, projection_dim=32),
               "t5xxl_model_config": dict(d_model=32, d_ff=37, d_kv=16, num_layers=1, num_heads=2)}
    clip = comfy.sd.CLIP(target, model_options=options)
    fill(clip.cond_stage_model, 3, scale=0.02)
    return clip


def tiny_loader(nodes, class_type, prompt, load):
    """``class_type`` with its file lists replaced by the files the workflow names, loading
    ``load(**inputs)`` instead of reading them."""
    base = nodes.NODE_CLASS_MAPPINGS[class_type]
    named = {}
    for node in prompt.values():
        if node["class_type"] == class_type:
            for k, v in node["inputs"].items():
                named.setdefault(k, []).append(v)

    class Tiny:
        RETURN_TYPES = tuple(base.RETURN_TYPES)
        FUNCTION = "tiny_load"
        CATEGORY = "loaders"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {k: (sorted(set(v)),) for k, v in named.items()}}

        def tiny_load(self, **inputs):
            return load(**inputs)

    return Tiny


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_runs_headless_and_writes_its_output(ralu_nodes, comfy_nodes, case_of, vaes, request,
                                                              tmp_path, name):
    """Evidence 4: each example workflow (API format) run by ComfyUI's executor with the RALU
    package loaded by ComfyUI's custom-node loader writes its image or video. The loaders of
    models, text encoders and VAEs are replaced by ones returning the tiny models above
    (through ComfyUI's classes), every text encoder by one tiny CLIP (tiny_clip), and the sizes
    are shrunk for the CPU; LoadImage reads an image written to ComfyUI's input folder."""
    import json

    import comfy.supported_models
    import execution
    import folder_paths
    from PIL import Image

    nodes = comfy_nodes
    prompt = json.loads((ROOT / "comfyui_ralu" / "example_workflows" / f"{name}_api.json").read_text())
    video = any(n["class_type"] == "SaveAnimatedWEBP" for n in prompt.values())
    width, height, frames = SMALL.get(name, SMALL["video" if video else "image"])
    flux, chroma, sd3, qwen = (case_of(f) for f in ("flux", "chroma", "sd3", "qwen-image"))
    wan = case_of("wan")
    five = request.getfixturevalue("wan22") if name == "ralu_wan22_5b_t2v" else None
    i2v = [comfy_model(comfy.supported_models.WAN21_T2V, {**WAN, "in_dim": 36}, seed=s) for s in (8, 9)] \
        if name == "ralu_wan_i2v" else [None, None]
    models = {"flux1-dev.safetensors": flux.model, "Chroma1-HD.safetensors": chroma.model,
              "qwen_image_fp8_e4m3fn.safetensors": qwen.model, "wan2.1_t2v_14B_fp16.safetensors": wan.model,
              "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": wan.model,
              "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": wan.model_2,
              "wan2.2_ti2v_5B_fp16.safetensors": five and five.model,
              "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": i2v[0],
              "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors": i2v[1]}
    vae_files = {"ae.safetensors": flux.vae, "qwen_image_vae.safetensors": vaes["wan"][0],
                 "wan_2.1_vae.safetensors": vaes["wan"][0], "wan2.2_vae.safetensors": five and five.vae}
    clip = tiny_clip()
    replaced = {"UNETLoader": lambda unet_name, weight_dtype: (models[unet_name],),
                "CLIPLoader": lambda **kw: (clip,), "DualCLIPLoader": lambda **kw: (clip,),
                "TripleCLIPLoader": lambda **kw: (clip,), "VAELoader": lambda vae_name: (vae_files[vae_name],),
                "CheckpointLoaderSimple": lambda ckpt_name: (sd3.model, clip, flux.vae)}
    for node in prompt.values():
        inputs = node["inputs"]
        if "width" in inputs and "height" in inputs:
            inputs.update(width=width, height=height)
            if "length" in inputs:
                inputs["length"] = frames
    (tmp_path / "in").mkdir()
    Image.fromarray((torch.rand(height, width, 3, generator=torch.Generator().manual_seed(4)) * 255).byte().numpy()) \
        .save(tmp_path / "in" / "example.png")
    folder_paths.set_input_directory(str(tmp_path / "in"))
    folder_paths.set_output_directory(str(tmp_path / "out"))
    mappings = nodes.NODE_CLASS_MAPPINGS
    used = {n["class_type"] for n in prompt.values()} & set(replaced)
    saved = {k: mappings[k] for k in used}
    mappings.update({k: tiny_loader(nodes, k, prompt, replaced[k]) for k in used})
    try:
        valid = asyncio.run(execution.validate_prompt("ralu-check", prompt, None))
        assert valid[0], valid[1:]
        executor = execution.PromptExecutor(_Server(), cache_type=False)
        executor.execute(prompt, "ralu-check", {}, valid[2])
        errors = [m for m in executor.status_messages if m[0] == "execution_error"]
        assert executor.success, errors
    finally:
        mappings.update(saved)
    written = sorted((tmp_path / "out").rglob("*.webp" if video else "*.png"))
    assert len(written) == 1
    with Image.open(written[0]) as im:
        assert im.size == (width, height)
        count = getattr(im, "n_frames", 1)
    assert count == (frames if video else 1)
    print(f"workflow {name} wrote {written[0].name}, {count} frame(s) of {width}x{height}, "
          f"{written[0].stat().st_size} bytes")


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


# -- item 7: installing the nodes as a ComfyUI user does --------------------------------------------

def test_install_from_a_fresh_clone_into_a_fresh_comfyui(ralu_nodes, tmp_path):
    """The documented route, run as a user would: a fresh clone of this repository (its
    committed state), a fresh copy of ComfyUI, ``python comfyui_ralu/install.py <ComfyUI>``
    with ComfyUI's Python (here pip installs into a folder of its own, ``-- --target DIR
    --no-deps``, instead of this test's shared environment). Then a new ComfyUI process, with
    the installed library first on its path and no path to this checkout, loads the copied
    nodes by its own custom-node loader, and they come from the fresh installation."""
    import shutil
    import subprocess

    clone, comfy = tmp_path / "ralu", tmp_path / "ComfyUI"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    source = Path(COMFYUI or Path(importlib.util.find_spec("comfy").origin).parents[1]).resolve()
    top = {".git", "custom_nodes", "models", "output", "input", "user"}       # ComfyUI's code, no user files
    shutil.copytree(source, comfy, ignore=lambda d, names: [n for n in names if n == "__pycache__" or
                                                            (Path(d).resolve() == source and n in top)])
    (comfy / "custom_nodes").mkdir()
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, str(clone / "comfyui_ralu" / "install.py"), str(comfy), "--", "--target",
                           str(site), "--no-deps", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (comfy / "custom_nodes" / "comfyui_ralu" / "__init__.py").is_file()
    script = f"""
import asyncio, sys
sys.path[:0] = {[str(site), str(comfy)] + EXTRA!r}
import transformers.utils.import_utils as tiu
tiu.is_torchvision_available()
from comfy.cli_args import args
args.cpu = True
import utils.install_util, nodes, ralu_torch
asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
ralu = sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("RALU"))
print("nodes", ralu)
print("library", ralu_torch.__file__)
print("package", sys.modules[nodes.NODE_CLASS_MAPPINGS["RALUKSampler"].__module__].__file__)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.startswith(("nodes", "library",
                                                                                              "package")))
    print(f"install: {done.stdout.strip().splitlines()[-1]}; {lines}")
    assert lines["nodes"] == "['RALUKSampler', 'RALUSampler', 'RALUSchedule', 'RALUUpsampleLatent']"
    assert lines["library"].startswith(str(site)) and lines["package"].startswith(str(comfy / "custom_nodes"))


# -- evidence 5: a model the nodes do not run -------------------------------------------------------

@pytest.mark.parametrize("config, rule", [
    ("HunyuanVideo", "the MODEL is HunyuanVideo; the RALU nodes run FLUX.1, Chroma, SD3/SD3.5, Qwen-Image, "
                     "Wan 2.1/2.2 through ComfyUI's own models"),
    ("WAN21_Vace", "the MODEL is WAN21_Vace (Wan VACE, which adds reference and control frames); the RALU nodes run "
                   "FLUX.1, Chroma"),
])
def test_a_model_the_nodes_do_not_run_is_refused_in_one_line(ralu_nodes, case_of, config, rule):
    """ComfyUI's own model classes (built without weights: the refusal comes before any call)."""
    import comfy.supported_models

    cls = getattr(comfy.supported_models, config)
    base = cls({**cls.unet_config, "disable_unet_model_creation": True}).get_model({})
    model, flux = patcher(base), case_of("flux")
    pos, neg = conds(flux)
    node = ralu_nodes.NODE_CLASS_MAPPINGS
    for name, call in [("RALU Schedule", lambda: node["RALUSchedule"]().build(model, "flux-dev-7x", "default")),
                       ("RALU KSampler", lambda: ksampler(ralu_nodes, dataclasses.replace(flux, model=model),
                                                          "flux-dev-7x", pos, neg))]:
        with pytest.raises(ValueError) as err:
            call()
        print(f"refused: {err.value}")
        assert str(err.value).startswith(f"{name}: {rule}") and "\n" not in str(err.value)
