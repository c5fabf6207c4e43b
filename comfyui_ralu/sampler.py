"""The RALU Sampler: a ComfyUI ``SAMPLER`` that runs the whole method in one sampler call.

ComfyUI's ``SamplerCustomAdvanced`` (and ``comfy.sample.sample_custom``) call
``sampler.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
disable_pbar)``; this one hands the call to ``ralu_torch.sampler.sample`` with the guider as
its backend (:mod:`.backend`), so stages, selection, re-injection and timestep matching are
``ralu_torch``'s and ``ralu_schedule``'s, unchanged.

Noise. The first stage runs on ``1/D`` of the latent per axis: its noise is ComfyUI's own
noise (the NOISE input, or KSampler's seed) pooled by ``D``, ``D * avg_pool(noise, D)``: each
low-resolution value is the scaled sum of ``D^2`` independent standard normals, itself a
standard normal, independent of its neighbours (a video's frames are pooled one by one).
Re-injection noise (and the ``"authors"`` and ``"random"`` selections' draws) come from a CPU
generator seeded with ``seed + 1`` (the first noise is drawn from ``seed``; the same stream
would correlate the two).

Solvers (:func:`solver`): ``euler`` (ralu_torch's built-in step), ``heun``, ``dpmpp_2m_flow``
and ``uni_pc_flow`` (the cost model's solvers of ``ralu_schedule.export.SOLVERS``, diffusers'
schedulers in their flow-matching form, each stage on a fresh copy, as ``ralu_torch`` runs
them), and ``uni_pc``, ``uni_pc_bh2`` and ``dpmpp_2m``: ComfyUI's own sampler functions, run
on each stage's sigmas by :class:`ComfyStageLoop` (ComfyUI runs them on a flow model's sigmas
as on variance-exploding ones: the same ODE, solved in that parametrisation).

Two experts (Wan 2.2): :class:`SecondExpert` is the SAMPLER the RALU KSampler gives the first
model's guider; it hands the run to a guider of the second model, ComfyUI's own (conditioning,
hooks, patches and loading are ComfyUI's), whose sampler runs RALU with both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import comfy.samplers

from ralu_schedule import token_grid
from ralu_schedule.export import SOLVERS as LIBRARY_SOLVERS
from ralu_schedule.export import model_evaluations

from .backend import ComfyBackend, Expert
from .families import resolve
from .families.base import NodeError

#: The stage solvers of ralu_torch, by the node's name: the cost model's solver of each.
FLOW_SOLVERS = {"euler": "euler", "heun": "heun", "dpmpp_2m_flow": "dpm-multistep", "uni_pc_flow": "unipc"}
#: ComfyUI's deterministic samplers that run a stage as ComfyUI runs them.
COMFY_SOLVERS = ("uni_pc", "uni_pc_bh2", "dpmpp_2m")
SOLVERS = tuple(FLOW_SOLVERS) + COMFY_SOLVERS
#: Why ComfyUI's other samplers are refused: stochastic ones by these name parts.
_STOCHASTIC = ("ancestral", "sde", "lcm", "ddpm", "restart", "er_sde", "sa_solver", "seeds", "_cfg_pp")
#: Conditioning entries that address the latent's layout, which a mixed stage does not have: the
#: conditioning's own keys, then the model inputs ComfyUI derives from it (``model_conds``).
_SPATIAL_CONDS = {"control": "a ControlNet", "area": "area conditioning", "mask": "masked conditioning",
                  "gligen": "GLIGEN"}
_SPATIAL_MODEL_CONDS = {"ref_latents": "reference latents (Kontext, Edit)", "reference_latent": "a reference latent",
                        "time_dim_concat": "frames concatenated in time", "attention_mask": "an attention mask",
                        "denoise_mask": "a noise mask"}
_MAX_SEED = 2**64 - 1


class ComfyStageLoop:
    """ComfyUI's sampler ``name`` (``comfy.samplers.sampler_object``) running a RALU stage on
    its sigmas, the model handed to it as the denoiser ``x - sigma v`` (a
    ``ralu_torch.sampler.StageLoop``).

    ``end``: the last sigma of the last stage run, as the sampler left it. ComfyUI's UniPC
    replaces a final sigma 0 by 0.001 in the very tensor it is given, which is the one
    ComfyUI's KSAMPLER then undoes its noise scaling with (a flow latent divided by
    ``1 - 0.001``); the RALU Sampler ends the same way (:meth:`RALUSampler.run`), so that a
    one-stage run is ComfyUI's own, bit for bit."""

    def __init__(self, name: str):
        self.name = name
        self.end = None

    def calls(self, steps: int) -> int:
        return steps

    def run_stage(self, velocity, x, sigmas, on_step):
        sampler = comfy.samplers.sampler_object(self.name)

        def denoised(xi, sigma, **kwargs):
            return xi - sigma.view(-1, *([1] * (xi.dim() - 1))) * velocity(xi, sigma[0])

        out = sampler.sampler_function(denoised, x, sigmas, extra_args={}, callback=lambda d: on_step(d["i"], d["x"]),
                                       disable=True, **sampler.extra_options)
        self.end = sigmas[-1].detach().clone()
        return out


def solver(name: str, node: str):
    """``None`` (ralu_torch's built-in Euler step), the diffusers scheduler each stage copies
    (``ralu_torch.solvers.resolve_solver`` of the cost model's class), or a :class:`ComfyStageLoop`."""
    if name not in SOLVERS:
        if any(part in name for part in _STOCHASTIC):
            why = "it adds fresh noise at every step, which RALU's re-injection and timestep matching do not model"
        else:
            why = "it is not among the deterministic samplers checked against ComfyUI's own runs"
        raise NodeError(node, f"solver {name!r} cannot run a RALU stage ({why}); use one of {', '.join(SOLVERS)}")
    if name in COMFY_SOLVERS:
        return ComfyStageLoop(name)
    import diffusers

    from ralu_torch.solvers import resolve_solver

    return resolve_solver(getattr(diffusers, LIBRARY_SOLVERS[FLOW_SOLVERS[name]]),
                          diffusers.FlowMatchEulerDiscreteScheduler())


class RALUSampler(comfy.samplers.Sampler):
    """A ``SAMPLER`` running ``spec`` (a :class:`~.schedule.RALUSchedule`) with ``vae`` for
    the edge selection; ``select``, ``upsample`` and ``kept_noise`` as ``ralu_torch.RALU``
    takes them."""

    def __init__(self, spec, vae, *, solver_name: str = "euler", select: str = "edges", upsample: str = "latent",
                 kept_noise: str = "exact", node: str = "RALU Sampler"):
        self.spec, self.vae, self.node = spec, vae, node
        self.solver_name = solver_name
        self.solver = solver(solver_name, node)
        self.select, self.upsample, self.kept_noise = select, upsample, kept_noise
        if vae is None or not callable(getattr(vae, "decode", None)):
            raise NodeError(node, f"vae must be ComfyUI's VAE of the model, got {type(vae).__name__}")
        if isinstance(self.solver, ComfyStageLoop) and min(spec.schedule.layout.steps) < 2:
            raise NodeError(node, f"ComfyUI's {solver_name} takes no step on a one-step stage (its order is the "
                                  f"number of sigmas less 2, 0 there), and this schedule has stages of "
                                  f"{list(spec.schedule.layout.steps)} steps; use a solver of ralu_torch there")

    def model_calls(self) -> int:
        """Model evaluations of the whole run (the progress bar's length)."""
        steps = self.spec.schedule.layout.steps
        if isinstance(self.solver, ComfyStageLoop):
            return sum(self.solver.calls(n) for n in steps)
        return sum(model_evaluations(n, FLOW_SOLVERS[self.solver_name]) for n in steps)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        return self.run([Expert(model_wrap, extra_args)], sigmas, callback, noise, latent_image, denoise_mask)

    def run(self, experts: list, sigmas, callback, noise, latent_image=None, denoise_mask=None,
            boundary: float | None = None):
        """The RALU run on ``experts`` (one, or two split at ``boundary``), in the model's space."""
        from ralu_torch.sampler import sample
        from ralu_torch.tokens import unpack

        node, schedule = self.node, self.spec.schedule
        family, base, _ = resolve(experts[0].base, node)
        for other in experts[1:]:
            if resolve(other.base, node)[0] is not family or type(other.base) is not type(base):
                raise NodeError(node, f"the second MODEL is {type(other.base).__name__}, the first "
                                      f"{type(base).__name__}: two experts must be one model family (Wan 2.2's "
                                      "high-noise and low-noise experts)")
        self._check_inputs(experts, base, family, sigmas, noise, denoise_mask)
        video = noise.dim() == 5
        frames = noise.shape[2] if video else 1
        B, C = noise.shape[:2]
        h, w = noise.shape[-2:]
        D = schedule.layout.downsampling
        scale = self.vae.spacial_compression_decode()
        try:
            grid = token_grid(h * scale, w * scale, pixels_per_token=2 * scale, downsampling=D, what="the schedule")
        except ValueError as err:
            raise NodeError(node, f"the latent is off the schedule's grid: {err}") from None
        grid = (frames * grid[0], grid[1])
        x = base.model_sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(experts[0].model_wrap,
                                                                                                sigmas))
        stacked = x.float().reshape(B, C, frames * h, w)
        first = stacked if D == 1 else F.avg_pool2d(stacked, D) * D            # frames pooled one by one: h % D == 0
        seed = experts[0].extra_args.get("seed")
        generator = torch.Generator().manual_seed(((0 if seed is None else int(seed)) + 1) % (_MAX_SEED + 1))
        backend = ComfyBackend(family, experts, self.vae, device=noise.device, frames=frames, boundary=boundary,
                               node=node)
        total = self.model_calls()

        def on_step(step, stage, sigma, state):
            if callback is not None:
                denoised, before = backend.preview()
                callback(step, denoised, before, total)
            return state

        loop = isinstance(self.solver, ComfyStageLoop)
        if loop:
            self.solver.end = None
        result = sample(backend, schedule, None, batch=B, grid=grid, generator=generator, latents=first,
                        upsample=self.upsample, kept_noise=self.kept_noise, select=self.select, solver=self.solver,
                        callback=on_step)
        out = backend.model_form(unpack(result.latents, grid)).to(noise.dtype)
        end = self.solver.end if loop else sigmas[-1]          # as ComfyUI's own run of that sampler ends
        return base.model_sampling.inverse_noise_scaling(end, out)

    def _check_inputs(self, experts, base, family, sigmas, noise, denoise_mask) -> None:
        node = self.node
        if denoise_mask is not None:
            raise NodeError(node, "RALU samples whole images from noise; a noise mask (inpainting, Wan 2.2 TI2V's "
                                  "start image) is not supported")
        want_dims = 5 if family.video else 4
        channels = base.latent_format.latent_channels
        if noise.dim() != want_dims or noise.shape[1] != channels:
            form = "(batch, channels, frames, height, width)" if family.video else "(batch, channels, height, width)"
            raise NodeError(node, f"the latent must be a {family.display} latent {form} with {channels} channels, got "
                                  f"shape {tuple(noise.shape)}")
        vae_channels = getattr(self.vae, "latent_channels", None)
        if vae_channels != channels:
            raise NodeError(node, f"the VAE must be the {family.display} model's ({channels} latent channels), got one "
                                  f"with {vae_channels} channels")
        want = self.spec.sigmas()
        got = sigmas.detach().float().cpu().flatten()
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-6, rtol=0):
            span = f"from {float(got[0])} to {float(got[-1])}" if len(got) else "(none)"
            raise NodeError(node, f"the sigmas given to the sampler must be the RALU Schedule's 'sigmas' output "
                                  f"({len(want)} values: each stage's sigmas in turn), got {len(got)} values {span}")
        for expert in experts:
            for kind, conds in (getattr(expert.model_wrap, "conds", None) or {}).items():
                for cond in conds or []:
                    model_conds = cond.get("model_conds") or {}
                    found = [what for key, what in _SPATIAL_CONDS.items() if cond.get(key) is not None]
                    found += [what for key, what in _SPATIAL_MODEL_CONDS.items() if key in model_conds]
                    if "c_concat" in model_conds and not family.concat:
                        found.append("a concatenated image")
                    if found:
                        raise NodeError(node, f"the {kind} conditioning carries {found[0]}, which addresses the full "
                                              "latent grid; RALU's stages run on other token sets, so it is not "
                                              "supported")


class SecondExpert(comfy.samplers.Sampler):
    """The SAMPLER of a two-expert run (module docstring): given to the first model's guider,
    it samples with a CFGGuider of ``model_2`` on the same conditioning and cfg, whose sampler
    runs RALU with both guiders, split at ``boundary``."""

    def __init__(self, ralu: RALUSampler, model_2, positive, negative, cfg: float, boundary: float):
        if not (isinstance(boundary, (int, float)) and math.isfinite(boundary) and 0.0 < boundary < 1.0):
            raise NodeError(ralu.node, f"boundary must be a sigma strictly between 0 and 1 (Wan 2.2 A14B: 0.875 "
                                       f"text-to-video, 0.9 image-to-video), got {boundary!r}")
        self.ralu, self.model_2, self.boundary = ralu, model_2, float(boundary)
        self.positive, self.negative, self.cfg = positive, negative, cfg

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        first = Expert(model_wrap, extra_args)
        guider = comfy.samplers.CFGGuider(with_expert(self.model_2, model_wrap.model_patcher))
        guider.set_conds(self.positive, self.negative)
        guider.set_cfg(self.cfg)
        handover = _Handover(self, first, callback)
        start = latent_image if latent_image is None or not torch.count_nonzero(latent_image) else \
            model_wrap.inner_model.process_latent_out(latent_image)
        guider.sample(noise, start, handover, sigmas, denoise_mask=denoise_mask, disable_pbar=disable_pbar,
                      seed=extra_args.get("seed"))
        return handover.result


class _Handover(comfy.samplers.Sampler):
    def __init__(self, pair: SecondExpert, first: Expert, callback):
        self.pair, self.first, self.callback, self.result = pair, first, callback, None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.result = self.pair.ralu.run([self.first, Expert(model_wrap, extra_args)], sigmas, self.callback, noise,
                                         latent_image, denoise_mask, boundary=self.pair.boundary)
        return self.result


def with_expert(model, other):
    """A clone of ``model`` that ComfyUI loads together with ``other`` (``set_additional_models``:
    the models one sampling run needs are loaded at once, neither evicted for the other)."""
    clone = model.clone()
    clone.set_additional_models("ralu_expert", [other])
    return clone
