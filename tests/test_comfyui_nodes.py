"""The RALU ComfyUI nodes without ComfyUI: their declared inputs and outputs, and their logic
against the stand-in in tests/comfy_standin/ (ComfyUI's node, sampler, wrapper and model
contracts, with ralu's tiny diffusers FLUX.1, Chroma, SD3, Qwen-Image and Wan behind ComfyUI's
calling conventions). tests/test_comfyui_real.py runs the same nodes in a real ComfyUI."""

import inspect
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import comfyui_cases as cases

ROOT = Path(__file__).parents[1]
STANDIN = Path(__file__).parent / "comfy_standin"
SEED = 3
FAMILIES = tuple(cases.PRESETS)


@pytest.fixture(scope="module")
def ralu_nodes():
    """The node package imported over the stand-in; sys.path and sys.modules restored after
    (tests/test_comfyui_real.py imports the real ComfyUI under the same names)."""
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    clash = [m for m in sys.modules if m == "comfy" or m.startswith(("comfy.", "comfyui_ralu", "latent_preview"))]
    stash = {m: sys.modules.pop(m) for m in clash}
    sys.path[:0] = [str(STANDIN), str(ROOT)]
    import comfyui_ralu

    yield comfyui_ralu
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:           # the stand-in's and the package's modules only
        if name.split(".")[0] in ("comfy", "comfyui_ralu", "latent_preview"):
            del sys.modules[name]
    sys.modules.update(stash)


class VAE:
    """ComfyUI's VAE contract: ``decode`` takes VAE-space latents and gives pixels in [0, 1],
    channels last (a clip ``(B, frames, H, W, 3)``); ``latent_channels``;
    ``spacial_compression_decode()``."""

    def __init__(self, vae, channels=16):
        self.vae, self.latent_channels = vae, channels
        self.decoded = []

    def spacial_compression_decode(self):
        return 8

    def decode(self, z):
        self.decoded.append(tuple(z.shape))
        return ((self.vae.decode(z, return_dict=False)[0] + 1) / 2).clamp(0, 1).movedim(1, -1)


@dataclass
class Case:
    """A family's tiny diffusers pipeline and how the stand-in wraps it as ComfyUI's MODEL."""

    family: str
    pipe: object
    latent: tuple                 # the checks' ComfyUI latent

    def model(self, **kwargs):
        """A fresh MODEL (a ModelPatcher) of this family around the pipeline's transformer."""
        import comfy.model_base as mb
        from comfy.model_patcher import ModelPatcher

        cfg, tr = self.pipe.vae.config, self.pipe.transformer
        if self.family in ("flux", "chroma", "sd3"):
            scale = (1.5305, 0.0609) if self.family == "sd3" else (cfg.scaling_factor, cfg.shift_factor)
            fmt = mb.LatentFormat(16, *scale)
        else:
            fmt = mb.LatentFormat(16, mean=cfg.latents_mean, std=cfg.latents_std, dimensions=3)
        if self.family == "flux":
            from comfy.ldm.flux.model import Flux

            base = getattr(mb, kwargs.pop("kind", "Flux"))(Flux(tr), fmt, mb.FlowSampling(kwargs.pop("mu", 1.15)),
                                                             {"in_channels": kwargs.pop("in_channels", 16),
                                                              "out_channels": 16})
        elif self.family == "chroma":
            from comfy.ldm.chroma.model import Chroma

            base = mb.Chroma(Chroma(tr), fmt, mb.FlowSampling(1.15))
        elif self.family == "sd3":
            from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper

            base = mb.SD3(OpenAISignatureMMDITWrapper(tr), fmt, mb.FlowSampling(3.0, 1000.0, exponential=False))
        elif self.family == "qwen-image":
            from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

            base = mb.QwenImage(QwenImageTransformer2DModel(tr), fmt, mb.FlowSampling(1.15))
        else:
            from comfy.ldm.wan.model import WanModel

            expert = kwargs.pop("expert", tr)
            base = getattr(mb, kwargs.pop("kind", "WAN21"))(WanModel(expert), fmt,
                                                             mb.FlowSampling(3.0, 1000.0, exponential=False),
                                                             image_to_video=kwargs.pop("image_to_video", False))
        assert not kwargs, kwargs
        return ModelPatcher(base)

    def vae(self, channels=16):
        return VAE(self.pipe.vae, channels)


def _pipe(family):
    from ralu_torch.testing import flux_pipeline, sd3_pipeline, tiny_pipeline, wan_pipeline

    if family == "flux":
        return flux_pipeline(tiny=True)
    if family == "sd3":
        return sd3_pipeline()
    if family in ("wan", "wan2.2"):
        return wan_pipeline(experts=2 if family == "wan2.2" else 1)
    return tiny_pipeline(family)


LATENTS = {"flux": (2, 16, 16, 12), "chroma": (2, 16, 16, 12), "sd3": (2, 16, 16, 12),
           "qwen-image": (2, 16, 1, 16, 16), "wan": (2, 16, 2, 8, 8)}


@pytest.fixture(scope="module")
def case_of(ralu_nodes):
    made = {}

    def get(family, pipe=None):
        """``family``'s case; ``"wan2.2"``: Wan with two experts (the pipeline of Wan 2.2 A14B)."""
        if family not in made:
            name = "wan" if family == "wan2.2" else family
            made[family] = Case(name, _pipe(family), LATENTS[name])
        return made[family]

    return get


def ksampler(ralu_nodes, model, vae, preset, *, latent, positive, negative=None, cfg=1.0, solver="euler",
             parameters="default", seed=SEED, **extra):
    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]()
    optional = {k: extra.pop(k) for k in ("model_2", "boundary") if k in extra}
    return node.sample(model, seed, preset, parameters, cfg, solver, positive, negative or positive,
                       {"samples": torch.zeros(latent), **extra}, vae, **optional)[0]["samples"]


def flux_cond(case, batch=1, seed=1, **extra):
    return cases.conditioning("flux", cases.embeddings(case.pipe, "flux", batch, seed), **extra)


# -- declared inputs and outputs ---------------------------------------------------------------

def test_package_exports_the_four_nodes_with_display_names(ralu_nodes):
    assert set(ralu_nodes.NODE_CLASS_MAPPINGS) == {"RALUSchedule", "RALUSampler", "RALUKSampler", "RALUUpsampleLatent"}
    assert ralu_nodes.NODE_DISPLAY_NAME_MAPPINGS == {"RALUSchedule": "RALU Schedule", "RALUSampler": "RALU Sampler",
                                                     "RALUKSampler": "RALU KSampler",
                                                     "RALUUpsampleLatent": "RALU Upsample Latent"}


TYPES = {"MODEL", "VAE", "LATENT", "CONDITIONING", "SAMPLER", "SIGMAS", "INT", "FLOAT", "STRING", "RALU_SCHEDULE"}


def test_declared_inputs_and_outputs_follow_the_node_contract(ralu_nodes):
    """Every input a known type or a combo whose default is listed, numbers with a default in
    range; the FUNCTION takes exactly the declared inputs, the optional ones with defaults;
    RETURN_NAMES match RETURN_TYPES."""
    for name, cls in ralu_nodes.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        inputs = {**spec["required"], **spec.get("optional", {})}
        for key, (kind, *opts) in inputs.items():
            opts = opts[0] if opts else {}
            if isinstance(kind, list):
                assert opts.get("default", kind[0]) in kind, (name, key)
            else:
                assert kind in TYPES, (name, key, kind)
            if kind in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"], (name, key)
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        assert list(params)[1:] == list(inputs), name
        required = [k for k, p in params.items() if k != "self" and p.default is inspect.Parameter.empty]
        assert required == list(spec["required"]), name
        assert all(t in TYPES for t in cls.RETURN_TYPES), name
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES), name
        assert cls.CATEGORY == "sampling/ralu" and cls.DESCRIPTION
    schedule = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]
    assert schedule.RETURN_TYPES[:2] == ("RALU_SCHEDULE", "SIGMAS") and schedule.RETURN_TYPES[-1] == "STRING"
    assert ralu_nodes.NODE_CLASS_MAPPINGS["RALUSampler"].RETURN_TYPES == ("SAMPLER",)
    assert ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"].RETURN_TYPES == ("LATENT",)
    assert list(ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"].INPUT_TYPES()["optional"]) == ["model_2", "boundary"]


def test_preset_menu_lists_the_families_the_nodes_run_then_custom_then_the_others(ralu_nodes):
    from ralu_schedule import PRESETS
    from ralu_schedule.models import family_of

    from comfyui_ralu.schedule import with_references

    menu = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"].INPUT_TYPES()["required"]["preset"][0]
    custom = menu.index("custom")
    assert set(menu) == set(PRESETS) | {"custom"}
    runs = [family_of(PRESETS[n].model) for n in menu[:custom]]
    assert runs == sorted(runs, key=list(FAMILIES).index) and set(runs) == set(FAMILIES)
    others = [n for n in menu[custom + 1:] if not with_references(PRESETS[n].model)]
    assert not {family_of(PRESETS[n].model) for n in others} & set(FAMILIES)
    # the image-to-video presets run (WanImageToVideo's condition follows the stages), the reference models' do not
    assert "wan22-i2v-a14b-7x" in menu[:custom] and {"flux-kontext-dev-7x", "qwen-image-edit-7x"} <= set(menu[custom:])


# -- RALU Schedule ----------------------------------------------------------------------------

def test_schedule_node_gives_the_preset_and_its_sigmas(ralu_nodes, case_of):
    from ralu_schedule import preset

    out = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(case_of("flux").model(), "flux-dev-7x", "default")
    spec, flat, stages, summary = out[0], out[1], out[2:-1], out[-1]
    want = preset("flux-dev-7x")
    assert spec.schedule == want
    for k, st in enumerate(want.plan.stages):
        assert torch.equal(stages[k], torch.tensor(st.sigmas, dtype=torch.float32))
    assert stages[3].numel() == 0                                     # 3 stages: the 4th output is empty
    assert torch.equal(flat, torch.cat(stages[:3])) and len(flat) == 2 + 3 + 5 + 3
    assert "steps [2, 3, 5]" in summary


@pytest.mark.parametrize("family, shift", [("flux", math.exp(1.15)), ("sd3", 3.0), ("wan", 3.0),
                                           ("qwen-image", math.exp(1.15))])
def test_solved_schedules_take_h0_from_the_models_sampling(ralu_nodes, case_of, family, shift):
    from ralu_schedule import Layout, solve

    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]()
    model = case_of(family).model()
    custom = node.build(model, "custom", "default", steps="3, 4", ends="0.3, 1.0", fractions="", factors="")[0]
    assert custom.schedule.layout.base_shift == pytest.approx(shift, rel=1e-9)
    want = solve(Layout(steps=(3, 4), ends=(0.3, 1.0), base_shift=shift))
    assert custom.schedule.shifts == pytest.approx(want.shifts, rel=1e-6)
    optimised = node.build(model, cases.PRESETS[family][1], "optimised")[0].schedule
    assert optimised.layout.base_shift == pytest.approx(shift, rel=1e-9)


@pytest.mark.parametrize("preset, fields, rule", [
    ("sd3-medium-7x", {}, "preset 'sd3-medium-7x' was made for sd3-medium, but the MODEL is FLUX.1"),
    ("qwen-image-4x", {}, "a preset must be of the model's family"),
    ("z-image-4x", {}, "use one of flux-dev-10x, flux-dev-4x, flux-dev-7x, flux-schnell-16x (or 'custom')"),
    ("flux-kontext-dev-7x", {}, "preset 'flux-kontext-dev-7x' was made for flux-kontext-dev, whose reference images "
                                "the RALU nodes do not run"),
    ("nope", {}, "unknown preset 'nope'"),
    ("custom", {"steps": "2, x", "ends": "0.3, 1.0"}, "steps must be comma-separated integers"),
    ("custom", {"steps": "2, 3", "ends": "0.3, 0.2"}, "the custom layout is invalid: ends must increase"),
])
def test_schedule_node_refuses_bad_presets_and_layouts_by_rule(ralu_nodes, case_of, preset, fields, rule):
    with pytest.raises(ValueError) as err:
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(case_of("flux").model(), preset, "default", **fields)
    assert str(err.value).startswith("RALU Schedule: ") and rule in str(err.value)


@pytest.mark.parametrize("family, kind, extra, rule", [
    ("flux", "HunyuanVideo", {}, "the MODEL is HunyuanVideo; the RALU nodes run FLUX.1, Chroma, SD3/SD3.5, "
                                 "Qwen-Image, Wan 2.1/2.2 through ComfyUI's own models"),
    ("flux", "ChromaRadiance", {}, "the MODEL is ChromaRadiance (Chroma Radiance, which denoises pixels"),
    ("wan", "WAN21_Vace", {}, "the MODEL is WAN21_Vace (Wan VACE, which adds reference and control frames)"),
    ("flux", "Flux", {"in_channels": 96}, "the MODEL takes 96 input channels"),
])
def test_nodes_refuse_a_model_they_do_not_run_in_one_line(ralu_nodes, case_of, family, kind, extra, rule):
    """A MODEL of another family (or a variant of a supported one) is refused in one line
    naming its class and the families the nodes run, by every node that takes a MODEL."""
    case = case_of(family)
    model = case.model(kind=kind, **extra)
    for name, call in [("RALU Schedule", lambda: ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(
                            model, cases.PRESETS[family][0], "default")),
                       ("RALU KSampler", lambda: ksampler(ralu_nodes, model, case.vae(), cases.PRESETS[family][0],
                                                          latent=case.latent, positive=cases.conditioning(
                                                              family, cases.embeddings(case.pipe, family, 2))))]:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value).startswith(f"{name}: {rule}") and "\n" not in str(err.value)


# -- one stage: the stand-in's own samplers ---------------------------------------------------

@pytest.mark.parametrize("family, solver", [(f, "euler") for f in FAMILIES] + [("wan", "uni_pc")])
def test_one_stage_ralu_sampler_equals_the_samplers_own_run(ralu_nodes, case_of, family, solver):
    """A one-stage schedule through the RALU Sampler is the stand-in's sampler of that name on
    the same sigmas (batch 2, cfg 2): the stage runs as a stock call of the model."""
    import comfy.sample
    import comfy.samplers

    case = case_of(family)
    model, nodes = case.model(), ralu_nodes.NODE_CLASS_MAPPINGS
    spec, sigmas = nodes["RALUSchedule"]().build(model, "custom", "default", steps="4", ends="1.0")[:2]
    ralu = nodes["RALUSampler"]().get_sampler(spec, case.vae(), solver, "edges", "latent", "exact")[0]
    pos = cases.conditioning(family, cases.embeddings(case.pipe, family, 2))
    neg = cases.conditioning(family, cases.embeddings(case.pipe, family, 2, seed=5))
    noise = torch.randn(case.latent, generator=torch.Generator().manual_seed(0))
    run = lambda sampler: comfy.sample.sample_custom(model, noise, 2.0, sampler, sigmas, pos, neg,  # noqa: E731
                                                     torch.zeros(case.latent), seed=SEED)
    ours, stock = run(ralu), run(comfy.samplers.sampler_object(solver))
    assert torch.isfinite(ours).all() and ours.abs().max() > 0.1
    assert (ours - stock).abs().max() <= 1e-5


# -- the whole method against ralu_torch.RALU -------------------------------------------------

@pytest.mark.parametrize("family, which", [(f, w) for f in FAMILIES for w in (0, 1)])
def test_ralu_ksampler_equals_ralu_on_the_same_weights(ralu_nodes, case_of, family, which):
    """The node's run is ralu_torch.RALU's on the same weights and noise, for the family's 7x
    and 4x preset with CFG at batch 2 (each image its own mixed token set): the first noise is
    the node's (KSampler's noise, pooled), re-injection from seed + 1. The model's input shows
    each stage's token count: the low-resolution stage, a mixed one strictly between, full."""
    import comfy.sample

    case = case_of(family)
    preset, cfg = cases.PRESETS[family][which], 2.0
    model = case.model()
    pos, neg = cases.embeddings(case.pipe, family, 2), cases.embeddings(case.pipe, family, 2, seed=9)
    out = ksampler(ralu_nodes, model, case.vae(), preset, latent=case.latent, cfg=cfg,
                   positive=cases.conditioning(family, pos), negative=cases.conditioning(family, neg))
    ours = model.model.process_latent_in(out)
    noise = comfy.sample.prepare_noise(torch.zeros(case.latent), SEED)
    ref, stage_tokens = cases.reference(case.pipe, family, preset, noise, pos, neg, cfg, SEED + 1)
    assert stage_tokens[0] < stage_tokens[1] < stage_tokens[-1]
    assert (ours - ref).abs().max() <= 1e-4
    seen = sorted({n for n, _ in model.model.diffusion_model.calls})
    assert seen[0] == stage_tokens[0] and seen[-1] == stage_tokens[-1] and seen[0] < seen[1] < seen[-1]


def test_wan22_two_experts_equal_ralu_with_both(ralu_nodes, case_of):
    """Wan 2.2 A14B as ComfyUI users load it: the high-noise expert as model, the low-noise one
    as model_2. Each call goes to the expert of its sigma (WanPipeline's boundary), per call:
    the node's run is ralu_torch.RALU's on the two-expert pipeline, and both models were called."""
    import comfy.sample

    case = case_of("wan2.2")
    pipe = case.pipe
    high, low = case.model(), case.model(expert=pipe.transformer_2)
    pos, neg = cases.embeddings(pipe, "wan", 2), cases.embeddings(pipe, "wan", 2, seed=9)
    out = ksampler(ralu_nodes, high, case.vae(), "wan-480p-7x", latent=case.latent, cfg=2.0,
                   positive=cases.conditioning("wan", pos), negative=cases.conditioning("wan", neg), model_2=low,
                   boundary=pipe.config.boundary_ratio)
    noise = comfy.sample.prepare_noise(torch.zeros(case.latent), SEED)
    ref, _ = cases.reference(pipe, "wan", "wan-480p-7x", noise, pos, neg, 2.0, SEED + 1)
    assert (high.model.process_latent_in(out) - ref).abs().max() <= 1e-4
    assert high.model.diffusion_model.calls and low.model.diffusion_model.calls


def test_two_experts_are_wan_only_and_the_boundary_a_sigma(ralu_nodes, case_of):
    case, wan = case_of("flux"), case_of("wan")
    with pytest.raises(ValueError, match="^RALU KSampler: model_2 is Wan 2.2 A14B's low-noise expert; FLUX.1 has one"):
        ksampler(ralu_nodes, case.model(), case.vae(), "flux-dev-7x", latent=(1, 16, 16, 16),
                 positive=flux_cond(case), model_2=case.model())
    with pytest.raises(ValueError, match="^RALU KSampler: boundary must be a sigma strictly between 0 and 1"):
        ksampler(ralu_nodes, wan.model(), wan.vae(), "wan-480p-7x", latent=wan.latent,
                 positive=cases.conditioning("wan", cases.embeddings(wan.pipe, "wan", 2)), model_2=wan.model(),
                 boundary=1.0)


# -- Wan image-to-video: the concatenated condition follows the token layout --------------------

def i2v_transformer(case):
    """A tiny Wan image-to-video transformer (36 input channels: latent, 4-channel mask, start image; no CLIP)."""
    import diffusers

    torch.manual_seed(4)
    return diffusers.WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                           in_channels=36, out_channels=16, text_dim=cases.text_width(case.pipe),
                                           freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                           qk_norm="rms_norm_across_heads", rope_max_seq_len=64)


def test_wan_image_condition_follows_each_stages_token_layout(ralu_nodes, case_of, monkeypatch):
    """A Wan I2V model (36 input channels: latent, 4-channel mask, start image) under the
    stand-in's ComfyUI conditioning (``concat_mask``, ``concat_latent_image``): at every call the
    model receives the full-resolution condition read on that stage's tokens
    (``ralu_torch.tokens.latent_tokens``): average-pooled on the uniform stages, per token on the
    strip; a one-stage run is the stand-in's own run."""
    import comfy.sample
    import comfy.samplers
    import torch.nn.functional as F

    from comfyui_ralu.families import wan
    from ralu_torch.tokens import latent_tokens, pack

    case = case_of("wan")
    tr = i2v_transformer(case)
    model = case.model(expert=tr, image_to_video=True)
    B, C, T, H, W = case.latent
    g = torch.Generator().manual_seed(2)
    image, mask = torch.randn(B, C, T, H, W, generator=g), (torch.rand(B, 4, T, H, W, generator=g) > 0.5).float()
    cond = cases.conditioning("wan", cases.embeddings(case.pipe, "wan", B), concat_latent_image=image,
                              concat_mask=mask)
    stages = []
    follow = wan.FAMILY.follow
    monkeypatch.setattr(wan.FAMILY, "follow", lambda c, tokens, *a: stages.append(tokens) or follow(c, tokens, *a))
    ksampler(ralu_nodes, model, case.vae(), "wan-480p-4x", latent=case.latent, positive=cond)
    full = torch.cat([mask, model.model.process_latent_in(image)], dim=1).reshape(B, 20, T * H, W)
    net = model.model.diffusion_model
    assert len(stages) == len(net.calls) == len(net.inputs) and {n for n, _ in net.calls} == {8, 14, 32}
    for tokens, given in zip(stages, net.inputs):
        values = pack(given[:, 16:].reshape(B, 20, -1, given.shape[-1]))
        assert torch.allclose(values, latent_tokens(full, tokens), atol=1e-6)
        if tokens.uniform:
            D = tokens.coarsest
            pooled = full if D == 1 else F.avg_pool2d(full, D)
            assert torch.allclose(given[:, 16:].reshape(B, 20, -1, given.shape[-1]), pooled, atol=1e-6)
    spec, sigmas = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(model, "custom", "default", steps="3",
                                                                          ends="1.0")[:2]
    ralu = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSampler"]().get_sampler(spec, case.vae(), "euler", "edges", "latent",
                                                                       "exact")[0]
    noise = torch.randn(case.latent, generator=g)
    run = lambda s: comfy.sample.sample_custom(model, noise, 1.0, s, sigmas, cond, cond,  # noqa: E731
                                               torch.zeros(case.latent))
    assert (run(ralu) - run(comfy.samplers.sampler_object("euler"))).abs().max() <= 1e-5


def test_wan_i2v_ralu_ksampler_equals_ralu_on_the_image_to_video_pipeline(ralu_nodes, case_of):
    """Wan image-to-video with a start image, the whole method: the stand-in's conditioning holds
    the condition WanImageToVideoPipeline makes of the image (its own ``prepare_latents``: the
    4-channel frame mask and the VAE latents of the clip the image starts, in VAE space as
    ComfyUI's WanImageToVideo gives them); the RALU KSampler (wan-480p-4x, CFG 2, batch 2) equals
    ralu_torch.RALU on that pipeline with the same weights and image, and the model's input shows
    the low-resolution, mixed and full token counts."""
    import comfy.sample
    import diffusers

    from ralu_torch.testing import tiny_image

    case = case_of("wan")
    tr = i2v_transformer(case)
    pipe = diffusers.WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=case.pipe.vae,
                                             scheduler=case.pipe.scheduler, transformer=tr)
    pipe.set_progress_bar_config(disable=True)
    model = case.model(expert=tr, image_to_video=True)
    B, C, T, H, W = case.latent
    height, width = H * pipe.vae_scale_factor_spatial, W * pipe.vae_scale_factor_spatial
    image = tiny_image(height, width, seed=3)
    pixels = pipe.video_processor.preprocess(image, height=height, width=width)
    condition = pipe.prepare_latents(pixels, 1, C, height, width, (T - 1) * pipe.vae_scale_factor_temporal + 1,
                                     torch.float32, torch.device("cpu"), None, torch.zeros(0))[1]
    given = dict(concat_mask=condition[:, :4], concat_latent_image=model.model.process_latent_out(condition[:, 4:]))
    pos, neg = cases.embeddings(case.pipe, "wan", B), cases.embeddings(case.pipe, "wan", B, seed=9)
    out = ksampler(ralu_nodes, model, case.vae(), "wan-480p-4x", latent=case.latent, cfg=2.0,
                   positive=cases.conditioning("wan", pos, **given), negative=cases.conditioning("wan", neg, **given))
    noise = comfy.sample.prepare_noise(torch.zeros(case.latent), SEED)
    ref, stage_tokens = cases.reference(pipe, "wan", "wan-480p-4x", noise, pos, neg, 2.0, SEED + 1, image=image)
    assert (model.model.process_latent_in(out) - ref).abs().max() <= 1e-4
    seen = sorted({n for n, _ in model.model.diffusion_model.calls})
    assert seen[0] == stage_tokens[0] and seen[-1] == stage_tokens[-1] and seen[0] < seen[1] < seen[-1]


# -- previews, seeds, refusals ------------------------------------------------------------------

def test_preview_callback_sees_every_call_on_the_full_grid(ralu_nodes, case_of):
    import latent_preview

    case = case_of("wan")
    latent_preview.CALLS.clear()
    ksampler(ralu_nodes, case.model(), case.vae(), "wan-480p-7x", latent=case.latent,
             positive=cases.conditioning("wan", cases.embeddings(case.pipe, "wan", 2)))
    assert [c[0] for c in latent_preview.CALLS] == list(range(13))
    assert {c[1:] for c in latent_preview.CALLS} == {(case.latent, case.latent, 13, 13)}


def test_same_seed_same_bits_and_another_seed_differs(ralu_nodes, case_of):
    case = case_of("flux")

    def run(seed):
        return ksampler(ralu_nodes, case.model(), case.vae(), "flux-dev-7x", latent=(1, 16, 16, 12),
                        positive=flux_cond(case), seed=seed)

    assert torch.equal(run(SEED), run(SEED))
    assert not torch.allclose(run(SEED), run(SEED + 1))


@pytest.mark.parametrize("family, latent, rule", [
    ("flux", (1, 16, 16, 13), "the latent is off the schedule's grid: height and width must be positive multiples "
                              "of 32 pixels"),
    ("flux", (1, 16, 18, 16), "multiples of 32 pixels"),
    ("flux", (1, 16, 1, 16, 16), "the latent must be a FLUX.1 latent (batch, channels, height, width) with 16"),
    ("wan", (2, 16, 2, 8, 10), "multiples of 32 pixels"),
    ("wan", (2, 16, 3, 10, 8), "multiples of 32 pixels"),
])
def test_latent_off_the_grid_is_refused_by_rule(ralu_nodes, case_of, family, latent, rule):
    case = case_of(family)
    with pytest.raises(ValueError) as err:
        ksampler(ralu_nodes, case.model(), case.vae(), cases.PRESETS[family][0], latent=latent,
                 positive=cases.conditioning(family, cases.embeddings(case.pipe, family, latent[0])))
    assert str(err.value).startswith("RALU KSampler: ") and rule in str(err.value)


def test_inpainting_spatial_conditioning_and_foreign_vaes_are_refused(ralu_nodes, case_of):
    case = case_of("flux")
    model, vae = case.model(), case.vae()
    with pytest.raises(ValueError, match="^RALU KSampler: RALU samples whole images from noise; a noise mask"):
        ksampler(ralu_nodes, model, vae, "flux-dev-7x", latent=(1, 16, 16, 16), positive=flux_cond(case),
                 noise_mask=torch.ones(1, 1, 16, 16))
    for extra, what in [({"control": object()}, "a ControlNet"), ({"area": (8, 8, 0, 0)}, "area conditioning"),
                        ({"model_conds": {"ref_latents": object()}}, "reference latents")]:
        with pytest.raises(ValueError, match=f"^RALU KSampler: the positive conditioning carries {what}"):
            ksampler(ralu_nodes, model, vae, "flux-dev-7x", latent=(1, 16, 16, 16), positive=flux_cond(case, **extra),
                     negative=flux_cond(case))
    with pytest.raises(ValueError, match=r"^RALU KSampler: the VAE must be the FLUX.1 model's \(16 latent channels\)"):
        ksampler(ralu_nodes, model, case.vae(channels=4), "flux-dev-7x", latent=(1, 16, 16, 16),
                 positive=flux_cond(case))


def test_sampler_node_checks_the_sigmas_it_is_given(ralu_nodes, case_of):
    import comfy.sample

    case = case_of("flux")
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    model = case.model()
    spec, flat = nodes["RALUSchedule"]().build(model, "flux-dev-7x", "default")[:2]
    sampler = nodes["RALUSampler"]().get_sampler(spec, case.vae(), "euler", "edges", "latent", "exact")[0]
    c, latent = flux_cond(case), torch.zeros(1, 16, 16, 16)
    with pytest.raises(ValueError, match="^RALU Sampler: the sigmas given to the sampler must be the RALU Schedule's"):
        comfy.sample.sample_custom(model, torch.randn(1, 16, 16, 16), 1.0, sampler, torch.linspace(1, 0, 11), c, c,
                                   latent)
    out = comfy.sample.sample_custom(model, torch.randn(1, 16, 16, 16), 1.0, sampler, flat, c, c, latent)
    assert out.shape == latent.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name, why", [("euler_ancestral", "adds fresh noise at every step"),
                                       ("dpmpp_2m_sde", "adds fresh noise"),
                                       ("lms", "not among the deterministic samplers checked")])
def test_solvers_that_cannot_run_a_stage_are_refused_by_name(ralu_nodes, case_of, name, why):
    spec = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(case_of("flux").model(), "flux-dev-7x", "default")[0]
    with pytest.raises(ValueError, match=f"^RALU Sampler: solver '{name}' cannot run a RALU stage") as err:
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUSampler"]().get_sampler(spec, case_of("flux").vae(), name, "edges",
                                                                    "latent", "exact")
    assert why in str(err.value) and "euler, heun, dpmpp_2m_flow, uni_pc_flow, uni_pc, uni_pc_bh2, dpmpp_2m" in \
        str(err.value)


def test_comfyuis_multistep_samplers_are_refused_on_a_one_step_stage(ralu_nodes, case_of):
    """ComfyUI's UniPC takes no step when given two sigmas (its order is their count less 2)."""
    spec = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(case_of("flux").model(), "flux-dev-10x",
                                                                  "default")[0]
    with pytest.raises(ValueError, match=r"^RALU Sampler: ComfyUI's uni_pc takes no step on a one-step stage"):
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUSampler"]().get_sampler(spec, case_of("flux").vae(), "uni_pc", "edges",
                                                                    "latent", "exact")


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m_flow"])
def test_other_solvers_equal_ralu_with_the_same_diffusers_scheduler(ralu_nodes, case_of, solver):
    import comfy.sample
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler

    case = case_of("flux")
    pos = cases.embeddings(case.pipe, "flux", 1)
    model = case.model()
    out = ksampler(ralu_nodes, model, case.vae(), "flux-dev-7x", latent=(1, 16, 16, 12),
                   positive=cases.conditioning("flux", pos), solver=solver)
    sched = FlowMatchHeunDiscreteScheduler() if solver == "heun" else \
        DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    noise = comfy.sample.prepare_noise(torch.zeros(1, 16, 16, 12), SEED)
    ref, _ = cases.reference(case.pipe, "flux", "flux-dev-7x", noise, pos, pos, 1.0, SEED + 1, solver=sched)
    assert (model.model.process_latent_in(out) - ref).abs().max() <= 1e-5


# -- the pyramid by hand -----------------------------------------------------------------------

@pytest.mark.parametrize("family", ["flux", "wan"])
def test_pyramid_wired_by_hand_equals_the_ralu_sampler(ralu_nodes, case_of, family):
    """Stage 1 by a stock Euler SAMPLER on the RALU Schedule's stage_1 sigmas, RALU Upsample
    Latent, stage 2 by the stock sampler on stage_2 sigmas with zero noise: the RALU Sampler's
    run on the same pyramid schedule, first noise and transition seed (ComfyUI's convention
    for partly denoised flow latents, x / (1 - sigma), is what the upsample node undoes)."""
    import comfy.sample
    import comfy.samplers

    case = case_of(family)
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    model, vae = case.model(), case.vae()
    out = nodes["RALUSchedule"]().build(model, "custom", "default", steps="3, 4", ends="0.35, 1.0")
    spec, flat, stage1, stage2 = out[:4]
    c = cases.conditioning(family, cases.embeddings(case.pipe, family, 1))
    latent = (1,) + case.latent[1:]
    noise = torch.randn(latent, generator=torch.Generator().manual_seed(0))
    sampler = nodes["RALUSampler"]().get_sampler(spec, vae, "euler", "edges", "latent", "exact")[0]
    whole = comfy.sample.sample_custom(model, noise, 1.0, sampler, flat, c, c, torch.zeros(latent), seed=SEED)
    euler = comfy.samplers.sampler_object("euler")
    small = cases.first_noise(noise, 2)
    low = comfy.sample.sample_custom(model, small, 1.0, euler, stage1, c, c, torch.zeros(small.shape))
    up = nodes["RALUUpsampleLatent"]().upsample(model, {"samples": low}, spec, 1, SEED + 1, "latent")[0]
    assert up["samples"].shape == latent
    by_hand = comfy.sample.sample_custom(model, torch.zeros(latent), 1.0, euler, stage2, c, c, up["samples"])
    assert (by_hand - whole).abs().max() <= 1e-5


def test_upsample_node_refuses_partial_transitions_and_bad_indices(ralu_nodes, case_of):
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    model = case_of("flux").model()
    spec = nodes["RALUSchedule"]().build(model, "flux-dev-7x", "default")[0]
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    with pytest.raises(ValueError, match="^RALU Upsample Latent: this transition upsamples a fraction 0.1"):
        nodes["RALUUpsampleLatent"]().upsample(model, latent, spec, 1, 0, "latent")
    with pytest.raises(ValueError, match="^RALU Upsample Latent: transition must be 1..2 for this 3-stage schedule"):
        nodes["RALUUpsampleLatent"]().upsample(model, latent, spec, 3, 0, "latent")


# -- the example workflows --------------------------------------------------------------------

WORKFLOWS = sorted(p.name[:-len("_api.json")] for p in (ROOT / "comfyui_ralu" / "example_workflows").glob("*_api.json"))


def test_every_family_has_an_example_workflow():
    assert {"ralu_flux", "ralu_chroma", "ralu_sd3", "ralu_qwen_image", "ralu_wan21_t2v", "ralu_wan22_t2v",
            "ralu_wan22_5b_t2v", "ralu_wan_i2v"} <= set(WORKFLOWS)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_is_the_api_workflow_as_a_graph(ralu_nodes, name):
    """Both example files describe one graph: the same nodes, widget values and wires."""
    folder = ROOT / "comfyui_ralu" / "example_workflows"
    api = json.loads((folder / f"{name}_api.json").read_text())
    ui = json.loads((folder / f"{name}.json").read_text())
    by_id = {str(n["id"]): n for n in ui["nodes"]}
    assert set(by_id) == set(api)
    links = {lid: (str(src), slot) for lid, src, slot, *_ in ui["links"]}
    for nid, node in api.items():
        graph = by_id[nid]
        assert graph["type"] == node["class_type"]
        wired = {i["name"]: list(links[i["link"]]) for i in graph["inputs"] if i.get("link") is not None}
        assert wired == {k: [v[0], v[1]] for k, v in node["inputs"].items() if isinstance(v, list)}, nid
        values = [v for k, v in node["inputs"].items() if not isinstance(v, list)]
        assert [v for v in graph["widgets_values"] if v not in ("fixed",)] == values, nid
    sampler = next(n for n in api.values() if n["class_type"] == "RALUKSampler")["inputs"]
    declared = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"].INPUT_TYPES()
    assert set(declared["required"]) <= set(sampler) <= set(declared["required"]) | set(declared["optional"])
    assert sampler["preset"] in declared["required"]["preset"][0]


# -- installing -------------------------------------------------------------------------------

def test_node_metadata_promises_nothing_that_cannot_resolve():
    """ralu is on no package index: the node package declares no dependency (install.py
    installs the library from the clone) and no registry entry."""
    import tomllib

    meta = tomllib.loads((ROOT / "comfyui_ralu" / "pyproject.toml").read_text())
    assert meta["project"]["dependencies"] == [] and "tool" not in meta


def test_installer_refuses_a_folder_that_is_not_comfyui_in_one_line(tmp_path):
    import subprocess

    run = subprocess.run([sys.executable, str(ROOT / "comfyui_ralu" / "install.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and not run.stdout
    assert run.stderr == f"install.py: {tmp_path} is not a ComfyUI folder (no main.py and comfy/ in it)\n"
    (tmp_path / "main.py").write_text("")
    (tmp_path / "comfy").mkdir()
    (tmp_path / "custom_nodes" / "comfyui_ralu").mkdir(parents=True)
    run = subprocess.run([sys.executable, str(ROOT / "comfyui_ralu" / "install.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "exists and is not a copy of the RALU nodes; remove it first" in run.stderr
