"""The model families RALU runs, declared once each, without torch (the command line reads
them before loading anything).

A :class:`Family` names its text-to-image pipelines and their backend class, the class-name
prefixes of its image-conditioned siblings (refused by name: they start from an image or add
reference tokens that RALU's low-resolution stages do not model), how its guidance and
negative prompts work, which of the shared command-line flags apply, and how to tell its
models apart from their configs (FLUX.1-dev from schnell, FLUX.2 [klein] distilled from base
and 4B from 9B, Z-Image-Turbo from Z-Image). Everything per family that ``RALU`` and
``ralu generate`` need is here; neither keeps a per-family branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ralu_schedule.models import MODEL_INFO


@dataclass(frozen=True)
class Family:
    name: str
    display: str                # how messages name the family
    pipelines: tuple            # text-to-image pipeline class names RALU runs
    backend: str                # "module:Class" under ralu_torch.backends
    siblings: tuple             # class-name prefixes of the family's other pipelines (refused by name)
    variant: Callable           # (read) -> model name; read(subfolder) is a config dict ({} if absent)
    negative: str               # how a negative prompt guides: "true-cfg", "cfg" or "none"
    cfg_threshold: float = 1.0  # "cfg": guidance is on when guidance_scale exceeds this
    guidance: str = ""          # how guidance works, in words
    extra_refused: dict = field(default_factory=dict)   # call arguments refused by name, with why
    video: bool = False         # makes clips (num_frames), written as MP4 by ralu generate
    #: (read) -> the positions per axis of the transformer's rotary table, or None (no limit checked)
    position_limit: Callable | None = None
    alpha: bool = False         # its images are RGBA (the VAE decodes an alpha channel)

    @property
    def models(self) -> tuple:
        return tuple(m for m, info in MODEL_INFO.items() if info.family == self.name)

    def negative_rule(self, guidance_scale, true_cfg) -> str | None:
        """Why a negative prompt would be ignored with these settings, or None if it guides."""
        if self.negative == "none":
            return f"{self.display} takes no negative prompt ({self.guidance})"
        if self.negative == "true-cfg" and not (true_cfg or 0) > 1:
            return (f"a negative prompt on {self.display} needs true_cfg_scale > 1 (true CFG, one more "
                    "transformer call per step)")
        if self.negative == "cfg" and guidance_scale is not None and not guidance_scale > self.cfg_threshold:
            return (f"a negative prompt on {self.display} needs guidance_scale > {self.cfg_threshold:g} "
                    "(classifier-free guidance)")
        return None


def _flux_variant(read) -> str:
    return "flux-dev" if read("transformer").get("guidance_embeds", True) else "flux-schnell"


def _sd3_variant(read) -> str:
    return "sd3-medium"


def _flux2_variant(read) -> str:
    index = read("")
    if index.get("_class_name") != "Flux2KleinPipeline":
        return "flux2-dev"
    size = "9b" if read("transformer").get("joint_attention_dim", 7680) > 7680 else "4b"
    return f"flux2-klein-{size}" if index.get("is_distilled", False) else f"flux2-klein-base-{size}"


def _zimage_variant(read) -> str:
    sched = read("scheduler")
    return "z-image" if float(sched.get("shift", 3.0)) > 3.0 else "z-image-turbo"


def _wan_variant(read) -> str:
    tr = read("transformer")
    if tr.get("in_channels", 16) == 48:
        return "wan2.2-ti2v-5b"
    if read("").get("boundary_ratio") is not None:
        return "wan2.2-t2v-a14b"
    small = (tr.get("num_attention_heads"), tr.get("attention_head_dim"), tr.get("num_layers")) == (12, 128, 30)
    return "wan2.1-t2v-1.3b" if small else "wan2.1-t2v-14b"      # the 1.3B by its published shape


def _hunyuanvideo15_variant(read) -> str:
    size = "720p" if int(read("transformer").get("target_size", 640)) > 640 else "480p"
    guider = read("guider")
    distilled = guider.get("_class_name", "ClassifierFreeGuidance") == "ClassifierFreeGuidance" and \
        float(guider.get("guidance_scale", 6.0)) <= 1.0           # the CFG-distilled checkpoints: guidance 1
    return f"hunyuanvideo1.5-{size}" + ("-distilled" if distilled else "")


FAMILIES = (
    Family("flux", "FLUX.1", ("FluxPipeline",), "flux:FluxBackend", ("Flux",), _flux_variant, negative="true-cfg",
           guidance="FLUX.1-dev's guidance is distilled into the model (guidance_scale); true CFG with a negative "
                    "prompt and true_cfg_scale > 1 adds a second call per step"),
    Family("sd3", "SD3", ("StableDiffusion3Pipeline",), "sd3:SD3Backend", ("StableDiffusion3",), _sd3_variant,
           negative="cfg", guidance="classifier-free guidance with guidance_scale > 1, both halves in one call"),
    Family("flux2", "FLUX.2", ("Flux2Pipeline", "Flux2KleinPipeline"), "flux2:Flux2Backend", ("Flux2",), _flux2_variant,
           negative="none",
           guidance="FLUX.2 [dev]'s guidance is distilled into the model; FLUX.2 [klein] base guides with an empty "
                    "negative prompt when guidance_scale > 1 (a second call per step), the distilled [klein] does not",
           extra_refused={"image": "reference images add conditioning tokens that RALU's low-resolution stages do "
                                   "not model"}),
    Family("qwen-image", "Qwen-Image", ("QwenImagePipeline",), "qwenimage:QwenImageBackend", ("QwenImage",),
           lambda read: "qwen-image", negative="true-cfg",
           guidance="true CFG with a negative prompt and true_cfg_scale > 1 (a second call per step), rescaled per "
                    "token to the conditional velocity's norm"),
    Family("z-image", "Z-Image", ("ZImagePipeline",), "zimage:ZImageBackend", ("ZImage",), _zimage_variant, negative="cfg",
           cfg_threshold=0.0,
           guidance="classifier-free guidance with guidance_scale > 0, both halves in one call (Z-Image-Turbo "
                    "runs without: guidance_scale 0)"),
    Family("chroma", "Chroma", ("ChromaPipeline",), "chroma:ChromaBackend", ("Chroma",), lambda read: "chroma", negative="cfg",
           guidance="classifier-free guidance with guidance_scale > 1, a second call per step"),
    Family("wan", "Wan", ("WanPipeline",), "wan:WanBackend", ("Wan",), _wan_variant, negative="cfg",
           guidance="classifier-free guidance with guidance_scale > 1, a second call per step; Wan 2.2 A14B's "
                    "low-noise expert guides with guidance_scale_2",
           video=True, position_limit=lambda read: int(read("transformer").get("rope_max_seq_len", 1024))),
    Family("hunyuanvideo1.5", "HunyuanVideo 1.5", ("HunyuanVideo15Pipeline",), "hunyuanvideo15:HunyuanVideo15Backend",
           ("HunyuanVideo15",), _hunyuanvideo15_variant, negative="cfg",
           guidance="its guider's classifier-free guidance (ClassifierFreeGuidance, guidance_scale 6: a second call "
                    "per step; 1 on the CFG-distilled checkpoints: one call)",
           video=True),
    Family("qwen-image-2.1", "Qwen-Image 2.1", ("QwenImage21Pipeline",), "qwenimage21:QwenImage21Backend",
           ("QwenImage21",), lambda read: "qwen-image-2.1", negative="true-cfg",
           guidance="no guidance by default; true CFG with a negative prompt and true_cfg_scale > 1 (a second call "
                    "per step)",
           extra_refused={"image": "condition images enter Qwen-Image 2.1's sequence as reference tokens (and its "
                                   "prompt through Qwen3-VL), which RALU's conditioned generation does not run yet",
                          "output_resolution": "it only sets the default height and width (and the condition "
                                               "images' size); give height and width"},
           alpha=True),
)

BY_NAME = {f.name: f for f in FAMILIES}
SUPPORTED = tuple(p for f in FAMILIES for p in f.pipelines)


def read_pipeline_config(pipe):
    """``read(subfolder)`` of a loaded pipeline, for :attr:`Family.variant`: the pipeline's
    own config for ``""``, else its component's (``{}`` where there is none)."""
    def read(subfolder: str) -> dict:
        if not subfolder:
            return {"_class_name": type(pipe).__name__, **dict(pipe.config)}
        component = getattr(pipe, subfolder, None)
        return dict(getattr(component, "config", None) or {})
    return read


def default_preset(family: Family, read) -> str:
    """The preset a run of ``family`` takes without one: its model variant's (``read`` as in
    :attr:`Family.variant`)."""
    from ralu_schedule.presets import DEFAULT_PRESETS

    return DEFAULT_PRESETS[family.variant(read)]


def family_of_pipeline(class_name: str) -> Family | None:
    """The family whose text-to-image pipelines include ``class_name``, else None."""
    for f in FAMILIES:
        if class_name in f.pipelines:
            return f
    return None


#: Words in the class names of pipelines that start from an image or add image conditioning.
IMAGE_CONDITIONED = ("Img2Img", "Inpaint", "Edit", "Control", "Fill", "Kontext", "Redux", "Layered", "Omni", "KV",
                     "PAG", "ImageToVideo", "VideoToVideo", "VACE", "Animate", "S2V")


def sibling_family(class_name: str) -> Family | None:
    """The family an unsupported pipeline belongs to when its name says it is an
    image-conditioned sibling (``QwenImageEditPipeline``, ``Flux2KleinInpaintPipeline``), else
    None (another model altogether, such as ``QwenImage21Pipeline``)."""
    if not any(word in class_name for word in IMAGE_CONDITIONED):
        return None
    matches = [f for f in FAMILIES if any(class_name.startswith(p) for p in f.siblings)]
    return max(matches, key=lambda f: max(len(p) for p in f.siblings if class_name.startswith(p)), default=None)
