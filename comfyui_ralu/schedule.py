"""What the RALU nodes know about ComfyUI's model and how they turn its fields into a schedule.

Everything here reads ComfyUI objects through the few documented attributes the nodes rely
on (``ModelPatcher.model`` is the ``BaseModel``; ``BaseModel.diffusion_model``,
``model_sampling``, ``model_config``, ``process_latent_in/out``), and every formula comes
from ``ralu_schedule``: presets, layouts, solving, sigmas.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from ralu_schedule import PRESETS, Layout, Schedule, preset, solve
from ralu_schedule.export import sigma_lists
from ralu_schedule.models import family_of
from ralu_schedule.presets import PARAMETERS
from ralu_schedule.shift import shift_map

from .families import FAMILIES, NodeError, resolve

#: What the preset menu offers besides the presets: a layout typed into the node's fields.
CUSTOM = "custom"
#: The most stages whose sigmas the RALU Schedule node hands out one by one.
STAGE_OUTPUTS = 4

__all__ = ["CUSTOM", "STAGE_OUTPUTS", "NodeError", "RALUSchedule", "base_shift", "family_presets", "make_schedule"]


def with_references(model: str) -> bool:
    """Whether ``model`` (a ralu_schedule model name) adds reference images' tokens to every call
    (FLUX.1 Kontext, Qwen-Image-Edit: ``ralu_schedule.cost``'s ``references``), which ComfyUI
    gives as reference latents and the RALU Sampler refuses."""
    from ralu_schedule.cost import MODELS

    return model in MODELS and MODELS[model].references is not None


def family_presets(family: str | None = None) -> list:
    """The presets made for a model family the nodes run (``family``: ralu_schedule's name), or
    for all of them, family by family; not those of models with reference images (:func:`with_references`)."""
    names = [family] if family is not None else [f.name for f in FAMILIES]
    return [n for name in names for n in sorted(n for n, p in PRESETS.items()
                                                if family_of(p.model) == name and not with_references(p.model))]


def base_shift(model, node: str) -> float:
    """``h0``, the shift of the sampler the MODEL runs by itself, read from its model sampling:
    ComfyUI's flow samplings map an unshifted ``u`` to ``sigma(u * multiplier)`` (FLUX.1-dev,
    Chroma, Qwen-Image: ``e^mu u / (1 + (e^mu - 1) u)``, ``mu`` set by ModelSamplingFlux or
    ModelSamplingAuraFlow; SD3 and Wan: a static shift, ModelSamplingSD3), so
    ``h0 = sigma / (1 - sigma)`` at ``u = 1/2``. Checked at two more points against the one
    shift map of ``ralu_schedule``: a model sampling that is not a shifted flow schedule is refused."""
    import torch

    ms = resolve(model, node)[1].model_sampling
    scale = float(getattr(ms, "multiplier", 1.0))

    def sigma(u):
        return float(ms.sigma(torch.tensor(u * scale, dtype=torch.float64)))

    mid = sigma(0.5)
    h0 = mid / (1.0 - mid) if 0.0 < mid < 1.0 else math.nan
    if not math.isfinite(h0) or any(abs(sigma(u) - shift_map(u, h0)) > 1e-5 for u in (0.1, 0.9)):
        raise NodeError(node, f"the MODEL's sampling ({type(ms).__name__}) is not a shifted flow-matching schedule "
                              "sigma = h u / (1 + (h - 1) u), so RALU cannot match its timestep distribution")
    return h0


def parse_numbers(node: str, field: str, text, kind=float) -> tuple:
    """A comma-separated field of numbers (``"2, 3, 5"``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        return tuple(kind(p) for p in parts)
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise NodeError(node, f"{field} must be comma-separated {what}, got {text!r}") from None


@functools.lru_cache(maxsize=64)
def _solved(layout: Layout) -> Schedule:
    return solve(layout, info={"solved": "for the ComfyUI MODEL's shift"})


def make_schedule(model, preset_name: str, parameters: str, node: str, *, steps="", ends="", fractions="",
                  factors="") -> Schedule:
    """The schedule the nodes run: a preset of the MODEL's family (``"default"``/``"authors"``:
    exactly ``ralu_schedule.preset``, as ``ralu_torch.RALU`` runs it; ``"optimised"``: its layout
    solved for the MODEL's own shift), or with ``preset_name == "custom"`` the layout typed into
    ``steps``, ``ends``, ``fractions`` and ``factors``, solved for the MODEL's shift."""
    family = resolve(model, node)[0]
    if parameters not in PARAMETERS:
        raise NodeError(node, f"parameters must be one of {', '.join(PARAMETERS)}, got {parameters!r}")
    mine = family_presets(family.name)
    if preset_name == CUSTOM:
        try:
            layout = Layout(steps=parse_numbers(node, "steps", steps, int), ends=parse_numbers(node, "ends", ends),
                            fractions=parse_numbers(node, "fractions", fractions) or None,
                            factors=parse_numbers(node, "factors", factors, int) or None,
                            base_shift=base_shift(model, node))
        except NodeError:
            raise
        except ValueError as err:
            raise NodeError(node, f"the custom layout is invalid: {err}") from None
        return _solved(layout)
    if preset_name not in PRESETS:
        raise NodeError(node, f"unknown preset {preset_name!r}; the {family.display} presets are "
                              f"{', '.join(mine) or 'none'} (or {CUSTOM!r} for a layout of your own)")
    model_name = PRESETS[preset_name].model
    if family_of(model_name) != family.name:
        raise NodeError(node, f"preset {preset_name!r} was made for {model_name}, but the MODEL is {family.display}; a "
                              f"preset must be of the model's family: use one of {', '.join(mine)} (or {CUSTOM!r})")
    if with_references(model_name):
        raise NodeError(node, f"preset {preset_name!r} was made for {model_name}, whose reference images the RALU "
                              "nodes do not run (ComfyUI's reference latents are refused): use one of "
                              f"{', '.join(mine)} (or {CUSTOM!r})")
    if parameters == "optimised":
        return _solved(PRESETS[preset_name].layout.with_base(base_shift(model, node), None))
    try:
        return preset(preset_name, parameters)
    except ValueError as err:
        raise NodeError(node, str(err)) from None


@dataclass(frozen=True)
class RALUSchedule:
    """The value that travels on a ``RALU_SCHEDULE`` wire: the solved schedule and the sigmas
    that go with it, as ComfyUI's ``SIGMAS`` (1-D float32 tensors)."""

    schedule: Schedule

    @property
    def plan(self):
        return self.schedule.plan

    def stage_sigmas(self, k: int):
        """Stage ``k``'s ``steps + 1`` sigmas, its end included (empty beyond the last stage):
        ``ralu_schedule.export.sigma_lists``, as ComfyUI's SIGMAS."""
        import torch

        lists = sigma_lists(self.schedule)
        return torch.tensor(lists[k] if k < len(lists) else [], dtype=torch.float32)

    def sigmas(self):
        """Every stage's sigmas one after another: what SamplerCustomAdvanced takes with the
        RALU Sampler (it reads the first and last, and the RALU Sampler checks the rest)."""
        import torch

        return torch.cat([self.stage_sigmas(k) for k in range(len(self.plan.stages))])

    def describe(self) -> str:
        lay, s = self.schedule.layout, self.schedule
        info = s.info.get("preset", "custom layout")
        return (f"RALU {info}: steps {list(lay.steps)}, ends {list(lay.ends)}, fractions {list(lay.fractions)}, "
                f"shifts {[round(h, 3) for h in s.shifts]}, c {[round(c, 4) for c in s.correlations]}, "
                f"h0 {lay.base_shift:.3f}")
