"""The RALU Sampler: a ComfyUI ``SAMPLER`` that runs the whole method in one sampler call.

ComfyUI's ``SamplerCustomAdvanced`` (and ``comfy.sample.sample_custom``) call
``sampler.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
disable_pbar)``; this one hands the call to ``ralu_torch.sampler.sample`` with the guider as
its backend (:mod:`.backend`), so stages, selection, re-injection and timestep matching are
``ralu_torch``'s and ``ralu_schedule``'s, unchanged.

Noise. The first stage runs on ``1/D`` of the latent per axis: its noise is ComfyUI's own
noise (the NOISE input, or KSampler's seed) pooled by ``D``, ``D * avg_pool(noise, D)``: each
low-resolution value is the scaled sum of ``D^2`` independent standard normals, itself a
standard normal, independent of its neighbours. Re-injection noise (and the ``"authors"``
and ``"random"`` selections' draws) come from a CPU generator seeded with ``seed + 1`` (the
first noise is drawn from ``seed``; the same stream would correlate the two).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import comfy.samplers

from ralu_schedule import token_grid
from ralu_schedule.export import model_evaluations

from .backend import ComfyFluxBackend
from .schedule import NodeError, flux_model

#: Per-stage solvers: ComfyUI's name where the method is the same, ralu_torch's flow solvers otherwise.
SOLVERS = ("euler", "heun", "dpmpp_2m_flow", "uni_pc_flow")
#: The cost model's solver of each (model evaluations per stage).
_EVALUATIONS = {"euler": "euler", "heun": "heun", "dpmpp_2m_flow": "dpm-multistep", "uni_pc_flow": "unipc"}
#: Why ComfyUI's other samplers are refused: stochastic ones by these name parts.
_STOCHASTIC = ("ancestral", "sde", "lcm", "ddpm", "restart", "er_sde", "sa_solver", "seeds", "_cfg_pp")
#: Conditioning entries that address the latent's layout, which a mixed stage does not have: the
#: conditioning's own keys, then the model inputs ComfyUI derives from it (``model_conds``).
_SPATIAL_CONDS = {"control": "a ControlNet", "area": "area conditioning", "mask": "masked conditioning",
                  "gligen": "GLIGEN"}
_SPATIAL_MODEL_CONDS = {"ref_latents": "reference latents (Kontext)", "c_concat": "a concatenated image"}
_MAX_SEED = 2**64 - 1


def solver(name: str, node: str):
    """``None`` (ralu_torch's built-in Euler step) or the diffusers scheduler each stage copies."""
    if name not in SOLVERS:
        if any(part in name for part in _STOCHASTIC):
            why = "it adds fresh noise at every step, which RALU's re-injection and timestep matching do not model"
        else:
            why = ("ComfyUI's form of it runs FLUX's sigmas as variance-exploding ones; RALU runs a stage with "
                   "an exact flow-matching solver")
        raise NodeError(node, f"solver {name!r} cannot run a RALU stage exactly ({why}); use one of "
                              f"{', '.join(SOLVERS)}")
    if name == "euler":
        return None
    from diffusers import DPMSolverMultistepScheduler, FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler

    if name == "heun":
        return FlowMatchHeunDiscreteScheduler()
    cls = DPMSolverMultistepScheduler if name == "dpmpp_2m_flow" else UniPCMultistepScheduler
    return cls(use_flow_sigmas=True, prediction_type="flow_prediction")


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
        if vae is None or getattr(vae, "latent_channels", 16) != 16:
            raise NodeError(node, f"the VAE must be FLUX's (16 latent channels), got one with "
                                  f"{getattr(vae, 'latent_channels', None)} channels")

    def model_calls(self) -> int:
        """Model evaluations of the whole run (the progress bar's length)."""
        return sum(model_evaluations(n, _EVALUATIONS[self.solver_name]) for n in self.spec.schedule.layout.steps)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        from ralu_torch.sampler import sample
        from ralu_torch.tokens import unpack

        node, schedule = self.node, self.spec.schedule
        base = flux_model(model_wrap.inner_model, node)
        self._check_inputs(model_wrap, sigmas, noise, denoise_mask)
        B, _, h, w = noise.shape
        D = schedule.layout.downsampling
        try:
            grid = token_grid(h * 8, w * 8, downsampling=D, what="the schedule")
        except ValueError as err:
            raise NodeError(node, f"the latent is off the schedule's grid: {err}") from None
        x = base.model_sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        first = x.float() if D == 1 else F.avg_pool2d(x.float(), D) * D
        seed = extra_args.get("seed")
        generator = torch.Generator().manual_seed(((0 if seed is None else int(seed)) + 1) % (_MAX_SEED + 1))
        backend = ComfyFluxBackend(model_wrap, extra_args, self.vae, noise.device, node)
        total = self.model_calls()

        def on_step(step, stage, sigma, state):
            if callback is not None:
                denoised, before = backend.preview()
                callback(step, denoised, before, total)
            return state

        result = sample(backend, schedule, None, batch=B, grid=grid, generator=generator, latents=first,
                        upsample=self.upsample, kept_noise=self.kept_noise, select=self.select, solver=self.solver,
                        callback=on_step)
        out = unpack(result.latents, grid).to(noise.dtype)
        return base.model_sampling.inverse_noise_scaling(sigmas[-1], out)

    def _check_inputs(self, model_wrap, sigmas, noise, denoise_mask) -> None:
        node = self.node
        if denoise_mask is not None:
            raise NodeError(node, "RALU samples whole images from noise; a noise mask (inpainting) is not supported")
        if noise.dim() != 4:
            raise NodeError(node, f"the latent must be a FLUX image latent (batch, 16, height, width), got shape "
                                  f"{tuple(noise.shape)}")
        want = self.spec.sigmas()
        got = sigmas.detach().float().cpu().flatten()
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-6, rtol=0):
            raise NodeError(node, f"the sigmas given to the sampler must be the RALU Schedule's 'sigmas' output "
                                  f"({len(want)} values: each stage's sigmas in turn), got {len(got)} values from "
                                  f"{float(got[0]) if len(got) else 'none'} to {float(got[-1]) if len(got) else 'none'}")
        for kind, conds in (getattr(model_wrap, "conds", None) or {}).items():
            for cond in conds or []:
                model_conds = cond.get("model_conds") or {}
                found = [what for key, what in _SPATIAL_CONDS.items() if cond.get(key) is not None]
                found += [what for key, what in _SPATIAL_MODEL_CONDS.items() if key in model_conds]
                if found:
                    raise NodeError(node, f"the {kind} conditioning carries {found[0]}, which addresses the full "
                                          "latent grid; RALU's stages run on other token sets, so they are not supported")
