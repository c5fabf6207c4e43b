"""Stand-in for ``comfy.model_base``: a flow-matching ``BaseModel`` around a diffusion model.

``apply_model(x, sigma, **conds)`` returns the denoised latent ``x - sigma * velocity`` (what
ComfyUI's FLUX models return through their ``CONST`` model sampling); ``process_latent_in/out``
map VAE latents to the model's space and back (``(z - shift) * scale``); ``model_sampling``
maps an unshifted ``u`` to ``sigma = h u / (1 + (h - 1) u)`` with ``h = exp(mu)``.
"""

import math

import torch


class FlowSampling:
    def __init__(self, mu=1.15):
        self.shift = mu

    def sigma(self, timestep):
        h = math.exp(self.shift)
        return h * timestep / (1 + (h - 1) * timestep)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - sigma)


class ModelConfig:
    def __init__(self, in_channels=16):
        self.unet_config = {"image_model": "flux", "in_channels": in_channels, "out_channels": 16}


class BaseModel(torch.nn.Module):
    def __init__(self, diffusion_model, scale=1.0, shift=0.0, mu=1.15, in_channels=16):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.model_sampling = FlowSampling(mu)
        self.model_config = ModelConfig(in_channels)
        self.scale, self.shift = scale, shift

    def process_latent_in(self, latent):
        return (latent - self.shift) * self.scale

    def process_latent_out(self, latent):
        return latent / self.scale + self.shift

    def apply_model(self, x, sigma, c_crossattn=None, y=None, guidance=None, transformer_options={}):
        v = self.diffusion_model(x, sigma, c_crossattn, y=y, guidance=guidance, transformer_options=transformer_options)
        return x - sigma.view(-1, 1, 1, 1) * v


class Flux(BaseModel):
    pass


class Chroma(Flux):
    pass


class SD3(BaseModel):
    pass
