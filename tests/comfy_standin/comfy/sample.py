"""Stand-in for ``comfy.sample``: KSampler's noise, the empty-latent fix and ``sample_custom``."""

import torch

from . import samplers


def prepare_noise(latent_image, seed, noise_inds=None):
    """Standard normals of the latent's shape from a CPU generator seeded with ``seed``."""
    return torch.randn(latent_image.size(), generator=torch.Generator().manual_seed(seed), dtype=latent_image.dtype)


def fix_empty_latent_channels(model, latent_image):
    """An empty image latent of a clip model (``latent_dimensions`` 3) gets its frame axis."""
    if model.get_model_object("latent_format").latent_dimensions == 3 and latent_image.ndim == 4:
        latent_image = latent_image.unsqueeze(2)
    return latent_image


def sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, noise_mask=None,
                  callback=None, disable_pbar=False, seed=None):
    guider = samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=noise_mask, callback=callback,
                         disable_pbar=disable_pbar, seed=seed)
