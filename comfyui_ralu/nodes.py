"""The RALU nodes: thin classes in ComfyUI's node contract (``INPUT_TYPES`` declares typed
inputs, ``RETURN_TYPES`` the outputs, ``FUNCTION`` names the one method that runs)."""

from __future__ import annotations

import torch

from ralu_schedule import PRESETS
from ralu_schedule.presets import PARAMETERS
from ralu_torch.options import KEPT_NOISE, SELECTIONS, UPSAMPLE_MODES

from .families import resolve, supported
from .sampler import SOLVERS, RALUSampler, SecondExpert, with_expert
from .schedule import CUSTOM, STAGE_OUTPUTS, NodeError, RALUSchedule, family_presets, make_schedule

CATEGORY = "sampling/ralu"
SCHEDULE = "RALU_SCHEDULE"
MAX_SEED = 0xffffffffffffffff


#: The model families the nodes run, as their descriptions and tooltips name them.
FAMILIES = supported()


def preset_menu() -> list:
    """The presets of the families the nodes run (family by family), ``custom``, then the other
    families' presets (refused by name)."""
    mine = family_presets()
    return mine + [CUSTOM] + sorted(n for n in PRESETS if n not in mine)


def _preset_inputs(custom: bool = True) -> dict:
    menu = preset_menu() if custom else [n for n in preset_menu() if n != CUSTOM]
    tip = "a ralu_schedule preset of the MODEL's family" + (", or 'custom' for the layout fields below" if custom else
                                                            "") + "; a preset of another family is refused"
    return {
        "preset": (menu, {"default": "flux-dev-7x", "tooltip": tip}),
        "parameters": (list(PARAMETERS), {"default": "default", "tooltip": "default/authors: the preset's published "
                                          "parameters; optimised: its layout solved for the MODEL's own shift"}),
    }


def _options(values, default, tooltip):
    return (list(values), {"default": default, "tooltip": tooltip})


class RALUScheduleNode:
    """MODEL (its sampling shift) and a preset or a layout -> a RALU schedule and its SIGMAS."""

    NAME = "RALU Schedule"
    RETURN_TYPES = (SCHEDULE, "SIGMAS") + ("SIGMAS",) * STAGE_OUTPUTS + ("STRING",)
    RETURN_NAMES = ("schedule", "sigmas") + tuple(f"stage_{k + 1}" for k in range(STAGE_OUTPUTS)) + ("summary",)
    OUTPUT_TOOLTIPS = ("the schedule, for the RALU Sampler and RALU Upsample Latent",
                       "every stage's sigmas in turn: wire into SamplerCustomAdvanced with the RALU Sampler") + tuple(
        f"stage {k + 1}'s sigmas alone (empty if the schedule has fewer stages): for a pyramid schedule wired by hand"
        for k in range(STAGE_OUTPUTS)) + ("the layout and solved parameters, as text",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = f"A RALU schedule (Region-Adaptive Latent Upsampling) for {FAMILIES}, from a preset or a layout."

    @classmethod
    def INPUT_TYPES(cls):
        text = lambda default, tip: ("STRING", {"default": default, "tooltip": tip})  # noqa: E731
        return {"required": {"model": ("MODEL", {"tooltip": "its family picks the presets; its sampling shift is h0 of "
                                                      "solved schedules"}),
                             **_preset_inputs()},
                "optional": {"steps": text("2, 3, 5", "custom layout: Euler steps per stage"),
                             "ends": text("0.2, 0.3, 1.0", "custom layout: where each stage ends (data time, "
                                          "last 1.0)"),
                             "fractions": text("0.1, 1.0", "custom layout: share of low-resolution tokens each "
                                               "transition upsamples (last 1.0)"),
                             "factors": text("2, 2", "custom layout: upsampling factor per axis of each transition")}}

    def build(self, model, preset, parameters, steps="", ends="", fractions="", factors=""):
        spec = RALUSchedule(make_schedule(model, preset, parameters, self.NAME, steps=steps, ends=ends,
                                          fractions=fractions, factors=factors))
        stages = tuple(spec.stage_sigmas(k) for k in range(STAGE_OUTPUTS))
        return (spec, spec.sigmas()) + stages + (spec.describe(),)


class RALUSamplerNode:
    """RALU_SCHEDULE + VAE -> a SAMPLER for SamplerCustomAdvanced that runs every stage."""

    NAME = "RALU Sampler"
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Runs the whole RALU schedule in one sampler call: stages at their resolutions, edge selection on "
                   "the decoded estimate, correlated noise re-injection. Give SamplerCustomAdvanced the RALU "
                   "Schedule's 'sigmas'.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "schedule": (SCHEDULE, {"tooltip": "from RALU Schedule"}),
            "vae": ("VAE", {"tooltip": "the model's VAE: decodes the clean estimate for the edge selection"}),
            "solver": _options(SOLVERS, "euler", "the solver inside each stage"),
            "select": _options(SELECTIONS, "edges", "which low-resolution tokens a partial transition upsamples"),
            "upsample": _options(UPSAMPLE_MODES, "latent", "latent: nearest upsampling of the latent (the paper); "
                                 "token: whole tokens repeated (the authors' code)"),
            "kept_noise": _options(KEPT_NOISE, "exact", "noise variance of tokens a transition keeps: exact 1 - c, "
                                   "or the authors' 1")}}

    def get_sampler(self, schedule, vae, solver, select, upsample, kept_noise):
        _check_schedule(schedule, self.NAME)
        return (RALUSampler(schedule, vae, solver_name=solver, select=select, upsample=upsample,
                            kept_noise=kept_noise, node=self.NAME),)


class RALUKSamplerNode:
    """The convenience node: KSampler's inputs with a RALU preset in place of steps and scheduler,
    and Wan 2.2's low-noise expert as an optional second MODEL."""

    NAME = "RALU KSampler"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = (f"KSampler with RALU (Region-Adaptive Latent Upsampling) for {FAMILIES}: a preset instead of "
                   "steps. For Wan 2.2 A14B give the high-noise expert as model and the low-noise one as model_2.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": f"{FAMILIES}; with model_2, Wan 2.2's high-noise expert"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "the first noise (as KSampler draws it); re-injection noise uses seed + 1"}),
            **_preset_inputs(custom=False),
            "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "classifier-free guidance (FLUX.1-dev: 1.0, with FluxGuidance on positive)"}),
            "solver": _options(SOLVERS, "euler", "the solver inside each stage"),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT", {"tooltip": "an empty latent of the image or video size (multiples of 32 "
                                        "pixels for most 7x and 4x presets, 64 for Wan 2.2 TI2V-5B)"}),
            "vae": ("VAE", {"tooltip": "the model's VAE: decodes the clean estimate for the edge selection"})},
            "optional": {
            "model_2": ("MODEL", {"tooltip": "Wan 2.2 A14B's low-noise expert: calls below the boundary go to it"}),
            "boundary": ("FLOAT", {"default": 0.875, "min": 0.0, "max": 1.0, "step": 0.001,
                                   "tooltip": "with model_2: the sigma from which down model_2 denoises (Wan 2.2 "
                                              "A14B: 0.875 text-to-video, 0.9 image-to-video); unused without it"})}}

    def sample(self, model, seed, preset, parameters, cfg, solver, positive, negative, latent_image, vae,
               model_2=None, boundary=0.875):
        import comfy.sample
        import comfy.utils
        import latent_preview

        if preset == CUSTOM:
            raise NodeError(self.NAME, "a custom layout needs the RALU Schedule node's layout fields (with the RALU "
                                       "Sampler); the RALU KSampler takes a preset")
        spec = RALUSchedule(make_schedule(model, preset, parameters, self.NAME))
        sampler = RALUSampler(spec, vae, solver_name=solver, node=self.NAME)
        total = sampler.model_calls()
        if model_2 is not None:
            family = resolve(model, self.NAME)[0]
            if family.name != "wan":
                raise NodeError(self.NAME, f"model_2 is Wan 2.2 A14B's low-noise expert; {family.display} has one "
                                           "model: leave model_2 unconnected")
            sampler = SecondExpert(sampler, model_2, positive, negative, cfg, boundary)
            model = with_expert(model, model_2)
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        callback = latent_preview.prepare_callback(model, total)
        samples = comfy.sample.sample_custom(model, noise, cfg, sampler, spec.sigmas(), positive, negative, latent,
                                             noise_mask=latent_image.get("noise_mask"), callback=callback,
                                             disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        return ({**latent_image, "samples": samples},)


class RALUUpsampleLatentNode:
    """A pyramid transition between two stock sampler runs (every token upsampled)."""

    NAME = "RALU Upsample Latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upsample"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Between the stages of a pyramid RALU schedule (every fraction 1) run by stock samplers: "
                   "upsamples what stage k returned and re-injects correlated noise, giving stage k + 1's latent "
                   "(sample it with Disable Noise and the schedule's stage sigmas).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "the model: its latent format"}),
            "samples": ("LATENT", {"tooltip": "what SamplerCustomAdvanced returned for stage k"}),
            "schedule": (SCHEDULE,),
            "transition": ("INT", {"default": 1, "min": 1, "max": STAGE_OUTPUTS - 1,
                                   "tooltip": "k: the transition after stage k"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
            "upsample": _options(UPSAMPLE_MODES, "latent", "latent (the paper) or token (the authors' code)")}}

    def upsample(self, model, samples, schedule, transition, seed, upsample):
        from ralu_torch import upsample_latents

        node = self.NAME
        family, base, _ = resolve(model, node)
        plan = _check_schedule(schedule, node).plan
        if not 1 <= transition <= len(plan.transitions):
            raise NodeError(node, f"transition must be 1..{len(plan.transitions)} for this "
                                  f"{len(plan.stages)}-stage schedule, got {transition}")
        tr, end = plan.transitions[transition - 1], plan.stages[transition - 1].end
        latent = samples["samples"]
        channels = base.latent_format.latent_channels
        if latent.dim() != (5 if family.video else 4) or latent.shape[1] != channels:
            form = "(batch, channels, frames, height, width)" if family.video else "(batch, channels, height, width)"
            raise NodeError(node, f"samples must be a {family.display} latent {form} with {channels} channels, got "
                                  f"{tuple(latent.shape)}")
        # ComfyUI hands on a partly denoised flow latent as x / (1 - sigma) (its inverse noise scaling), and
        # the next sampler scales it back by 1 - sigma of its first sigma (its noise scaling, with zero noise).
        x_e = base.process_latent_in(latent.float()) * end
        shape = x_e.shape
        if x_e.dim() == 5:                        # a clip: frames stacked on the rows, upsampled one by one
            x_e = x_e.reshape(shape[0], shape[1], shape[2] * shape[3], shape[4])
        try:
            x_s = upsample_latents(x_e, tr, generator=torch.Generator().manual_seed(seed), upsample=upsample)
        except ValueError as err:
            raise NodeError(node, str(err)) from None
        if len(shape) == 5:
            x_s = x_s.view(shape[0], shape[1], shape[2], -1, x_s.shape[-1])
        return ({**samples, "samples": base.process_latent_out(x_s / tr.restart).to(latent.dtype)},)


def _check_schedule(schedule, node: str) -> RALUSchedule:
    if not isinstance(schedule, RALUSchedule):
        raise NodeError(node, f"schedule must come from the RALU Schedule node, got {type(schedule).__name__}")
    return schedule


NODES = (RALUScheduleNode, RALUSamplerNode, RALUKSamplerNode, RALUUpsampleLatentNode)
NODE_CLASS_MAPPINGS = {cls.NAME.replace(" ", ""): cls for cls in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NAME.replace(" ", ""): cls.NAME for cls in NODES}
