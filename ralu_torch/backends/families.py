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
class Input:
    """A file an image-conditioned pipeline takes, as ``ralu generate`` and ``ralu eval`` take it:
    the flag ``--KEY`` (``_`` written ``-``) and a prompts file's JSON key ``"KEY"``, read and
    checked before any weights load, handed to the pipeline's call argument ``argument``
    (:mod:`ralu_torch.generation.inputs`)."""

    argument: str                       # the pipeline's call argument
    key: str = ""                       # the flag and prompts-file key (default: the argument)
    kind: str = "image"                 # "image" (read as RGB), "mask" (grey, the image's size) or "video" (a clip)
    required: bool | Callable = True    # or (read) -> bool, where the model's configs decide
    refused: Callable | None = None     # (read) -> why this model takes none (None: it takes one)
    one: bool = False                   # one for the whole call (not one per generated image)
    help: str = ""                      # what it is, for --help

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", self.argument)

    def needed(self, read) -> bool:
        return self.required(read) if callable(self.required) else self.required


@dataclass(frozen=True)
class Conditioned:
    """An image-conditioned pipeline RALU runs: its backend (``"module:Class"`` under
    ``ralu_torch.backends``, a subclass of the family's); for a pipeline that starts from its
    input (img2img, video2video), the argument holding it and how the pipeline cuts its grid at
    a ``strength`` (:data:`ralu_schedule.strength.ROUNDINGS`); the files it takes on the command
    line (``inputs``, :class:`Input`), whether it resizes them to the run's size (Z-Image img2img
    runs at its image's own), the size it gives its output where none is given (``size``: absent,
    its first file's size; else ``size(read, width, height)`` of a first file of ``width x height``
    returns ``(height, width)``, or None for the model's default size), and the modules its call
    needs that diffusers does not (``requires``: Wan's image- and video-conditioned pipelines clean
    every prompt with ftfy, unguarded, in diffusers 0.42.1)."""

    backend: str
    start: str | None = None        # "image" or "video": the argument the run starts from, noised to the strength
    rounding: str = "img2img"
    inputs: tuple = ()
    resizes: bool = True
    size: Callable | None = None
    rescales: Callable | None = None    # (read, height, width) -> the output size the call makes of a size given
    requires: tuple = ()


#: The file inputs of the pipelines, shared by the table below (``Input.help`` is what --help says).
START_IMAGE = Input("image", help="the image to start from")
START_VIDEO = Input("video", kind="video", help="the clip to start from (an MP4)")
#: An img2img pipeline's entry: it starts from ``image=``, noised to its strength.
IMG2IMG = dict(start="image", inputs=(START_IMAGE,))
#: An editing pipeline's reference image (FLUX.1 Kontext's is optional: without one it makes an image from text).
EDIT_IMAGE = Input("image", help="the image to edit")
EDIT_IMAGE_OPTIONAL = Input("image", required=False, help="the image to edit")


def _kontext_size(read, width: int, height: int) -> None:
    """FLUX.1 Kontext's output size does not follow its image: it is ``height x width`` (the model's
    default where not given) rescaled to ``max_area`` pixels (:func:`max_area_size`)."""
    return None


def max_area_size(height: int, width: int, max_area: float, multiple: int) -> tuple:
    """``(height, width)`` rescaled to ``max_area`` pixels at its aspect ratio, each side floored to
    a multiple of ``multiple``: FLUX.1 Kontext's output size (``FluxKontextBackend.call_size``; and
    ``ralu generate``'s check of a size given, before loading)."""
    aspect_ratio = width / height
    return (round((max_area / aspect_ratio) ** 0.5) // multiple * multiple,
            round((max_area * aspect_ratio) ** 0.5) // multiple * multiple)


def _kontext_rescaled(read, height: int, width: int) -> tuple:
    """The size FLUX.1 Kontext's call makes of ``height x width`` (its default ``max_area``, its VAE's
    multiple), from the model's configs."""
    import inspect

    from diffusers import FluxKontextPipeline

    max_area = inspect.signature(FluxKontextPipeline.__call__).parameters["max_area"].default
    multiple = 2 ** (len(read("vae").get("block_out_channels", [0] * 4)) - 1) * 2
    return max_area_size(height, width, max_area, multiple)


def _qwen_edit_size(read, width: int, height: int) -> tuple:
    """Qwen-Image-Edit's (and Edit Plus's) output size for an image of ``width x height``: about
    ``VAE_IMAGE_SIZE`` (1024 x 1024) pixels at its aspect ratio, by the pipeline module's own
    ``calculate_dimensions``, floored to the pipeline's multiple (twice its VAE's downsampling)."""
    import importlib

    name = read("").get("_class_name")
    module = importlib.import_module("diffusers.pipelines.qwenimage." + (
        "pipeline_qwenimage_edit_plus" if name == "QwenImageEditPlusPipeline" else "pipeline_qwenimage_edit"))
    w, h = module.calculate_dimensions(getattr(module, "VAE_IMAGE_SIZE", 1024 * 1024), width / height)[:2]
    multiple = 2 ** len(read("vae").get("temperal_downsample", [False, True, True])) * 2
    return h // multiple * multiple, w // multiple * multiple


def _wan_last_image(read) -> str | None:
    """Why a WanImageToVideoPipeline model takes no last frame (as its backend refuses one), or None."""
    if read("").get("expand_timesteps"):
        return "Wan 2.2 TI2V conditions its clip on the first frame only (expand_timesteps)"
    tr = read("transformer")
    if tr.get("image_dim") is not None and tr.get("pos_embed_seq_len") is None:
        return ("this Wan 2.1 I2V model's image embedder takes one image's CLIP tokens; a last frame needs the "
                "first-last-frame model (Wan 2.1 FLF2V)")
    return None


def _wan_flf2v(read) -> bool:
    """Wan 2.1 FLF2V (an image embedder with positions for two images' CLIP tokens) needs a last frame."""
    tr = read("transformer")
    return tr.get("image_dim") is not None and tr.get("pos_embed_seq_len") is not None


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
    #: runs under diffusers' context parallelism (its transformer has a ``_cp_plan``; :mod:`ralu_torch.parallel`)
    context_parallel: bool = False
    #: guides with separate transformer calls, which CFG parallelism puts on two ranks
    cfg_parallel: bool = False
    alpha: bool = False         # its images are RGBA (the VAE decodes an alpha channel)
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


def _hunyuanvideo15_variant(read) -> str:
    size = "720p" if int(read("transformer").get("target_size", 640)) > 640 else "480p"
    guider = read("guider")
    distilled = guider.get("_class_name", "ClassifierFreeGuidance") == "ClassifierFreeGuidance" and \
        float(guider.get("guidance_scale", 6.0)) <= 1.0           # the CFG-distilled checkpoints: guidance 1
    return f"hunyuanvideo1.5-{size}" + ("-distilled" if distilled else "")


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
           conditioned={"FluxImg2ImgPipeline": Conditioned("flux:FluxImg2ImgBackend", **IMG2IMG),
                        "FluxFillPipeline": Conditioned("flux:FluxFillBackend", inputs=(
                            Input("image", help="the image to fill"),
                            Input("mask_image", "mask", kind="mask", help="the mask (white: the region to fill)"))),
                        "FluxControlPipeline": Conditioned("flux:FluxControlBackend", inputs=(
                            Input("control_image", help="the control image (a Canny or depth map)"),)),
                        "FluxKontextPipeline": Conditioned("flux:FluxKontextBackend", inputs=(EDIT_IMAGE_OPTIONAL,),
                                                           size=_kontext_size, rescales=_kontext_rescaled)},
           context_parallel=True, cfg_parallel=True),
    Family("sd3", "SD3", ("StableDiffusion3Pipeline",), "sd3:SD3Backend", ("StableDiffusion3",), _sd3_variant,
           negative="cfg", guidance="classifier-free guidance with guidance_scale > 1, both halves in one call",
           conditioned={"StableDiffusion3Img2ImgPipeline": Conditioned("sd3:SD3Img2ImgBackend", **IMG2IMG)}),
    Family("flux2", "FLUX.2", ("Flux2Pipeline", "Flux2KleinPipeline"), "flux2:Flux2Backend", ("Flux2",), _flux2_variant,
           negative="none",
           guidance="FLUX.2 [dev]'s guidance is distilled into the model; FLUX.2 [klein] base guides with an empty "
                    "negative prompt when guidance_scale > 1 (a second call per step), the distilled [klein] does not",
           context_parallel=True, cfg_parallel=True),
    Family("qwen-image", "Qwen-Image", ("QwenImagePipeline",),
           "qwenimage:QwenImageBackend", ("QwenImage",), _qwen_variant, negative="true-cfg",
           guidance="true CFG with a negative prompt and true_cfg_scale > 1 (a second call per step), rescaled per "
                    "token to the conditional velocity's norm",
           conditioned={"QwenImageImg2ImgPipeline": Conditioned("qwenimage:QwenImageImg2ImgBackend", **IMG2IMG),
                        "QwenImageEditPipeline": Conditioned("qwenimage:QwenImageEditBackend", inputs=(EDIT_IMAGE,),
                                                             size=_qwen_edit_size),
                        "QwenImageEditPlusPipeline": Conditioned("qwenimage:QwenImageEditBackend", inputs=(EDIT_IMAGE,),
                                                                 size=_qwen_edit_size)},
           context_parallel=True, cfg_parallel=True),
    Family("z-image", "Z-Image", ("ZImagePipeline",), "zimage:ZImageBackend", ("ZImage",), _zimage_variant, negative="cfg",
           cfg_threshold=0.0,
           guidance="classifier-free guidance with guidance_scale > 0, both halves in one call (Z-Image-Turbo "
                    "runs without: guidance_scale 0)",
           conditioned={"ZImageImg2ImgPipeline": Conditioned("zimage:ZImageImg2ImgBackend", **IMG2IMG,
                                                              resizes=False)}),
    Family("chroma", "Chroma", ("ChromaPipeline",), "chroma:ChromaBackend", ("Chroma",), lambda read: "chroma", negative="cfg",
           guidance="classifier-free guidance with guidance_scale > 1, a second call per step",
           conditioned={"ChromaImg2ImgPipeline": Conditioned("chroma:ChromaImg2ImgBackend", **IMG2IMG)},
           cfg_parallel=True),
    Family("wan", "Wan", ("WanPipeline",), "wan:WanBackend", ("Wan",), _wan_variant, negative="cfg",
           guidance="classifier-free guidance with guidance_scale > 1, a second call per step; Wan 2.2 A14B's "
                    "low-noise expert guides with guidance_scale_2",
           video=True, position_limit=lambda read: int(read("transformer").get("rope_max_seq_len", 1024)),
           conditioned={"WanVideoToVideoPipeline": Conditioned("wan:WanVideoToVideoBackend", start="video",
                                                                rounding="video2video", inputs=(START_VIDEO,),
                                                                requires=("ftfy",)),
                        "WanImageToVideoPipeline": Conditioned("wan:WanImageToVideoBackend", requires=("ftfy",),
                                                               inputs=(
                            Input("image", one=True, help="the clip's first frame"),
                            Input("last_image", one=True, required=_wan_flf2v, refused=_wan_last_image,
                                  help="the clip's last frame (Wan 2.1 FLF2V)")))},
           context_parallel=True, cfg_parallel=True),
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
    Family("ltx2", "LTX-2", ("LTX2Pipeline",), "ltx2:LTX2Backend", ("LTX2",), lambda read: "ltx-2", negative="cfg",
           guidance="up to three calls a step, each denoising video and audio: classifier-free guidance in one call "
                    "of both halves (guidance_scale or audio_guidance_scale > 1), spatio-temporal guidance "
                    "(stg_scale > 0) and modality guidance (modality_scale > 1, the audio-video cross-attention off); "
                    "LTX2Pipeline's defaults turn all three on",
           extra_refused={"audio_latents": "LTX2Pipeline reads them as clean audio latents it re-noises by noise_scale "
                                           "(its two-stage refinement); RALU draws the audio's noise itself"},
           video=True, fps_argument="frame_rate"),
)

def no_context_parallel(family, transformer: str = "") -> str:
    """Why ``family`` does not run under context parallelism."""
    which = f" ({transformer})" if transformer else ""
    return (f"{family.display} cannot run under context parallelism: its diffusers transformer{which} has no "
            "context-parallel plan (_cp_plan), so diffusers does not split its sequence across ranks. RALU runs "
            f"context parallelism for {', '.join(f.display for f in FAMILIES if f.context_parallel)}")


def no_cfg_parallel(family) -> str:
    """Why ``family`` does not take CFG parallelism."""
    return (f"{family.display} cannot split its guidance across ranks: {family.guidance}. CFG parallelism runs the "
            "two branches of a family that guides with separate calls: "
            f"{', '.join(f.display for f in FAMILIES if f.cfg_parallel)}")


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


def inputs_of(class_name: str) -> tuple:
    """The files pipeline ``class_name`` takes on the command line (:class:`Input`; empty for a
    text-to-image pipeline)."""
    found = conditioned_pipeline(class_name)
    return found[1].inputs if found is not None else ()


def input_flags() -> dict:
    """Every file input of the table: ``{key: [(pipeline class name, Input), ...]}`` in the
    order the table names them; ``ralu generate`` and ``ralu eval`` have a flag for each."""
    out = {}
    for f in FAMILIES:
        for name, c in f.conditioned.items():
            for i in c.inputs:
                out.setdefault(i.key, []).append((name, i))
    return out


def strength_pipelines() -> tuple:
    """The pipelines that take ``strength`` (they start from their input): ``--strength`` is theirs."""
    return tuple(name for f in FAMILIES for name, c in f.conditioned.items() if c.start)


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
