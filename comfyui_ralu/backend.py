"""ComfyUI's FLUX as a ``ralu_torch`` sampler backend.

``ralu_torch.sampler.sample`` runs RALU's stages against any object with the
``SamplerBackend`` contract (``ralu_torch/backends/base.py``). :class:`ComfyFluxBackend`
meets it with what ComfyUI hands a sampler: the guider (``model_wrap(x, sigma,
model_options=..., seed=...)`` returns the denoised latent, after conditioning, CFG, hooks,
LoRAs and every model patch ComfyUI applies) and the graph's VAE.

Positions (the coordinate rule of docs/backends.md): a token at full-resolution cell
``(r, c)`` sits at ``(r / D, c / D)``, ``D`` the coarsest token size present. ComfyUI's FLUX
builds its image ids ``(0, row, col)`` from the shape of the latent it is given, so

- a stage whose tokens share one size (the low-resolution stage, the full-resolution one) is
  handed to the model as the 4-D latent of its own grid: ComfyUI builds exactly the ids of
  the coordinate rule, and the stage runs as a stock ComfyUI step on a smaller image;
- the mixed stage is handed over as a strip latent ``(B, 16, 2, 2 L)`` holding only its ``L``
  tokens, one row (the shorter sequence, never a masked full-size one), with a
  ``post_input`` patch in the call's ``transformer_options`` (ComfyUI's FLUX extension point
  after its input layers, ``ModelPatcher.set_model_post_input_patch``) that puts each
  image's ids of the coordinate rule in place of the strip's. FLUX's forward runs unchanged
  on them: one call per step for the whole batch, each image with its own positions (its
  rotary takes ids per image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ralu_torch.backends.flux import image_ids
from ralu_torch.tokens import pack, to_latent, unpack

#: The name of the per-call patch list of ComfyUI's FLUX forward that the mixed stage uses.
PATCH = "post_input"


class TokenPositions:
    """``post_input`` patch of ComfyUI's FLUX: the image ids of the mixed stage's tokens.

    ``ids``: ``(B, L, 3)`` float32, one table per image. ComfyUI batches the conditionings
    it evaluates together (positive and negative under CFG) as whole copies of the batch,
    so the model sees ``n B`` images; each copy gets the batch's ids.
    """

    def __init__(self, ids: torch.Tensor, node: str):
        self.ids = ids
        self.node = node

    def __call__(self, args: dict) -> dict:
        img_ids = args["img_ids"]
        n, length = img_ids.shape[0], img_ids.shape[1]
        batch, tokens = self.ids.shape[0], self.ids.shape[1]
        if length != tokens or n % batch:
            raise ValueError(f"{self.node}: FLUX was given {length} image tokens for {n} images where the mixed stage "
                             f"has {tokens} tokens for {batch}; reference latents (Kontext), ControlNets and other "
                             "additions to the image sequence cannot run in a mixed-resolution stage")
        return {**args, "img_ids": self.ids.to(img_ids.device).repeat(n // batch, 1, 1)}


@dataclass
class StagePositions:
    """A stage as the model sees it: the latent frame its tokens are laid out on, and the
    ``model_options`` of its calls."""

    frame: tuple
    model_options: dict


def with_patch(model_options: dict, name: str, patch) -> dict:
    """``model_options`` with ``patch`` appended to ``transformer_options["patches"][name]``,
    copying only the dicts and the list on the way (the caller's stay as they were)."""
    options = dict(model_options)
    transformer = dict(options.get("transformer_options", {}))
    patches = dict(transformer.get("patches", {}))
    patches[name] = list(patches.get(name, [])) + [patch]
    transformer["patches"] = patches
    options["transformer_options"] = transformer
    return options


class ComfyFluxBackend:
    """``ralu_torch``'s ``SamplerBackend`` around a ComfyUI guider and VAE (module docstring).

    ``model_wrap``: what ComfyUI passes a sampler's ``sample`` (its ``inner_model`` is the
    ``BaseModel``); ``extra_args``: the sampler's ``extra_args`` (``model_options``, ``seed``);
    ``vae``: ComfyUI's ``VAE`` (``decode`` takes a latent and gives images in ``[0, 1]``,
    channels last).
    """

    features = 64               # 16 channels x 2 x 2, ordered (channel, dy, dx) as ComfyUI's FLUX packs them
    latent_channels = 16
    pixels_per_token = 16       # 8 pixels per latent pixel x 2
    noise_layout = "latent"
    dtype = torch.float32       # the sampler's state; ComfyUI casts to the model's dtype itself

    def __init__(self, model_wrap, extra_args: dict, vae, device, node: str):
        self.model_wrap = model_wrap
        self.base = model_wrap.inner_model
        self.model_options = extra_args.get("model_options", {})
        self.seed = extra_args.get("seed")
        self.vae = vae
        self._device = torch.device(device)
        self.node = node
        self.tokens = None       # the current stage's token set (for previews)
        self.last = None         # (x, v, sigma) of the last call (for previews)

    @property
    def device(self) -> torch.device:
        return self._device

    def prepare(self, tokens, cond) -> StagePositions:
        self.tokens = tokens
        if tokens.uniform:       # one token size, raster order: ComfyUI's own ids are the coordinate rule's
            return StagePositions(tokens.frame, self.model_options)
        ids = torch.stack([image_ids(p) for p in tokens.positions()])
        options = with_patch(self.model_options, PATCH, TokenPositions(ids, self.node))
        return StagePositions((1, tokens.length), options)

    def velocity(self, x, positions: StagePositions, sigma, cond) -> torch.Tensor:
        latent = unpack(x, positions.frame)
        denoised = self.model_wrap(latent, sigma.expand(x.shape[0]), model_options=positions.model_options,
                                   seed=self.seed)
        v = pack(((latent - denoised.float()) / sigma).contiguous())     # ComfyUI's FLUX returns x - sigma v
        self.last = (x, v, sigma)
        return v

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents to images in ``[-1, 1]`` through the graph's VAE (ComfyUI's
        decode clamps to ``[0, 1]``; every selection policy reads only that range)."""
        images = self.vae.decode(self.base.process_latent_out(latents))
        expected = (latents.shape[-2] * 8, latents.shape[-1] * 8)
        if images.dim() != 4 or tuple(images.shape[1:3]) != expected or images.shape[-1] != 3:
            raise ValueError(f"{self.node}: the VAE decoded a {tuple(latents.shape)} latent to {tuple(images.shape)}, "
                             f"not (batch, {expected[0]}, {expected[1]}, 3); connect FLUX's VAE")
        return images.movedim(-1, 1).to(self._device, torch.float32) * 2.0 - 1.0

    def preview(self):
        """The last call's denoised estimate and state, painted on the full-resolution latent
        grid (what ComfyUI's preview callback takes)."""
        x, v, sigma = self.last
        return to_latent(x - sigma * v, self.tokens), to_latent(x, self.tokens)
