"""Stand-in for ``comfy.model_base``: flow-matching ``BaseModel``s around a diffusion model.

``apply_model(x, sigma, c_concat=None, c_crossattn=None, control=None, transformer_options={},
**kwargs)`` runs the ``APPLY_MODEL`` wrappers of ``transformer_options["wrappers"]["apply_model"]``
(each called as ``wrapper(executor, x, sigma, c_concat, c_crossattn, control,
transformer_options, **kwargs)``, ``executor.class_obj`` the model) around the model call: a
concatenated condition joins the latent's channels, sigma becomes the model's timestep
(``model_sampling.timestep``), and the result is the denoised latent ``x - sigma * velocity``
(ComfyUI's flow models' ``CONST`` sampling). ``extra_conds(cond, noise)`` turns a
conditioning's entries into the model's inputs, per model class. ``latent_format`` maps VAE
latents to the model's space and back; ``model_sampling.sigma`` maps a timestep to sigma by the
shift rule (FLUX-style ``mu``, or a static shift).
"""

import math

import torch


class FlowSampling:
    def __init__(self, shift, multiplier=1.0, exponential=True):
        self.shift, self.multiplier, self.exponential = shift, multiplier, exponential

    def sigma(self, timestep):
        h = math.exp(self.shift) if self.exponential else self.shift
        t = timestep / self.multiplier
        return h * t / (1 + (h - 1) * t)

    def timestep(self, sigma):
        return sigma * self.multiplier

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - sigma)


class LatentFormat:
    """``(z - shift) * scale``, or per channel ``(z - mean) / std``; ``latent_dimensions`` 3 for clips."""

    def __init__(self, channels=16, scale=1.0, shift=0.0, mean=None, std=None, dimensions=2):
        self.latent_channels, self.latent_dimensions = channels, dimensions
        self.scale, self.shift, self.mean, self.std = scale, shift, mean, std

    def _stats(self, z):
        shape = (1, -1) + (1,) * (z.dim() - 2)
        return torch.tensor(self.mean).view(shape).to(z), torch.tensor(self.std).view(shape).to(z)

    def process_in(self, z):
        if self.mean is None:
            return (z - self.shift) * self.scale
        mean, std = self._stats(z)
        return (z - mean) / std

    def process_out(self, z):
        if self.mean is None:
            return z / self.scale + self.shift
        mean, std = self._stats(z)
        return z * std + mean


class ModelConfig:
    def __init__(self, unet_config):
        self.unet_config = unet_config


class Executor:
    """Calls the next wrapper, or the wrapped function after the last."""

    def __init__(self, original, class_obj, wrappers, index=0):
        self.original, self.class_obj, self.wrappers, self.index = original, class_obj, wrappers, index

    def __call__(self, *args, **kwargs):
        if self.index == len(self.wrappers):
            return self.original(*args, **kwargs)
        return self.wrappers[self.index](Executor(self.original, self.class_obj, self.wrappers, self.index + 1),
                                         *args, **kwargs)


class BaseModel(torch.nn.Module):
    def __init__(self, diffusion_model, latent_format, sampling, unet_config=None):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.latent_format = latent_format
        self.model_sampling = sampling
        self.model_config = ModelConfig(unet_config or {})

    def process_latent_in(self, latent):
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent):
        return self.latent_format.process_out(latent)

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        wrappers = [w for ws in transformer_options.get("wrappers", {}).get("apply_model", {}).values() for w in ws]
        return Executor(self._apply_model, self, wrappers)(x, t, c_concat, c_crossattn, control, transformer_options,
                                                           **kwargs)

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        xc = x if c_concat is None else torch.cat([x, c_concat], dim=1)
        v = self.diffusion_model(xc, self.model_sampling.timestep(t), context=c_crossattn,
                                 transformer_options=transformer_options, **kwargs)
        return x - t.view(-1, *([1] * (x.dim() - 1))) * v.float()

    def extra_conds(self, cond, noise):
        return {"c_crossattn": cond["cross_attn"]}


class Flux(BaseModel):
    def extra_conds(self, cond, noise):
        return {**super().extra_conds(cond, noise), "y": cond["pooled_output"],
                "guidance": torch.tensor([float(cond.get("guidance", 3.5))])}


class Chroma(Flux):
    def extra_conds(self, cond, noise):
        return {**BaseModel.extra_conds(self, cond, noise), "guidance": torch.tensor([0.0])}


class ChromaRadiance(Chroma):
    pass


class SD3(BaseModel):
    def extra_conds(self, cond, noise):
        return {**super().extra_conds(cond, noise), "y": cond["pooled_output"]}


class QwenImage(BaseModel):
    pass


class WAN21(BaseModel):
    """``image_to_video``: the conditioning's ``concat_mask`` ``(B, 4, T, H, W)`` and
    ``concat_latent_image`` ``(B, 16, T, H, W)`` (VAE space) become the concatenated condition
    ``c_concat`` (mask first), at the latent's full size."""

    def __init__(self, *args, image_to_video=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_to_video = image_to_video

    def extra_conds(self, cond, noise):
        out = super().extra_conds(cond, noise)
        if "concat_latent_image" in cond:
            image = self.process_latent_in(cond["concat_latent_image"])
            out["c_concat"] = torch.cat([cond["concat_mask"], image], dim=1).expand(noise.shape[0], -1, -1, -1, -1)
        return out


class WAN22(WAN21):
    pass


class WAN21_Vace(WAN21):
    pass


class HunyuanVideo(BaseModel):
    pass
