"""The models the core knows, by name: the backend family that runs each, and the step count
its stock pipeline runs by default (the baseline its presets and ``--compare`` are measured
against). The same names key :data:`ralu_schedule.SHIFT_RULES` (timestep schedules) and
:data:`ralu_schedule.cost.MODELS` (FLOPs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str            # the ralu_torch backend family: flux, sd3, flux2, qwen-image, z-image, chroma, wan, ltx2
    default_steps: int     # the stock run: the pipeline's default, or the model card's where it differs
    steps_source: str      # where default_steps comes from
    distilled: bool = False
    frames: int = 1        # video: the stock run's frame count (4k + 1 for Wan); 1 for an image model
    fps: int = 0           # video: the frame rate its clips are made for; 0 for an image model

    @property
    def is_video(self) -> bool:
        return self.fps > 0


MODEL_INFO: dict[str, ModelInfo] = {m.name: m for m in [
    ModelInfo("flux-dev", "flux", 50, "the paper's FLUX.1-dev baseline (FluxPipeline's own default is 28)"),
    ModelInfo("flux-schnell", "flux", 4, "FLUX.1-schnell's model card", distilled=True),
    ModelInfo("sd3-medium", "sd3", 28, "StableDiffusion3Pipeline's default"),
    ModelInfo("sd3.5-medium", "sd3", 28, "StableDiffusion3Pipeline's default"),
    ModelInfo("sd3.5-large", "sd3", 28, "StableDiffusion3Pipeline's default"),
    ModelInfo("flux2-dev", "flux2", 50, "Flux2Pipeline's default"),
    ModelInfo("flux2-klein-4b", "flux2", 4, "FLUX.2 [klein]'s model card (step-distilled)", distilled=True),
    ModelInfo("flux2-klein-9b", "flux2", 4, "FLUX.2 [klein]'s model card (step-distilled)", distilled=True),
    ModelInfo("flux2-klein-base-4b", "flux2", 50, "Flux2KleinPipeline's default"),
    ModelInfo("flux2-klein-base-9b", "flux2", 50, "Flux2KleinPipeline's default"),
    ModelInfo("qwen-image", "qwen-image", 50, "QwenImagePipeline's default"),
    ModelInfo("z-image-turbo", "z-image", 9, "Z-Image-Turbo's model card (9 steps)", distilled=True),
    ModelInfo("z-image", "z-image", 50, "ZImagePipeline's default"),
    ModelInfo("chroma", "chroma", 35, "ChromaPipeline's default"),
    ModelInfo("wan2.1-t2v-1.3b", "wan", 50, "WanPipeline's default (the reference Wan 2.1 sample_steps)",
              frames=81, fps=16),
    ModelInfo("wan2.1-t2v-14b", "wan", 50, "WanPipeline's default (the reference Wan 2.1 sample_steps)",
              frames=81, fps=16),
    ModelInfo("wan2.2-t2v-a14b", "wan", 40, "the reference Wan 2.2 T2V-A14B config's sample_steps (WanPipeline's "
              "own default is 50)", frames=81, fps=16),
    ModelInfo("wan2.2-ti2v-5b", "wan", 50, "WanPipeline's default (the reference TI2V-5B config's sample_steps)",
              frames=121, fps=24),
    *[ModelInfo(f"hunyuanvideo1.5-{size}{kind}", "hunyuanvideo1.5", 50, "HunyuanVideo15Pipeline's default",
                frames=121, fps=24) for size in ("480p", "720p") for kind in ("", "-distilled")],
    ModelInfo("qwen-image-2.1", "qwen-image-2.1", 40, "QwenImage21Pipeline's default (the model's documented 40 "
              "Euler steps)"),
    # image-conditioned (docs/conditioned.md; Wan I2V: WanImageToVideoPipeline)
    ModelInfo("flux-kontext-dev", "flux", 28, "FluxKontextPipeline's default"),
    ModelInfo("qwen-image-edit", "qwen-image", 50, "QwenImageEditPipeline's default"),
    ModelInfo("qwen-image-edit-2509", "qwen-image", 50, "QwenImageEditPlusPipeline's default"),
    ModelInfo("wan2.1-i2v-14b-480p", "wan", 50, "WanImageToVideoPipeline's default", frames=81, fps=16),
    ModelInfo("wan2.1-i2v-14b-720p", "wan", 50, "WanImageToVideoPipeline's default", frames=81, fps=16),
    ModelInfo("wan2.2-i2v-a14b", "wan", 40, "the reference Wan 2.2 I2V-A14B config's sample_steps "
              "(WanImageToVideoPipeline's own default is 50)", frames=81, fps=16),
    ModelInfo("wan2.2-ti2v-5b-i2v", "wan", 50, "WanImageToVideoPipeline's default (the reference TI2V-5B config's "
              "sample_steps)", frames=121, fps=24),
    ModelInfo("ltx-2", "ltx2", 30, "LTX2Pipeline's default (diffusers' LTX-2 guide runs its first stage at 40)",
              frames=121, fps=24),
]}

FAMILIES = tuple(dict.fromkeys(m.family for m in MODEL_INFO.values()))


def model_info(name: str) -> ModelInfo:
    try:
        return MODEL_INFO[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_INFO)}") from None


def family_of(model: str) -> str:
    """The backend family of a model name (``"flux-dev"`` -> ``"flux"``)."""
    return model_info(model).family
