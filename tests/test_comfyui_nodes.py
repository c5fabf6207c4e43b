"""The RALU ComfyUI nodes without ComfyUI: their declared inputs and outputs, and their logic
against the stand-in in tests/comfy_standin/ (ComfyUI's node and sampler contracts, a tiny
diffusers FLUX behind ComfyUI's FLUX calling convention). tests/test_comfyui_real.py runs
the same nodes in a real ComfyUI."""

import inspect
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).parents[1]
STANDIN = Path(__file__).parent / "comfy_standin"
SEED = 3


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


@pytest.fixture(scope="module")
def pipe():
    from ralu_torch.testing import flux_pipeline

    p = flux_pipeline(tiny=True)
    p.set_progress_bar_config(disable=True)
    return p


class Patcher:
    """What a MODEL wire carries, as far as the nodes look: ``.model`` and ``model_options``."""

    def __init__(self, model):
        self.model = model
        self.model_options = {"transformer_options": {}}


class VAE:
    """ComfyUI's VAE contract: ``decode`` takes VAE-space latents, gives images in [0, 1],
    channels last; ``latent_channels``."""

    def __init__(self, vae, channels=16):
        self.vae, self.latent_channels = vae, channels
        self.decoded = []

    def decode(self, z):
        self.decoded.append(tuple(z.shape))
        return ((self.vae.decode(z, return_dict=False)[0] + 1) / 2).clamp(0, 1).movedim(1, -1)


def model_of(pipe, kind="Flux", **kwargs):
    import comfy.ldm.flux.model
    import comfy.model_base

    cfg = pipe.vae.config
    net = comfy.ldm.flux.model.Flux(pipe.transformer)
    return Patcher(getattr(comfy.model_base, kind)(net, scale=cfg.scaling_factor, shift=cfg.shift_factor, **kwargs))


def embeds(pipe, batch, seed=1):
    from ralu_torch.testing import prompt_embeds

    e = prompt_embeds(pipe, batch=batch, seed=seed)
    return e["prompt_embeds"], e["pooled_prompt_embeds"]


def cond(text, pooled, **extra):
    return [[text, {"pooled_output": pooled, "guidance": 3.5, **extra}]]


def ksampler(ralu_nodes, model, vae, preset="flux-dev-7x", *, latent=(2, 16, 16, 12), positive=None, negative=None,
             cfg=1.0, solver="euler", parameters="default", seed=SEED, **latent_extra):
    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]()
    return node.sample(model, seed, preset, parameters, cfg, solver, cond(*positive), cond(*(negative or positive)),
                       {"samples": torch.zeros(latent), **latent_extra}, vae)[0]["samples"]


# -- declared inputs and outputs ---------------------------------------------------------------

def test_package_exports_the_four_nodes_with_display_names(ralu_nodes):
    assert set(ralu_nodes.NODE_CLASS_MAPPINGS) == {"RALUSchedule", "RALUSampler", "RALUKSampler", "RALUUpsampleLatent"}
    assert ralu_nodes.NODE_DISPLAY_NAME_MAPPINGS == {"RALUSchedule": "RALU Schedule", "RALUSampler": "RALU Sampler",
                                                     "RALUKSampler": "RALU KSampler",
                                                     "RALUUpsampleLatent": "RALU Upsample Latent"}


TYPES = {"MODEL", "VAE", "LATENT", "CONDITIONING", "SAMPLER", "SIGMAS", "INT", "FLOAT", "STRING", "RALU_SCHEDULE"}


def test_declared_inputs_and_outputs_follow_the_node_contract(ralu_nodes):
    """Every input a known type or a combo whose default is listed, numbers with a default in
    range; the FUNCTION takes exactly the declared inputs; RETURN_NAMES match RETURN_TYPES."""
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


def test_preset_menu_lists_flux_first_then_custom_then_the_refused_families(ralu_nodes):
    from ralu_schedule import PRESETS

    menu = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"].INPUT_TYPES()["required"]["preset"][0]
    custom = menu.index("custom")
    assert set(menu) == set(PRESETS) | {"custom"}
    assert all(n.startswith("flux-") for n in menu[:custom]) and not any(n.startswith("flux-") for n in menu[custom:])


# -- RALU Schedule ----------------------------------------------------------------------------

def test_schedule_node_gives_the_preset_and_its_sigmas(ralu_nodes, pipe):
    from ralu_schedule import preset

    out = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(model_of(pipe), "flux-dev-7x", "default")
    spec, flat, stages, summary = out[0], out[1], out[2:-1], out[-1]
    want = preset("flux-dev-7x")
    assert spec.schedule == want
    for k, st in enumerate(want.plan.stages):
        assert torch.equal(stages[k], torch.tensor(st.sigmas, dtype=torch.float32))
    assert stages[3].numel() == 0                                     # 3 stages: the 4th output is empty
    assert torch.equal(flat, torch.cat(stages[:3])) and len(flat) == 2 + 3 + 5 + 3
    assert "steps [2, 3, 5]" in summary


@pytest.mark.parametrize("mu", [0.5, 1.15])
def test_solved_schedules_take_h0_from_the_models_sampling(ralu_nodes, pipe, mu):
    from ralu_schedule import Layout, solve

    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]()
    model = model_of(pipe, mu=mu)
    custom = node.build(model, "custom", "default", steps="3, 4", ends="0.3, 1.0", fractions="", factors="")[0]
    assert custom.schedule.layout.base_shift == pytest.approx(math.exp(mu), rel=1e-9)
    want = solve(Layout(steps=(3, 4), ends=(0.3, 1.0), base_shift=math.exp(mu)))
    assert custom.schedule.shifts == pytest.approx(want.shifts, rel=1e-6)
    optimised = node.build(model, "flux-dev-4x", "optimised")[0].schedule
    assert optimised.layout.base_shift == pytest.approx(math.exp(mu), rel=1e-9)
    assert optimised.layout.steps == (5, 6, 7)


@pytest.mark.parametrize("preset, fields, rule", [
    ("sd3-medium-7x", {}, "preset 'sd3-medium-7x' was made for sd3-medium, but the MODEL is FLUX.1"),
    ("qwen-image-4x", {}, "a preset must be of the model's family"),
    ("nope", {}, "unknown preset 'nope'"),
    ("custom", {"steps": "2, x", "ends": "0.3, 1.0"}, "steps must be comma-separated integers"),
    ("custom", {"steps": "2, 3", "ends": "0.3, 0.2"}, "the custom layout is invalid: ends must increase"),
])
def test_schedule_node_refuses_bad_presets_and_layouts_by_rule(ralu_nodes, pipe, preset, fields, rule):
    with pytest.raises(ValueError) as err:
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(model_of(pipe), preset, "default", **fields)
    assert str(err.value).startswith("RALU Schedule: ") and rule in str(err.value)


@pytest.mark.parametrize("kind, extra, rule", [
    ("SD3", {}, "the MODEL is SD3"),
    ("Chroma", {}, "the MODEL is Chroma"),
    ("Flux", {"in_channels": 96}, "the MODEL takes 96 input channels"),
])
def test_nodes_refuse_a_model_that_is_not_plain_flux(ralu_nodes, pipe, kind, extra, rule):
    model = model_of(pipe, kind, **extra)
    with pytest.raises(ValueError, match=f"^RALU Schedule: {rule}"):
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(model, "flux-dev-7x", "default")
    text, pooled = embeds(pipe, 1)
    with pytest.raises(ValueError, match=f"^RALU KSampler: {rule}"):
        ksampler(ralu_nodes, model, VAE(pipe.vae), positive=(text, pooled), latent=(1, 16, 16, 16))


# -- the sampler ------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, cfg", [("flux-dev-7x", 1.0), ("flux-dev-4x", 2.0)])
def test_ralu_ksampler_equals_ralu_on_the_same_flux(ralu_nodes, pipe, preset, cfg):
    """The node's run is ralu_torch.RALU's on the same weights and noise: the first noise is
    the node's (KSampler's noise, pooled), re-injection from seed + 1; batch 2 (each image its
    own mixed token set); cfg 2 with a negative (ComfyUI batches both as RALU's true CFG)."""
    import comfy.sample

    from ralu_torch import RALU
    from ralu_torch.tokens import unpack

    text, pooled = embeds(pipe, 2)
    neg = embeds(pipe, 2, seed=9)
    out = ksampler(ralu_nodes, model_of(pipe), VAE(pipe.vae), preset, latent=(2, 16, 16, 12),
                   positive=(text, pooled), negative=neg, cfg=cfg)
    ours = model_of(pipe).model.process_latent_in(out)
    first = F.avg_pool2d(comfy.sample.prepare_noise(torch.zeros(2, 16, 16, 12), SEED), 2) * 2
    extra = dict(negative_prompt_embeds=neg[0], negative_pooled_prompt_embeds=neg[1], true_cfg_scale=cfg) \
        if cfg > 1 else {}
    ref = RALU(pipe, preset)(prompt_embeds=text, pooled_prompt_embeds=pooled, **extra, height=128, width=96,
                             latents=first, generator=torch.Generator().manual_seed(SEED + 1), output_type="latent")
    assert ref.stage_tokens[0] < ref.stage_tokens[1] < ref.stage_tokens[2]
    assert (ours - unpack(ref.images, (8, 6))).abs().max() <= 1e-5


def test_mixed_stage_hands_flux_a_short_sequence_with_each_images_positions(ralu_nodes, pipe):
    from ralu_torch.tokens import TokenSet

    model = model_of(pipe)
    text, pooled = embeds(pipe, 2)
    ksampler(ralu_nodes, model, VAE(pipe.vae), "flux-dev-4x", positive=(text, pooled))
    calls = model.model.diffusion_model.calls
    lengths = [n for n, _ in calls]
    assert lengths == [12] * 5 + [24] * 6 + [48] * 7                   # 0.3 of 12 coarse tokens split into 4
    mixed = calls[5][1]
    assert mixed.shape == (2, 24, 3) and not torch.equal(mixed[0], mixed[1])
    first, last = calls[0][1], calls[-1][1]
    assert torch.equal(first[0, :, 1:], TokenSet.regular(1, (8, 6), 2).positions()[0])   # stock ids of the coarse grid
    assert torch.equal(last[0, :, 1:], TokenSet.regular(1, (8, 6), 1).positions()[0])
    for ids in mixed:            # 8 coarse tokens and 4 x 4 children on the 4 x 3 frame; 3 children of 4 off the integers
        halves = (ids[:, 1:] % 1 != 0).any(dim=1)
        assert int(halves.sum()) == 3 * 4 and set((ids[:, 1:] % 1).unique().tolist()) == {0.0, 0.5}
        assert ids[:, 1].max() < 4 and ids[:, 2].max() < 3


def test_preview_callback_sees_every_call_on_the_full_grid(ralu_nodes, pipe):
    import latent_preview

    latent_preview.CALLS.clear()
    text, pooled = embeds(pipe, 1)
    ksampler(ralu_nodes, model_of(pipe), VAE(pipe.vae), "flux-dev-7x", latent=(1, 16, 16, 12), positive=(text, pooled))
    assert [c[0] for c in latent_preview.CALLS] == list(range(10))
    assert {c[1:] for c in latent_preview.CALLS} == {((1, 16, 16, 12), (1, 16, 16, 12), 10, 10)}


def test_same_seed_same_bits_and_another_seed_differs(ralu_nodes, pipe):
    text, pooled = embeds(pipe, 1)
    run = lambda seed: ksampler(ralu_nodes, model_of(pipe), VAE(pipe.vae), latent=(1, 16, 16, 12),  # noqa: E731
                                positive=(text, pooled), seed=seed)
    assert torch.equal(run(SEED), run(SEED))
    assert not torch.allclose(run(SEED), run(SEED + 1))


@pytest.mark.parametrize("latent, rule", [
    ((1, 16, 16, 13), "the latent is off the schedule's grid: height and width must be positive multiples of 32 pixels"),
    ((1, 16, 18, 16), "multiples of 32 pixels"),
    ((1, 16, 1, 16, 16), "the latent must be a FLUX image latent"),
])
def test_latent_off_the_grid_is_refused_by_rule(ralu_nodes, pipe, latent, rule):
    text, pooled = embeds(pipe, 1)
    with pytest.raises(ValueError) as err:
        ksampler(ralu_nodes, model_of(pipe), VAE(pipe.vae), latent=latent, positive=(text, pooled))
    assert str(err.value).startswith("RALU KSampler: ") and rule in str(err.value)


def test_inpainting_spatial_conditioning_and_foreign_vaes_are_refused(ralu_nodes, pipe):
    text, pooled = embeds(pipe, 1)
    model, vae = model_of(pipe), VAE(pipe.vae)
    with pytest.raises(ValueError, match="^RALU KSampler: RALU samples whole images from noise; a noise mask"):
        ksampler(ralu_nodes, model, vae, latent=(1, 16, 16, 16), positive=(text, pooled),
                 noise_mask=torch.ones(1, 1, 16, 16))
    node = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"]()
    for extra, what in [({"control": object()}, "a ControlNet"), ({"area": (8, 8, 0, 0)}, "area conditioning"),
                        ({"model_conds": {"ref_latents": object()}}, "reference latents")]:
        with pytest.raises(ValueError, match=f"^RALU KSampler: the positive conditioning carries {what}"):
            node.sample(model, 0, "flux-dev-7x", "default", 1.0, "euler", cond(text, pooled, **extra),
                        cond(text, pooled), {"samples": torch.zeros(1, 16, 16, 16)}, vae)
    with pytest.raises(ValueError, match=r"^RALU KSampler: the VAE must be FLUX's \(16 latent channels\)"):
        ksampler(ralu_nodes, model, VAE(pipe.vae, channels=4), latent=(1, 16, 16, 16), positive=(text, pooled))


def test_sampler_node_checks_the_sigmas_it_is_given(ralu_nodes, pipe):
    import comfy.sample

    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    model = model_of(pipe)
    spec, flat = nodes["RALUSchedule"]().build(model, "flux-dev-7x", "default")[:2]
    sampler = nodes["RALUSampler"]().get_sampler(spec, VAE(pipe.vae), "euler", "edges", "latent", "exact")[0]
    text, pooled = embeds(pipe, 1)
    latent = torch.zeros(1, 16, 16, 16)
    with pytest.raises(ValueError, match="^RALU Sampler: the sigmas given to the sampler must be the RALU Schedule's"):
        comfy.sample.sample_custom(model, torch.randn(1, 16, 16, 16), 1.0, sampler, torch.linspace(1, 0, 11),
                                   cond(text, pooled), cond(text, pooled), latent)
    out = comfy.sample.sample_custom(model, torch.randn(1, 16, 16, 16), 1.0, sampler, flat, cond(text, pooled),
                                     cond(text, pooled), latent)
    assert out.shape == latent.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name, why", [("euler_ancestral", "adds fresh noise at every step"),
                                       ("dpmpp_2m_sde", "adds fresh noise"),
                                       ("dpmpp_2m", "variance-exploding")])
def test_solvers_that_cannot_run_a_stage_exactly_are_refused_by_name(ralu_nodes, pipe, name, why):
    spec = ralu_nodes.NODE_CLASS_MAPPINGS["RALUSchedule"]().build(model_of(pipe), "flux-dev-7x", "default")[0]
    with pytest.raises(ValueError, match=f"^RALU Sampler: solver '{name}' cannot run a RALU stage exactly") as err:
        ralu_nodes.NODE_CLASS_MAPPINGS["RALUSampler"]().get_sampler(spec, VAE(pipe.vae), name, "edges", "latent",
                                                                    "exact")
    assert why in str(err.value) and "euler, heun, dpmpp_2m_flow, uni_pc_flow" in str(err.value)


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m_flow"])
def test_other_solvers_equal_ralu_with_the_same_diffusers_scheduler(ralu_nodes, pipe, solver):
    import comfy.sample
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler

    from ralu_torch import RALU
    from ralu_torch.tokens import unpack

    text, pooled = embeds(pipe, 1)
    out = ksampler(ralu_nodes, model_of(pipe), VAE(pipe.vae), "flux-dev-7x", latent=(1, 16, 16, 12),
                   positive=(text, pooled), solver=solver)
    first = F.avg_pool2d(comfy.sample.prepare_noise(torch.zeros(1, 16, 16, 12), SEED), 2) * 2
    sched = FlowMatchHeunDiscreteScheduler() if solver == "heun" else \
        DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    ref = RALU(pipe, "flux-dev-7x", solver=sched)(prompt_embeds=text, pooled_prompt_embeds=pooled, height=128,
                                                  width=96, latents=first, output_type="latent",
                                                  generator=torch.Generator().manual_seed(SEED + 1))
    ours = model_of(pipe).model.process_latent_in(out)
    assert (ours - unpack(ref.images, (8, 6))).abs().max() <= 1e-5


# -- the pyramid by hand -----------------------------------------------------------------------

def test_pyramid_wired_by_hand_equals_the_ralu_sampler(ralu_nodes, pipe):
    """Stage 1 by a stock Euler SAMPLER on the RALU Schedule's stage_1 sigmas, RALU Upsample
    Latent, stage 2 by the stock sampler on stage_2 sigmas with zero noise: the RALU Sampler's
    run on the same pyramid schedule, first noise and transition seed (ComfyUI's convention
    for partly denoised flow latents, x / (1 - sigma), is what the upsample node undoes)."""
    import comfy.sample
    import comfy.samplers

    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    model, vae = model_of(pipe), VAE(pipe.vae)
    out = nodes["RALUSchedule"]().build(model, "custom", "default", steps="3, 4", ends="0.35, 1.0")
    spec, flat, stage1, stage2 = out[:4]
    text, pooled = embeds(pipe, 1)
    c = cond(text, pooled)
    noise = torch.randn(1, 16, 16, 12, generator=torch.Generator().manual_seed(0))
    sampler = nodes["RALUSampler"]().get_sampler(spec, vae, "euler", "edges", "latent", "exact")[0]
    whole = comfy.sample.sample_custom(model, noise, 1.0, sampler, flat, c, c, torch.zeros(1, 16, 16, 12), seed=SEED)
    euler = comfy.samplers.Euler()
    low = comfy.sample.sample_custom(model, F.avg_pool2d(noise, 2) * 2, 1.0, euler, stage1, c, c,
                                     torch.zeros(1, 16, 8, 6))
    up = nodes["RALUUpsampleLatent"]().upsample(model, {"samples": low}, spec, 1, SEED + 1, "latent")[0]
    assert up["samples"].shape == (1, 16, 16, 12)
    by_hand = comfy.sample.sample_custom(model, torch.zeros(1, 16, 16, 12), 1.0, euler, stage2, c, c, up["samples"])
    assert (by_hand - whole).abs().max() <= 1e-5


def test_upsample_node_refuses_partial_transitions_and_bad_indices(ralu_nodes, pipe):
    nodes = ralu_nodes.NODE_CLASS_MAPPINGS
    model = model_of(pipe)
    spec = nodes["RALUSchedule"]().build(model, "flux-dev-7x", "default")[0]
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    with pytest.raises(ValueError, match="^RALU Upsample Latent: this transition upsamples a fraction 0.1"):
        nodes["RALUUpsampleLatent"]().upsample(model, latent, spec, 1, 0, "latent")
    with pytest.raises(ValueError, match="^RALU Upsample Latent: transition must be 1..2 for this 3-stage schedule"):
        nodes["RALUUpsampleLatent"]().upsample(model, latent, spec, 3, 0, "latent")


# -- the example workflows --------------------------------------------------------------------

def test_ui_workflow_is_the_api_workflow_as_a_graph(ralu_nodes):
    """Both example files describe one graph: the same nodes, widget values and wires."""
    import json

    folder = ROOT / "comfyui_ralu" / "example_workflows"
    api = json.loads((folder / "ralu_flux_api.json").read_text())
    ui = json.loads((folder / "ralu_flux.json").read_text())
    by_id = {str(n["id"]): n for n in ui["nodes"]}
    assert set(by_id) == set(api)
    links = {lid: (str(src), slot) for lid, src, slot, *_ in ui["links"]}
    for nid, node in api.items():
        graph = by_id[nid]
        assert graph["type"] == node["class_type"]
        wired = {i["name"]: list(links[i["link"]]) for i in graph["inputs"]}
        assert wired == {k: [v[0], v[1]] for k, v in node["inputs"].items() if isinstance(v, list)}, nid
        values = [v for k, v in node["inputs"].items() if not isinstance(v, list)]
        assert [v for v in graph["widgets_values"] if v not in ("fixed",)] == values, nid
    sampler = next(n for n in api.values() if n["class_type"] == "RALUKSampler")["inputs"]
    declared = ralu_nodes.NODE_CLASS_MAPPINGS["RALUKSampler"].INPUT_TYPES()["required"]
    assert set(sampler) == set(declared) and sampler["preset"] in declared["preset"][0]
