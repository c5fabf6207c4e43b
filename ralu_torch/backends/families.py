"""The model families RALU runs, declared once each, without torch (the command line reads
them before loading anything).

A :class:`Family` names its text-to-image pipelines and their backend class, the
image-conditioned pipelines it runs with theirs (``conditioned``), the class-name prefixes of
its other image-conditioned siblings (refused by name; inpainting and ControlNet pipelines with
the reason, :data:`REFUSED`), how its guidance and
negative prompts work, which of the shared command-line flags apply, and how to tell its
models apart from their configs (FLUX.1-dev from schnell, FLUX.2 [klein] distilled from base
and 4B from 9B, Z-Image-Turbo from Z-Image). Everything per family that ``RALU`` and
``ralu generate`` need is here; neither keeps a per-family branch.

A family's ``conditioned`` table names the image-conditioned pipelines RALU does run, each
with its backend and what it takes (:class:`Conditioned`); the rest of its siblings stay
refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ralu_schedule.models import MODEL_INFO


@dataclass(frozen=True)
class Conditioned:
    """An image-conditioned pipeline RALU runs: its backend (``"module:Class"`` under
    ``ralu_torch.backends``, a subclass of the family's) and, for a pipeline that starts from
    its input (img2img, video2video), the argument holding it and how the pipeline cuts its
    grid at a ``strength`` (:data:`ralu_schedule.strength.ROUNDINGS`)."""

    backend: str
    start: str | None = None        # "image" or "video": the argument the run starts from, noised to the strength
    rounding: str = "img2img"


@dataclass(frozen=True)
class Family:
    name: str
    display: str                # how messages name the family
    pipelines: tuple            # pipeline class names RALU runs
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
    #: image-conditioned pipelines RALU runs, by class name (:class:`Conditioned`)
    conditioned: dict = field(default_factory=dict)
    #: the pipeline argument a clip's frame rate is passed as ("" where it only sets the MP4's rate):
    #: LTX-2's frame_rate places its tokens in time and sets the audio's length
    fps_argument: str = ""

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
    if read("").get("_class_name") == "FluxKontextPipeline":
        return "flux-kontext-dev"
    return "flux-dev" if read("transformer").get("guidance_embeds", True) else "flux-schnell"


def _qwen_variant(read) -> str:
    return {"QwenImageEditPipeline": "qwen-image-edit",
            "QwenImageEditPlusPipeline": "qwen-image-edit-2509"}.get(read("").get("_class_name"), "qwen-image")


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
    if read("").get("_class_name") == "WanImageToVideoPipeline":
        return _wan_i2v_variant(read, tr)
    if tr.get("in_channels", 16) == 48:
        return "wan2.2-ti2v-5b"
    if read("").get("boundary_ratio") is not None:
        return "wan2.2-t2v-a14b"
    small = (tr.get("num_attention_heads"), tr.get("attention_head_dim"), tr.get("num_layers")) == (12, 128, 30)
    return "wan2.1-t2v-1.3b" if small else "wan2.1-t2v-14b"      # the 1.3B by its published shape


def _wan_i2v_variant(read, tr) -> str:
    """WanImageToVideoPipeline's models: TI2V-5B (expand_timesteps, 48 channels), Wan 2.2 I2V A14B (two
    experts), else Wan 2.1 I2V 14B, whose 480P and 720P checkpoints share one configuration: the 480p model,
    the pipeline's default size (its 720p preset is named by hand)."""
    if read("").get("expand_timesteps") or tr.get("in_channels") == 48:
        return "wan2.2-ti2v-5b-i2v"
    if read("").get("boundary_ratio") is not None:
        return "wan2.2-i2v-a14b"
    return "wan2.1-i2v-14b-480p"


FAMILIES = (
    Family("flux", "FLUX.1", ("FluxPipeline",), "flux:FluxBackend", ("Flux",), _flux_variant,
           negative="true-cfg",
           guidance="FLUX.1-dev's guidance is distilled into the model (guidance_scale); true CFG with a negative "
                    "prompt and true_cfg_scale > 1 adds a second call per step",
           conditioned={"FluxImg2ImgPipeline": Conditioned("flux:FluxImg2ImgBackend", start="image"),
                        "FluxFillPipeline": Conditioned("flux:FluxFillBackend"),
                        "FluxControlPipeline": Conditioned("flux:FluxControlBackend"),
                        "FluxKontextPipeline": Conditioned("flux:FluxKontextBackend")}),
    Family("sd3", "SD3", ("StableDiffusion3Pipeline",), "sd3:SD3Backend", ("StableDiffusion3",), _sd3_variant,
           negative="cfg", guidance="classifier-free guidance with guidance_scale > 1, both halves in one call",
           conditioned={"StableDiffusion3Img2ImgPipeline": Conditioned("sd3:SD3Img2ImgBackend", start="image")}),
    Family("flux2", "FLUX.2", ("Flux2Pipeline", "Flux2KleinPipeline"), "flux2:Flux2Backend", ("Flux2",), _flux2_variant,
           negative="none",
           guidance="FLUX.2 [dev]'s guidance is distilled into the model; FLUX.2 [klein] base guides with an empty "
                    "negative prompt when guidance_scale > 1 (a second call per step), the distilled [klein] does not"),
    Family("qwen-image", "Qwen-Image", ("QwenImagePipeline",),
           "qwenimage:QwenImageBackend", ("QwenImage",), _qwen_variant, negative="true-cfg",
           guidance="true CFG with a negative prompt and true_cfg_scale > 1 (a second call per step), rescaled per "
                    "token to the conditional velocity's norm",
           conditioned={"QwenImageImg2ImgPipeline": Conditioned("qwenimage:QwenImageImg2ImgBackend", start="image"),
                        "QwenImageEditPipeline": Conditioned("qwenimage:QwenImageEditBackend"),
                        "QwenImageEditPlusPipeline": Conditioned("qwenimage:QwenImageEditBackend")}),
    Family("z-image", "Z-Image", ("ZImagePipeline",), "zimage:ZImageBackend", ("ZImage",), _zimage_variant, negative="cfg",
           cfg_threshold=0.0,
           guidance="classifier-free guidance with guidance_scale > 0, both halves in one call (Z-Image-Turbo "
                    "runs without: guidance_scale 0)",
           conditioned={"ZImageImg2ImgPipeline": Conditioned("zimage:ZImageImg2ImgBackend", start="image")}),
    Family("chroma", "Chroma", ("ChromaPipeline",), "chroma:ChromaBackend", ("Chroma",), lambda read: "chroma", negative="cfg",
           guidance="classifier-free guidance with guidance_scale > 1, a second call per step",
           conditioned={"ChromaImg2ImgPipeline": Conditioned("chroma:ChromaImg2ImgBackend", start="image")}),
    Family("wan", "Wan", ("WanPipeline",), "wan:WanBackend", ("Wan",), _wan_variant, negative="cfg",
           guidance="classifier-free guidance with guidance_scale > 1, a second call per step; Wan 2.2 A14B's "
                    "low-noise expert guides with guidance_scale_2",
           video=True, position_limit=lambda read: int(read("transformer").get("rope_max_seq_len", 1024)),
           conditioned={"WanVideoToVideoPipeline": Conditioned("wan:WanVideoToVideoBackend", start="video",
                                                                rounding="video2video"),
                        "WanImageToVideoPipeline": Conditioned("wan:WanImageToVideoBackend")}),
    Family("ltx2", "LTX-2", ("LTX2Pipeline",), "ltx2:LTX2Backend", ("LTX2",), lambda read: "ltx-2", negative="cfg",
           guidance="up to three calls a step, each denoising video and audio: classifier-free guidance in one call "
                    "of both halves (guidance_scale or audio_guidance_scale > 1), spatio-temporal guidance "
                    "(stg_scale > 0) and modality guidance (modality_scale > 1, the audio-video cross-attention off); "
                    "LTX2Pipeline's defaults turn all three on",
           extra_refused={"audio_latents": "LTX2Pipeline reads them as clean audio latents it re-noises by noise_scale "
                                           "(its two-stage refinement); RALU draws the audio's noise itself"},
           video=True, fps_argument="frame_rate"),
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


def backend_path(class_name: str) -> str | None:
    """``"module:Class"`` of the backend that runs pipeline ``class_name`` (text-to-image or
    image-conditioned), else None."""
    for f in FAMILIES:
        if class_name in f.pipelines:
            return f.backend
        if class_name in f.conditioned:
            return f.conditioned[class_name].backend
    return None


def conditioned_pipeline(class_name: str) -> tuple | None:
    """``(family, Conditioned)`` of an image-conditioned pipeline RALU runs, else None."""
    for f in FAMILIES:
        if class_name in f.conditioned:
            return f, f.conditioned[class_name]
    return None


def family_of_pipeline(class_name: str) -> Family | None:
    """The family whose pipelines include ``class_name``, else None."""
    for f in FAMILIES:
        if class_name in f.pipelines:
            return f
    return None


#: Words in the class names of pipelines that start from an image or add image conditioning.
IMAGE_CONDITIONED = ("Img2Img", "Inpaint", "Edit", "Control", "Fill", "Kontext", "Redux", "Layered", "Omni", "KV",
                     "PAG", "ImageToVideo", "VideoToVideo", "VACE", "Animate", "S2V")


#: Kinds of image-conditioned pipelines that stay refused, by a word of their class names, with why.
REFUSED = {
    "ControlNet": "a ControlNet is a second network whose residuals are added to the transformer's blocks token by "
                  "token; RALU would have to run it on every stage's mixed-resolution tokens, which it does not. "
                  "FLUX.1 Canny and Depth run as FluxControlPipeline (the control image's latents concatenated to "
                  "the input)",
    "Inpaint": "an inpainting pipeline pastes the source image, noised with its first noise to each step's level, "
               "back outside the mask after every step; RALU re-draws noise at each transition and runs coarse "
               "stages, where neither that noise nor the pasted latents exist. FLUX.1 Fill runs as FluxFillPipeline "
               "(the mask and masked image are model inputs)",
}


def refusal(class_name: str) -> str | None:
    """Why a pipeline of a refused kind (:data:`REFUSED`) does not run, else None."""
    return next((why for word, why in REFUSED.items() if word in class_name), None)


def sibling_family(class_name: str) -> Family | None:
    """The family an unsupported pipeline belongs to when its name says it is an
    image-conditioned sibling (``QwenImageEditPipeline``, ``Flux2KleinInpaintPipeline``), else
    None (another model altogether, such as ``QwenImage21Pipeline``)."""
    if not any(word in class_name for word in IMAGE_CONDITIONED):
        return None
    matches = [f for f in FAMILIES if any(class_name.startswith(p) for p in f.siblings)]
    return max(matches, key=lambda f: max(len(p) for p in f.siblings if class_name.startswith(p)), default=None)
