"""Channel-concatenated conditions: what the backends of ``FluxFillPipeline``,
``FluxControlPipeline`` and ``WanImageToVideoPipeline`` share.

These pipelines hand the transformer, with every step's latents, condition latents computed
once from an image at full resolution: ``FluxFillPipeline`` the masked image's latents and
the mask (64 + 256 values per token), ``FluxControlPipeline`` the control image's latents,
``WanImageToVideoPipeline`` a mask of the frames given and the latents of the clip those
frames start (and end), or, with ``expand_timesteps`` (Wan 2.2 TI2V), the first frame's
latents in place of the noise. A stage's tokens read them by the one rule for anything given
at full resolution, :func:`ralu_torch.tokens.latent_tokens`: each token gets the condition
average-pooled over the cells it covers, so a uniform stage of token side ``D`` reads the
condition at ``1/D`` and a mixed stage reads each token at its own size. At full resolution
the rule is the identity, which is why a one-stage run is the stock pipeline.

Here: reading the image inputs the stock processors take (PIL images, arrays, tensors, lists
of them) far enough to refuse what the pipeline cannot take, with one line, before any model
runs (:func:`image_shape`, :func:`check_image`, :func:`check_mask`).
"""

from __future__ import annotations

import torch


def _describe(value) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__}{'' if shape is None else ' ' + str(tuple(shape))}"


def image_shape(name: str, value, *, mask: bool = False) -> tuple:
    """``(count, channels, height, width)`` of an image input as diffusers' image processors read
    it: a PIL image, an array ``(H, W[, C])`` or ``(B, H, W, C)``, a tensor ``(C, H, W)`` or
    ``(B, C, H, W)``, or a list of single images of one kind; a mask (the mask processor) also a
    tensor ``(B, H, W)`` and an array ``(B, H, W)``. A clip (a 5-D array or tensor, a list of lists)
    is refused: a video where an image is due."""
    import numpy as np
    import PIL.Image

    if isinstance(value, PIL.Image.Image):
        return 1, len(value.getbands()), value.height, value.width
    if isinstance(value, (torch.Tensor, np.ndarray)):
        dims, numpy = value.ndim, isinstance(value, np.ndarray)
        if dims >= 5:
            raise ValueError(f"{name} must be an image, got a video ({_describe(value)}); the pipeline takes one "
                             "image here")
        if dims == 2:
            return 1, 1, *value.shape
        if dims == 3 and mask:                 # the mask processor reads a batch of grey masks (B, H, W)
            if numpy and value.shape[-1] == 1:
                return 1, 1, *value.shape[:2]
            return value.shape[0], 1, *value.shape[1:]
        if dims == 3:
            h, w, c = value.shape if numpy else (*value.shape[1:], value.shape[0])
            return 1, c, h, w
        if dims == 4:
            b, h, w, c = value.shape if numpy else (value.shape[0], *value.shape[2:], value.shape[1])
            return b, c, h, w
        raise ValueError(f"{name} must be an image, got {_describe(value)}")
    if isinstance(value, (list, tuple)) and value:
        if any(isinstance(v, (list, tuple)) for v in value):
            raise ValueError(f"{name} must be an image or a list of images, got a list of lists (a video?)")
        kinds = {(isinstance(v, PIL.Image.Image), type(v) if not isinstance(v, PIL.Image.Image) else None,
                  getattr(v, "ndim", None)) for v in value}
        if len(kinds) > 1:
            raise ValueError(f"{name}: a list must hold images of one kind (PIL images, or arrays or tensors of one "
                             f"number of dimensions), got {', '.join(_describe(v) for v in value)}")
        shapes = [image_shape(name, v) for v in value]
        if any(s[0] != 1 for s in shapes):
            raise ValueError(f"{name}: each entry of a list must be one image, got "
                             + ", ".join(_describe(v) for v in value))
        if len({s[1:] for s in shapes}) > 1:
            raise ValueError(f"{name}: the images of a list must share one size and mode, got "
                             + ", ".join(f"{h}x{w} ({c} channels)" for _, c, h, w in shapes))
        return len(shapes), *shapes[0][1:]
    raise ValueError(f"{name} must be a PIL image, an array, a tensor or a list of them, got {_describe(value)}")


def check_image(name: str, value, *, one: bool = False, pipeline: str = "") -> tuple:
    """``(count, height, width)`` of an RGB image input; ``one``: exactly one image (a pipeline
    that conditions a whole batch on one image). A ``ValueError`` otherwise, saying what came
    and what is allowed."""
    if value is None:
        raise ValueError(f"{pipeline} needs {name}= (the image its condition latents are made of)")
    import PIL.Image

    if isinstance(value, PIL.Image.Image) and value.mode != "RGB":
        raise ValueError(f"{name} must be an RGB image, got a PIL image in mode {value.mode!r}; convert it with "
                         f"{name}.convert('RGB')")
    if one and isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be one image (a PIL image or a (3, H, W) tensor), got a list of {len(value)}; "
                         f"{pipeline} conditions every clip of a call on the same image (a list of frames is a "
                         "video where an image is due)")
    count, channels, height, width = image_shape(name, value)
    if channels != 3:
        raise ValueError(f"{name} must have 3 channels (RGB), got {channels} ({_describe(value)})")
    if one and count != 1:
        raise ValueError(f"{name} must be one image, got a batch of {count}; {pipeline} conditions every clip of a "
                         "call on the same image")
    return count, height, width


def check_mask(name: str, value, image: tuple) -> int:
    """A mask of the image's size ``image = (count, height, width)`` (any PIL mode: the mask
    processor makes it grey; arrays and tensors of one channel); returns its count."""
    if value is None:
        raise ValueError(f"{name} is needed with the image (white: the region to fill)")
    count, channels, height, width = image_shape(name, value, mask=True)
    if channels != 1 and not _is_pil(value):
        raise ValueError(f"{name} must have one channel, got {channels} ({_describe(value)})")
    if (height, width) != image[1:]:
        raise ValueError(f"{name} must be the image's size, {image[1]}x{image[2]} (height x width), got "
                         f"{height}x{width}; both are resized to the output size, so masks of another size would "
                         "cover another region")
    return count


def _is_pil(value) -> bool:
    import PIL.Image

    return isinstance(value, PIL.Image.Image) or (isinstance(value, (list, tuple))
                                                  and all(isinstance(v, PIL.Image.Image) for v in value))


def check_batch(name: str, count: int, batch: int) -> None:
    """The stock rule for images of a batch: one per image, or a number that divides the batch
    (each repeated)."""
    if batch % count:
        raise ValueError(f"{name}: got {count} images for a batch of {batch}; give one, or a number that divides "
                         f"{batch} (each is repeated)")


def check_generators(generator, batch: int) -> None:
    """A list of generators has one per image (checked before the image's encoding reads them)."""
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch} images; pass one generator or one "
                         "per image")
