"""Starting from an image (img2img) or a clip (video2video): what those pipelines share.

A pipeline of this kind (``FluxImg2ImgPipeline``, ``StableDiffusion3Img2ImgPipeline``,
``QwenImageImg2ImgPipeline``, ``ZImageImg2ImgPipeline``, ``ChromaImg2ImgPipeline``,
``WanVideoToVideoPipeline``) preprocesses its input with its own image (video) processor,
VAE-encodes it, repeats it over the batch, noises it to the point of its grid that its
``strength`` selects, and runs the rest of its steps. Under RALU:

- :meth:`ImageStart.image_start` checks the call's ``strength`` and input and preprocesses the
  input with the pipeline's processor, before any model call (an image the pipeline cannot take
  is refused in one line: a video given for an image or the reverse, a mode or channel count
  its VAE cannot encode, more images than images generated, a size the pipeline does not take);
- :meth:`ImageStart.encode_start` VAE-encodes it as the pipeline does (its own helper where it
  has one, with the call's generator, before the first noise is drawn, as the pipeline draws
  them) and repeats it over the batch by the pipeline's rule;
- the sampler starts the first stage from that latent read on the stage's token set, noised
  to the stage's first sigma (:func:`ralu_torch.sampler.noised_start`), and the schedule runs
  from the strength point (:mod:`ralu_schedule.strength`, ``RALU.schedule_for``).

Each backend's defaults (``strength``, ``guidance_scale``) are read from its pipeline's
``__call__`` signature, so a run takes the defaults the stock pipeline takes (FLUX.1 img2img:
guidance 7.0, strength 0.6; Chroma: strength 0.9; Wan video2video: 0.8).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ralu_schedule.strength import check_strength


@dataclass
class StartInputs:
    """The checked start of a call: its ``strength``, the input as the pipeline preprocessed it
    (``(N, 3, H, W)`` pixels, or latents given in the image's place; a clip ``(N, 3, F, H, W)``),
    and the size (and frame count) the run has."""

    strength: float
    pixels: torch.Tensor
    height: int
    width: int
    num_frames: int | None = None


def signature_default(pipe, name: str):
    """The default of argument ``name`` of ``pipe.__call__`` (the stock pipeline's own)."""
    return inspect.signature(type(pipe).__call__).parameters[name].default


def repeat_over_batch(latents: torch.Tensor, batch: int) -> torch.Tensor:
    """The pipelines' rule for images fewer than the batch: the whole set repeated
    (``[a, b, a, b]``) when it divides the batch (:meth:`ImageStart.check_count` refuses the rest)."""
    n = latents.shape[0]
    return torch.cat([latents] * (batch // n), dim=0) if batch > n else latents


def encode_each(vae, pixels: torch.Tensor, generator, retrieve) -> torch.Tensor:
    """``retrieve(vae.encode(...), generator=...)`` of a batch, image ``i`` with generator ``i``
    when ``generator`` is a list (as the pipelines encode)."""
    if isinstance(generator, list):
        return torch.cat([retrieve(vae.encode(pixels[i:i + 1]), generator=generator[i])
                          for i in range(pixels.shape[0])], dim=0)
    return retrieve(vae.encode(pixels), generator=generator)


class ImageStart:
    """Mixin for a family backend whose pipeline starts from an image (module docstring).

    A family states ``preprocess(value, height, width) -> (pixels, height, width)`` when its
    pipeline preprocesses differently from ``image_processor.preprocess(image, height=..., width=...)``
    and ``vae_latents(pixels, generator)``: model-space latents ``(N, C, h, w)`` of preprocessed
    pixels, as the pipeline encodes them (default: the pipeline's ``_encode_vae_image``)."""

    #: the call argument the run starts from
    start_argument = "image"
    #: how the pipeline cuts its grid at a strength (ralu_schedule.strength.ROUNDINGS)
    strength_rounding = "img2img"
    #: whether a list of generators needs one image per generated image (SD3 encodes image i with generator i)
    generators_per_image = False
    #: whether the pipeline takes latents (its VAE's channels) in the input's place
    latents_as_input = True

    def __init__(self, pipe):
        super().__init__(pipe)
        self.default_strength = signature_default(pipe, "strength")
        self.default_guidance_scale = signature_default(pipe, "guidance_scale")

    @property
    def pipeline_name(self) -> str:
        return type(self.pipe).__name__

    @property
    def start_channels(self) -> int:
        """Channels of latents the pipeline takes in the image's place (its VAE's)."""
        cfg = self.pipe.vae.config
        return cfg.get("latent_channels", None) or cfg.get("z_dim")

    # -- before any model call --------------------------------------------------------------------
    def image_start(self, kwargs: dict, *, height, width, batch: int, generator, num_frames=None):
        """``(kwargs without the start arguments, StartInputs)``: the call's ``strength`` and
        input checked and preprocessed; ``height``/``width`` as given (None: the pipeline's default)."""
        kwargs = dict(kwargs)
        strength = kwargs.pop("strength", None)
        value = kwargs.pop(self.start_argument, None)
        other = "image" if self.start_argument == "video" else "video"
        if kwargs.get(other) is not None:
            raise ValueError(f"{self.pipeline_name} starts from {self.start_argument}=, not {other}=")
        kwargs.pop(other, None)
        strength = check_strength(self.default_strength if strength is None else strength)
        if num_frames is not None:
            raise ValueError(f"{self.pipeline_name} takes no num_frames: a run has the frames of its {self.start_argument}")
        if value is None:
            raise ValueError(f"{self.pipeline_name} needs {self.start_argument}=, the {self.start_argument} to start from")
        self.check_form(value)
        pixels, height, width, frames = self.preprocess(value, height, width)
        self.check_channels(pixels)
        self.check_count(pixels.shape[0], batch, generator)
        return kwargs, StartInputs(strength, pixels, height, width, frames)

    def check_form(self, image) -> None:
        """An image (or a list of them) the image processor takes, RGB where it is a PIL image."""
        import numpy as np
        import PIL.Image
        from diffusers.image_processor import is_valid_image_imagelist

        items = image if isinstance(image, list) else [image]
        if isinstance(image, list) and not image:
            raise ValueError(f"{self.start_argument}= is an empty list; give the image to start from")
        if any(isinstance(i, list) for i in items) or any(
                isinstance(i, (np.ndarray, torch.Tensor)) and i.ndim == 5 for i in items):
            raise ValueError(f"{self.pipeline_name} starts from an image, got a video (a list of frames or a 5-D "
                             "array); give one image, a list of images or a (batch, channels, height, width) tensor")
        if not is_valid_image_imagelist(image):
            raise ValueError(f"{self.start_argument}= must be a PIL image, a numpy array (height, width, channels) or a "
                             "tensor (channels, height, width), a list of them, or a 4-D batch; got "
                             f"{type(image).__name__}")
        for i in items:
            if isinstance(i, PIL.Image.Image) and i.mode != "RGB":
                raise ValueError(f"{self.pipeline_name} encodes RGB images, got a PIL image of mode {i.mode!r}; "
                                 "convert it with image.convert('RGB')")

    def preprocess(self, image, height, width):
        """``(pixels, height, width, frames)``: the image resized to the run's size by the
        pipeline's processor (``height``/``width`` None: the pipeline's default size)."""
        height = self.default_height if height is None else height
        width = self.default_width if width is None else width
        pixels = self.pipe.image_processor.preprocess(image, height=height, width=width).to(dtype=torch.float32)
        return pixels, height, width, None

    def check_channels(self, pixels: torch.Tensor) -> None:
        c = pixels.shape[1]
        if c == 3 or (self.latents_as_input and c == self.start_channels):
            return
        also = f", or takes {self.start_channels}-channel latents in its place" if self.latents_as_input else ""
        raise ValueError(f"{self.pipeline_name} encodes 3-channel (RGB) {self.start_argument}s{also}; got {c} channels")

    def check_count(self, n: int, batch: int, generator) -> None:
        """Images for ``batch`` generated images: one, or a number the batch repeats (the
        pipelines' rule); with a list of generators, one generator per generated image."""
        if batch % n:
            raise ValueError(f"{n} images cannot start {batch} generated images: {self.pipeline_name} repeats the "
                             f"images over the batch, so give 1 image, or a number dividing {batch}")
        if isinstance(generator, list):
            if len(generator) != batch:
                raise ValueError(f"got {len(generator)} generators for a batch of {batch} images; pass one generator "
                                 "or one per image")
            if self.generators_per_image and n != batch:
                raise ValueError(f"with a list of generators {self.pipeline_name} encodes image i with generator i: "
                                 f"give {batch} images (one per generated image) or one generator")

    # -- the model calls ------------------------------------------------------------------------
    def encode_start(self, start: StartInputs, batch: int, generator, device) -> torch.Tensor:
        """The input's clean latents for ``batch`` images, model space, float32, at full
        resolution: ``(batch, C, h, w)`` (a clip: its latent frames stacked on the rows)."""
        pixels = start.pixels.to(device=device, dtype=self.start_dtype)
        given = self.latents_as_input and pixels.shape[1] == self.start_channels
        latents = pixels if given else self.vae_latents(pixels, generator)
        return self.start_latent(repeat_over_batch(latents, batch)).float()

    @property
    def start_dtype(self) -> torch.dtype:
        """The dtype the pipeline hands its input to the VAE in (the prompt embeddings' here)."""
        return self.dtype

    def vae_latents(self, pixels: torch.Tensor, generator) -> torch.Tensor:
        return self.pipe._encode_vae_image(image=pixels, generator=generator)

    def start_latent(self, latents: torch.Tensor) -> torch.Tensor:
        """The encoded input in the sampler's latent form (a video backend stacks its frames)."""
        return latents

    def to_model_space(self, latents: torch.Tensor) -> torch.Tensor:
        """What a ``scaling_factor``/``shift_factor`` VAE encodes, as the model sees it (the
        inverse of :meth:`DiffusersBackend.decode`'s first line)."""
        cfg = self.vae.config
        return (latents - cfg.shift_factor) * cfg.scaling_factor
