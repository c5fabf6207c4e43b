"""ComfyUI's models as a ``ralu_torch`` sampler backend, for every family the nodes run.

``ralu_torch.sampler.sample`` runs RALU's stages against any object with the
``SamplerBackend`` contract (``ralu_torch/backends/base.py``). :class:`ComfyBackend` meets it
with what ComfyUI hands a sampler: the guider (``model_wrap(x, sigma, model_options=...,
seed=...)`` returns the denoised latent, after conditioning, CFG, hooks, LoRAs and every
model patch ComfyUI applies) and the graph's VAE. What differs per family (positions, a
concatenated condition) is the family module's (:mod:`comfyui_ralu.families`).

Each stage is handed to the model in the latent form of :func:`~.families.base.stage_latent`
(its own grid when its tokens share one size, a strip of its tokens otherwise), and its calls
carry :class:`StageCall`, an ``APPLY_MODEL`` wrapper in ``transformer_options["wrappers"]``
(the per-call form of what ``ModelPatcher.add_wrapper`` registers): around each call it puts
the mixed stage's positions in the model (the family's substitution) and gives a concatenated
condition the stage's token layout.

Two experts (Wan 2.2 A14B): the backend holds a guider per expert and sends each call to the
expert its noise level belongs to, ``sigma >= boundary`` the first (high-noise) one, as
WanPipeline compares its timesteps (``1000 sigma`` against ``1000 boundary``): per call, since
RALU's transitions move the noise level back up. The sigma is the schedule's host value
(``before_call``), never read from the device.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from ralu_torch.backends.wan import high_noise

from .families import unwrap
from .families.base import NodeError, stage_latent, stage_values

#: The key of the nodes' wrapper in ``transformer_options["wrappers"]["apply_model"]``.
WRAPPER_KEY = "ralu"


@dataclass
class Expert:
    """One model as the sampler was handed it: the guider and its ``extra_args``."""

    model_wrap: object
    extra_args: dict

    @property
    def base(self):
        return self.model_wrap.inner_model

    @property
    def net(self):
        return unwrap(self.base.diffusion_model)


class StageCall:
    """The ``APPLY_MODEL`` wrapper of one stage's calls (module docstring): ComfyUI calls it
    as ``wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)``."""

    def __init__(self, backend: "ComfyBackend", tokens, positions):
        self.backend, self.tokens, self.positions = backend, tokens, positions

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                 **kwargs):
        be = self.backend
        if c_concat is not None:
            c_concat = be.family.follow(c_concat, self.tokens, be.frames, be.node)
        net = unwrap(executor.class_obj.diffusion_model)
        context = contextlib.nullcontext() if self.positions is None else \
            be.family.substitute(net, self.positions, x.shape[0], be.node)
        with context:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def with_wrapper(model_options: dict, wrapper) -> dict:
    """``model_options`` with ``wrapper`` as the nodes' ``APPLY_MODEL`` wrapper, copying only the
    dicts on the way (the caller's stay as they were)."""
    options = dict(model_options)
    transformer = dict(options.get("transformer_options", {}))
    wrappers = dict(transformer.get("wrappers", {}))
    apply = dict(wrappers.get("apply_model", {}))
    apply[WRAPPER_KEY] = [wrapper]
    wrappers["apply_model"] = apply
    transformer["wrappers"] = wrappers
    options["transformer_options"] = transformer
    return options


@dataclass
class Stage:
    """A stage as the model sees it: its tokens and each expert's ``model_options``."""

    tokens: object
    options: list


class ComfyBackend:
    """``ralu_torch``'s ``SamplerBackend`` around ComfyUI guiders and a VAE (module docstring).

    ``experts``: one :class:`Expert`, or two with ``boundary`` (Wan 2.2); ``family``: the
    MODEL's family module; ``frames``: latent frames of a video latent (1 for an image);
    ``vae``: ComfyUI's ``VAE`` (``decode`` takes a latent and gives pixels in ``[0, 1]``,
    channels last; ``spacial_compression_decode()``)."""

    noise_layout = "latent"
    dtype = torch.float32        # the sampler's state; ComfyUI casts to the model's dtype itself

    def __init__(self, family, experts: list, vae, *, device, frames: int = 1, boundary: float | None = None,
                 node: str = "RALU Sampler"):
        self.family, self.experts, self.vae = family, experts, vae
        self.boundary, self.frames, self.node = boundary, frames, node
        self._device = torch.device(device)
        base = experts[0].base
        self.latent_channels = base.latent_format.latent_channels
        self.features = 4 * self.latent_channels
        self.scale = vae.spacial_compression_decode()
        self.pixels_per_token = 2 * self.scale
        self.tokens = None       # the current stage's token set (for previews)
        self.last = None         # (x, v, sigma) of the last call (for previews)
        self._sigma = None

    @property
    def device(self) -> torch.device:
        return self._device

    def prepare(self, tokens, cond) -> Stage:
        self.tokens = tokens
        positions = None if tokens.uniform else \
            self.family.positions(self.experts[0].net, tokens, self.frames, self.node)
        wrapper = StageCall(self, tokens, positions)
        return Stage(tokens, [with_wrapper(e.extra_args.get("model_options", {}), wrapper) for e in self.experts])

    def before_call(self, sigma: float, step=None, steps=None) -> None:
        self._sigma = sigma

    def expert(self) -> int:
        """The index of the expert of the next call (module docstring)."""
        if self.boundary is None:
            return 0
        if self._sigma is None:
            raise NodeError(self.node, "two experts need each call's sigma on the host")
        return 0 if high_noise(self._sigma, self.boundary * 1000.0) else 1       # ralu_torch's Wan rule

    def velocity(self, x, stage: Stage, sigma, cond) -> torch.Tensor:
        k = self.expert()
        self._sigma = None
        expert = self.experts[k]
        latent = stage_latent(x, stage.tokens, self.frames, self.family.video)
        denoised = expert.model_wrap(latent, sigma.expand(x.shape[0]), model_options=stage.options[k],
                                     seed=expert.extra_args.get("seed"))
        v = stage_values((latent - denoised.float()) / sigma)          # ComfyUI's flow models return x - sigma v
        self.last = (x, v, sigma)
        return v

    def model_form(self, latents: torch.Tensor) -> torch.Tensor:
        """A full-grid latent ``(B, C, T h, w)`` (frames stacked) in the model's form."""
        if not self.family.video:
            return latents
        B, C, H, W = latents.shape
        return latents.view(B, C, self.frames, H // self.frames, W)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents (frames stacked on the rows) to images ``(B, 3, H, W)`` or a clip
        ``(B, 3, frames, H, W)`` in ``[-1, 1]`` through the graph's VAE (ComfyUI's decode clamps
        to ``[0, 1]``; every selection policy reads only that range). A one-frame video model
        (Qwen-Image) gives an image."""
        latent = self.model_form(latents)
        images = self.vae.decode(self.experts[0].base.process_latent_out(latent))
        h, w = latent.shape[-2] * self.scale, latent.shape[-1] * self.scale
        if images.dim() == (5 if self.family.video else 4):
            images = images.movedim(-1, 1)
            if self.family.video and self.frames == 1:
                images = images[:, :, 0]
        if images.dim() not in (4, 5) or images.shape[1] != 3 or tuple(images.shape[-2:]) != (h, w):
            raise NodeError(self.node, f"the VAE decoded a {tuple(latent.shape)} latent to {tuple(images.shape)}, not "
                                       f"{h}x{w} RGB pixels; connect the {self.family.display} model's VAE")
        return images.to(self._device, torch.float32) * 2.0 - 1.0

    def preview(self):
        """The last call's denoised estimate and state, painted on the full-resolution latent
        grid in the model's latent form (what ComfyUI's preview callback takes)."""
        from ralu_torch.tokens import to_latent

        x, v, sigma = self.last
        return self.model_form(to_latent(x - sigma * v, self.tokens)), self.model_form(to_latent(x, self.tokens))
