"""Stand-in for ``comfy.samplers``: the ``Sampler`` base, ``KSAMPLER``s, and ``CFGGuider``.

The sampler contract: ``sampler.sample(model_wrap, sigmas, extra_args, callback, noise,
latent_image, denoise_mask, disable_pbar)`` returns the sampled latent in the model's space;
``model_wrap(x, sigma, model_options=..., seed=...)`` returns the denoised latent, ``sigma`` one
value per image; ``model_wrap.inner_model`` is the ``BaseModel``, ``model_wrap.model_patcher``
the ``ModelPatcher``, ``model_wrap.conds`` the processed conditioning; ``extra_args`` holds
``model_options`` and ``seed``. Flow latents follow ComfyUI's scaling: a ``KSAMPLER`` starts from
``noise_scaling(sigmas[0], noise, latent)`` and returns ``inverse_noise_scaling(sigmas[-1], x)``
of what its k-diffusion style function (``function(model, x, sigmas, extra_args, callback,
disable)``, the model called as ``model(x, sigma_per_image, **extra_args)``) returns.
"""

import math

import torch


class Sampler:
    def sample(self, *args, **kwargs):
        raise NotImplementedError

    def max_denoise(self, model_wrap, sigmas):
        return math.isclose(float(sigmas[0]), 1.0, rel_tol=1e-5) or float(sigmas[0]) > 1.0


def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """``x <- x + (sigma' - sigma) (x - denoised) / sigma``."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * x.new_ones(x.shape[0]), **(extra_args or {}))
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
    return x


def sample_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A deterministic two-step method (the second-order Adams-Bashforth rule on
    ``d = (x - denoised) / sigma`` for unequal steps), standing in for ComfyUI's multistep
    samplers: not their arithmetic, their contract."""
    d_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * x.new_ones(x.shape[0]), **(extra_args or {}))
        d = (x - denoised) / sigmas[i]
        h = sigmas[i + 1] - sigmas[i]
        step = d if d_prev is None else d + (h / (2 * h_prev)) * (d - d_prev)
        x = x + h * step
        d_prev, h_prev = d, h
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
    return x


class KSAMPLER(Sampler):
    def __init__(self, sampler_function, extra_options={}):
        self.sampler_function, self.extra_options = sampler_function, extra_options

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        ms = model_wrap.inner_model.model_sampling

        def model(x, sigma, **kwargs):
            return model_wrap(x, sigma, model_options=kwargs.get("model_options", {}), seed=kwargs.get("seed"))

        x = ms.noise_scaling(sigmas[0], noise, latent_image)
        x = self.sampler_function(model, x, sigmas, extra_args=extra_args, callback=None, disable=disable_pbar,
                                  **self.extra_options)
        return ms.inverse_noise_scaling(sigmas[-1], x)


#: The stand-in's samplers by ComfyUI's names ("uni_pc": a multistep sampler under its name).
FUNCTIONS = {"euler": sample_euler, "uni_pc": sample_multistep}


def sampler_object(name):
    return KSAMPLER(FUNCTIONS[name])


def convert(conditioning):
    """ComfyUI's conditioning (``[[tensor, {options}], ...]``) as the dicts a guider holds."""
    return [{**options, "cross_attn": tensor, "model_conds": dict(options.get("model_conds", {}))}
            for tensor, options in conditioning]


class CFGGuider:
    """Positive and negative conditioning evaluated in one batch (the negative only when
    ``cfg != 1``), combined as ``uncond + cfg (cond - uncond)``; each conditioning's model
    inputs come from the model's ``extra_conds`` when sampling starts."""

    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.inner_model = model_patcher.model
        self.cfg = 1.0
        self.original_conds = {}

    def set_conds(self, positive, negative):
        self.original_conds = {"positive": convert(positive), "negative": convert(negative)}

    def set_cfg(self, cfg):
        self.cfg = cfg

    def __call__(self, x, sigma, model_options={}, seed=None):
        kinds = ["positive"] + (["negative"] if self.cfg != 1.0 else [])
        inputs = [self.conds[k][0]["model_conds"] for k in kinds]
        n, B = len(inputs), x.shape[0]
        batch = lambda key: torch.cat([c[key].expand(B, *c[key].shape[1:]) for c in inputs])  # noqa: E731
        out = self.inner_model.apply_model(torch.cat([x] * n), torch.cat([sigma] * n),
                                           transformer_options=dict(model_options.get("transformer_options", {})),
                                           **{key: batch(key) for key in inputs[0]})
        parts = out.chunk(n)
        return parts[0] if n == 1 else parts[1] + self.cfg * (parts[0] - parts[1])

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if torch.count_nonzero(latent_image) > 0:
            latent_image = self.inner_model.process_latent_in(latent_image)
        self.conds = {k: [{**c, "model_conds": {**c["model_conds"], **self.inner_model.extra_conds(c, noise)}}
                          for c in v] for k, v in self.original_conds.items()}
        options = dict(self.model_options)
        options["transformer_options"] = {**options.get("transformer_options", {}), "sample_sigmas": sigmas}
        extra_args = {"model_options": options, "seed": seed}
        out = sampler.sample(self, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        return self.inner_model.process_latent_out(out.float())
