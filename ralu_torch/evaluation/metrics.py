"""Image metrics of ``ralu eval``, each computed by its library (nothing hand-written).

=============  =========================================================  ========  ================
name           library and model                                          kind      better
=============  =========================================================  ========  ================
psnr           torchmetrics ``peak_signal_noise_ratio`` (data range 1)     paired    higher
ssim           torchmetrics ``structural_similarity_index_measure``        paired    higher
lpips          torchmetrics ``learned_perceptual_image_patch_similarity``  paired    lower
               (AlexNet; needs torchvision and its ImageNet weights)
clip-score     torchmetrics ``clip_score``, CLIP through transformers      prompt    higher
               (default openai/clip-vit-large-patch14)
clip-iqa       torchmetrics ``CLIPImageQualityAssessment`` ("quality")     image     higher
               (default its ``clip_iqa`` model, which needs piq; or a
               transformers CLIP)
image-reward   the ``image-reward`` package's ImageReward-v1.0             prompt    higher
niqe           pyiqa's ``niqe``                                            image     lower
=============  =========================================================  ========  ================

"paired" metrics compare an image with the reference configuration's image of the same
prompt and seed. :func:`load_metrics` loads each metric's model once; one that cannot be
loaded (a package missing, no network for its weights) is reported in one line and the
others still run. A CLIP model can be given as a hub id, a local folder (the tests save tiny
random CLIP models built from configs to one) or, from Python, a ``(model, processor)`` pair.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .configs import DEFAULT_CLIP, DEFAULT_CLIP_IQA
from .configs import METRICS as NAMES


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    kind: str                 # "paired", "prompt" (image and its prompt) or "image"
    higher_is_better: bool


INFO = {m.name: m for m in (
    MetricInfo("psnr", "PSNR", "paired", True),
    MetricInfo("ssim", "SSIM", "paired", True),
    MetricInfo("lpips", "LPIPS", "paired", False),
    MetricInfo("clip-score", "CLIP score", "prompt", True),
    MetricInfo("clip-iqa", "CLIP-IQA", "image", True),
    MetricInfo("image-reward", "ImageReward", "prompt", True),
    MetricInfo("niqe", "NIQE", "image", False),
)}


@dataclass
class MetricModels:
    """Where the metrics' models come from. A string is a hub id or local folder; for CLIP a
    ``(CLIPModel, processor)`` pair may be given instead (Python only)."""

    clip: object = DEFAULT_CLIP
    clip_iqa: object = DEFAULT_CLIP_IQA
    lpips_net: str = "alex"
    image_reward: str = "ImageReward-v1.0"
    device: str = "cpu"


class ClipFeatures(torch.nn.Module):
    """A transformers ``CLIPModel`` whose ``get_image_features``/``get_text_features`` return the
    projected embeddings as tensors, as torchmetrics 1.9 reads them: transformers 5 returns a
    ``BaseModelOutputWithPooling`` whose ``pooler_output`` holds them (torchmetrics fixed this
    after 1.9.0, pull request 3408). Everything else is the wrapped model's."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out):
        return out if torch.is_tensor(out) else out.pooler_output

    def get_image_features(self, *args, **kwargs):
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def clip_pair(source, device: str = "cpu"):
    """``(ClipFeatures, processor)`` from a hub id or folder (transformers ``from_pretrained``) or a
    ``(model, processor)`` pair."""
    if isinstance(source, (tuple, list)):
        model, processor = source
    else:
        from transformers import CLIPModel, CLIPProcessor

        model, processor = CLIPModel.from_pretrained(source), CLIPProcessor.from_pretrained(source)
    model = model if isinstance(model, ClipFeatures) else ClipFeatures(model)
    return model.eval().to(device), processor


class Metric:
    """A loaded metric: ``score(images, refs, prompts)`` -> one float per image. ``images`` and
    ``refs``: uint8 tensors ``(N, 3, H, W)`` (``refs`` only for paired metrics)."""

    def __init__(self, name: str, fn, source: str):
        self.info, self.fn, self.source = INFO[name], fn, source

    @property
    def name(self) -> str:
        return self.info.name

    def score(self, images: torch.Tensor, refs: torch.Tensor | None, prompts: list) -> list:
        with torch.no_grad():
            return [float(v) for v in self.fn(images, refs, prompts)]


def unit(images: torch.Tensor, device) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> float32 in [0, 1] on ``device``."""
    return images.to(device=device, dtype=torch.float32) / 255.0


def _psnr(models):
    from torchmetrics.functional.image import peak_signal_noise_ratio

    def fn(images, refs, prompts):
        d = models.device
        return peak_signal_noise_ratio(unit(images, d), unit(refs, d), data_range=1.0, reduction="none",
                                       dim=(1, 2, 3))
    return fn, "torchmetrics peak_signal_noise_ratio, data range 1"


def _ssim(models):
    from torchmetrics.functional.image import structural_similarity_index_measure

    def fn(images, refs, prompts):
        d = models.device
        return structural_similarity_index_measure(unit(images, d), unit(refs, d), data_range=1.0, reduction="none")
    return fn, "torchmetrics structural_similarity_index_measure, data range 1"


def _lpips(models):
    from torchmetrics.functional.image import learned_perceptual_image_patch_similarity
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    LearnedPerceptualImagePatchSimilarity(net_type=models.lpips_net)   # needs torchvision; fetches the backbone

    def fn(images, refs, prompts):
        d = models.device
        return learned_perceptual_image_patch_similarity(unit(images, d), unit(refs, d), net_type=models.lpips_net,
                                                         reduction="none", normalize=True).reshape(-1)
    return fn, f"torchmetrics learned_perceptual_image_patch_similarity, {models.lpips_net}"


def _clip_score(models):
    from torchmetrics.functional.multimodal import clip_score

    pair = clip_pair(models.clip, models.device)

    def fn(images, refs, prompts):
        return [clip_score(img.to(models.device), p, model_name_or_path=lambda: pair)
                for img, p in zip(images, prompts)]
    return fn, f"torchmetrics clip_score, CLIP {source_name(models.clip)}"


def _clip_iqa(models):
    from torchmetrics.multimodal import CLIPImageQualityAssessment

    source = models.clip_iqa
    if source == "clip_iqa":            # the paper's model, through piq
        name, data_range = "clip_iqa", 255.0
    else:
        pair = clip_pair(source, models.device)
        # torchmetrics divides by data_range, then the transformers processor rescales by 1/255 itself:
        # 0-255 values with data_range 1 reach the model as the processor expects them
        name, data_range = (lambda: pair), 1.0
    metric = CLIPImageQualityAssessment(model_name_or_path=name, data_range=data_range, prompts=("quality",))
    metric = metric.to(models.device)

    def fn(images, refs, prompts):
        metric.reset()
        metric.update(images.to(device=models.device, dtype=torch.float32))
        return metric.compute().reshape(-1)
    return fn, f"torchmetrics CLIPImageQualityAssessment, {source_name(source)}"


def _image_reward(models):
    import ImageReward as reward  # the image-reward package
    from PIL import Image

    model = reward.load(models.image_reward, device=models.device)

    def fn(images, refs, prompts):
        out = []
        for img, p in zip(images, prompts):
            out.append(model.score(p, Image.fromarray(img.permute(1, 2, 0).cpu().numpy())))
        return out
    return fn, f"image-reward {models.image_reward}"


def _niqe(models):
    import pyiqa

    metric = pyiqa.create_metric("niqe", device=torch.device(models.device))

    def fn(images, refs, prompts):
        return metric(unit(images, models.device)).reshape(-1)
    return fn, "pyiqa niqe"


def source_name(source) -> str:
    """A metric model's source as the report names it: the hub id or folder, or the given model's class."""
    return source if isinstance(source, str) else f"{type(source[0]).__name__} (given)"


LOADERS = {"psnr": _psnr, "ssim": _ssim, "lpips": _lpips, "clip-score": _clip_score, "clip-iqa": _clip_iqa,
           "image-reward": _image_reward, "niqe": _niqe}
#: What to install for each metric's library, for the skip line.
INSTALL = {"lpips": "torchvision", "clip-iqa": "piq (for its clip_iqa model) or a transformers CLIP",
           "image-reward": "image-reward", "niqe": "pyiqa"}


#: Seconds the one check of the Hugging Face hub waits for an answer.
HUB_TIMEOUT = 3.0


def hub_source(name: str, models: MetricModels) -> str | None:
    """The hub id that metric ``name``'s model downloads from, or None when it comes from
    elsewhere (a local folder, a given model, piq's or pyiqa's or torchvision's own hosts)."""
    source = {"clip-score": models.clip, "image-reward": models.image_reward,
              "clip-iqa": models.clip_iqa if models.clip_iqa != DEFAULT_CLIP_IQA else None}.get(name)
    return source if isinstance(source, str) and not os.path.isdir(source) else None


def hub_unreachable(timeout: float = HUB_TIMEOUT) -> str | None:
    """None when the Hugging Face hub answers one request within ``timeout`` seconds; else why
    not: huggingface_hub's offline mode (``HF_HUB_OFFLINE=1``) or the request's error. One
    request through huggingface_hub's own session (its proxies), no retries."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as err:             # whatever the HTTP library raises: DNS, refused, timed out, a proxy
        said = str(err).splitlines()[0][:120] if str(err) else ""
        return f"{constants.ENDPOINT} cannot be reached: {type(err).__name__}{': ' + said if said else ''}"
    return None


@contextlib.contextmanager
def hub_offline():
    """huggingface_hub's offline mode (what ``HF_HUB_OFFLINE=1`` sets when it is imported) for
    the duration: transformers and huggingface_hub read their local caches only and fail at
    once, instead of retrying a hub they cannot reach (five times per file, about 23 s)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def load_metrics(names, models: MetricModels, say=print) -> list[Metric]:
    """The metrics of ``names`` that load; each that does not is one line through ``say``.
    Where a metric's model comes from the Hugging Face hub, the hub is checked once (one short
    request, :func:`hub_unreachable`); if it cannot be reached, those models load from the
    local cache only (:func:`hub_offline`), and each that is not there is one line saying so."""
    unknown = [n for n in names if n not in LOADERS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; metrics are {', '.join(NAMES)}")
    out = []
    unreachable = hub_unreachable() if any(hub_source(n, models) for n in names) else None
    for name in names:
        source = hub_source(name, models)
        if source is not None and (os.path.isabs(source) or source.startswith(".")):
            say(f"{INFO[name].label}: skipped, its model cannot be loaded: no folder {source}")
            continue
        offline = source is not None and unreachable is not None
        try:
            with hub_offline() if offline else contextlib.nullcontext():
                fn, text = LOADERS[name](models)
        except Exception as err:          # any failure to load: a missing package, no network, a bad folder
            if offline and not isinstance(err, ImportError):
                say(f"{INFO[name].label}: skipped, its model cannot be loaded: {source} is not in the local cache and "
                    f"the hub cannot be reached ({unreachable}); run once with network access, or give a local folder")
                continue
            hint = f" (needs {INSTALL[name]})" if isinstance(err, ImportError) and name in INSTALL else ""
            say(f"{INFO[name].label}: skipped, its model cannot be loaded{hint}: {type(err).__name__}: "
                f"{str(err).splitlines()[0][:200] if str(err) else ''}")
            continue
        out.append(Metric(name, fn, text))
    return out
