"""Stand-in for ``comfy.samplers``: the ``Sampler`` base, an Euler ``SAMPLER``, and ``CFGGuider``.

The sampler contract: ``sampler.sample(model_wrap, sigmas, extra_args, callback, noise,
latent_image, denoise_mask, disable_pbar)`` returns the sampled latent in the model's space;
``model_wrap(x, sigma, model_options=..., seed=...)`` returns the denoised latent, ``sigma`` one
value per image; ``model_wrap.inner_model`` is the ``BaseModel``; ``extra_args`` holds
``model_options`` and ``seed``. Flow latents follow ComfyUI's scaling: a sampler starts from
``noise_scaling(sigmas[0], noise, latent)`` and returns ``inverse_noise_scaling(sigmas[-1], x)``.
"""

import math

import torch


class Sampler:
    def sample(self, *args, **kwargs):
        raise NotImplementedError

    def max_denoise(self, model_wrap, sigmas):
        return math.isclose(float(sigmas[0]), 1.0, rel_tol=1e-5) or float(sigmas[0]) > 1.0


class Euler(Sampler):
    """``x <- x + (sigma' - sigma) (x - denoised) / sigma``."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        ms = model_wrap.inner_model.model_sampling
        x = ms.noise_scaling(sigmas[0], noise, latent_image)
        for i in range(len(sigmas) - 1):
            denoised = model_wrap(x, sigmas[i] * x.new_ones(x.shape[0]), **extra_args)
            x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
        return ms.inverse_noise_scaling(sigmas[-1], x)


def convert(conditioning):
    """ComfyUI's conditioning (``[[tensor, {options}], ...]``) as the dicts a guider holds."""
    return [{**options, "cross_attn": tensor, "model_conds": dict(options.get("model_conds", {}))}
            for tensor, options in conditioning]


class CFGGuider:
    """Positive and negative conditioning evaluated in one batch (the negative only when
    ``cfg != 1``), combined as ``uncond + cfg (cond - uncond)``."""

    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.inner_model = model_patcher.model
        self.cfg = 1.0
        self.conds = {}

    def set_conds(self, positive, negative):
        self.conds = {"positive": convert(positive), "negative": convert(negative)}

    def set_cfg(self, cfg):
        self.cfg = cfg

    def __call__(self, x, sigma, model_options={}, seed=None):
        kinds = ["positive"] + (["negative"] if self.cfg != 1.0 else [])
        conds = [self.conds[k][0] for k in kinds]
        n = len(conds)
        B = x.shape[0]
        batch = lambda key: torch.cat([c[key].expand(B, *c[key].shape[1:]) for c in conds])  # noqa: E731
        guidance = torch.cat([torch.full((B,), float(c.get("guidance", 3.5))) for c in conds])
        out = self.inner_model.apply_model(torch.cat([x] * n), torch.cat([sigma] * n), c_crossattn=batch("cross_attn"),
                                           y=batch("pooled_output"), guidance=guidance,
                                           transformer_options=dict(model_options.get("transformer_options", {})))
        parts = out.chunk(n)
        return parts[0] if n == 1 else parts[1] + self.cfg * (parts[0] - parts[1])

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if torch.count_nonzero(latent_image) > 0:
            latent_image = self.inner_model.process_latent_in(latent_image)
        extra_args = {"model_options": {"transformer_options": {"sample_sigmas": sigmas}}, "seed": seed}
        out = sampler.sample(self, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        return self.inner_model.process_latent_out(out.float())
