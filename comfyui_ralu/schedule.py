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
from ralu_schedule.models import family_of
from ralu_schedule.presets import PARAMETERS
from ralu_schedule.shift import shift_map

#: The model family the nodes run (ralu_schedule's family names).
FAMILY = "flux"
#: What the preset menu offers besides the presets: a layout typed into the node's fields.
CUSTOM = "custom"
#: The most stages whose sigmas the RALU Schedule node hands out one by one.
STAGE_OUTPUTS = 4


class NodeError(ValueError):
    """Bad input inside a graph: the message names the node and the rule (ComfyUI shows it)."""

    def __init__(self, node: str, rule: str):
        super().__init__(f"{node}: {rule}")
        self.node, self.rule = node, rule


def family_presets() -> list:
    """The presets made for FLUX.1 (dev and schnell)."""
    return sorted(n for n, p in PRESETS.items() if family_of(p.model) == FAMILY)


def flux_model(model, node: str):
    """ComfyUI's ``BaseModel`` of ``model`` (a ``ModelPatcher`` or the model itself), checked
    to run ComfyUI's own FLUX.1 forward on a 16-channel latent; a ``NodeError`` otherwise."""
    import comfy.ldm.flux.model
    import comfy.model_base

    base = getattr(model, "model", model)
    net = getattr(base, "diffusion_model", None)
    net = getattr(net, "_orig_mod", net)                  # torch.compile keeps the module it wraps here
    name = type(base).__name__
    if isinstance(base, comfy.model_base.Chroma) or not isinstance(base, comfy.model_base.Flux) \
            or not isinstance(net, comfy.ldm.flux.model.Flux):
        raise NodeError(node, f"the MODEL is {name} ({type(net).__name__}); the RALU nodes run FLUX.1 "
                              "(dev or schnell) through ComfyUI's FLUX model only")
    unet = getattr(getattr(base, "model_config", None), "unet_config", {}) or {}
    channels = unet.get("in_channels", 16)
    if channels != unet.get("out_channels", 16):
        raise NodeError(node, f"the MODEL takes {channels} input channels (a FLUX Fill, Depth or Canny model that "
                              "concatenates an image to the latent); RALU's low-resolution stages run plain "
                              "text-to-image FLUX.1 only")
    return base


def base_shift(model, node: str) -> float:
    """``h0``, the shift of the sampler the MODEL runs by itself, read from its model sampling:
    ComfyUI's FLUX sampling maps an unshifted ``u`` to ``sigma(u * multiplier)`` (FLUX.1-dev:
    ``e^mu u / (1 + (e^mu - 1) u)``, ``mu`` set by ModelSamplingFlux; schnell: a static shift), so
    ``h0 = sigma / (1 - sigma)`` at ``u = 1/2``. Checked at two more points against the one
    shift map of ``ralu_schedule``: a model sampling that is not a shifted flow schedule is refused."""
    import torch

    ms = flux_model(model, node).model_sampling
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
    """The schedule the nodes run: a FLUX preset (``"default"``/``"authors"``: exactly
    ``ralu_schedule.preset``, as ``ralu_torch.RALU`` runs it; ``"optimised"``: its layout solved
    for the MODEL's own shift), or with ``preset_name == "custom"`` the layout typed into
    ``steps``, ``ends``, ``fractions`` and ``factors``, solved for the MODEL's shift."""
    flux_model(model, node)
    if parameters not in PARAMETERS:
        raise NodeError(node, f"parameters must be one of {', '.join(PARAMETERS)}, got {parameters!r}")
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
        raise NodeError(node, f"unknown preset {preset_name!r}; the FLUX presets are "
                              f"{', '.join(family_presets())} (or {CUSTOM!r} for a layout of your own)")
    model_name = PRESETS[preset_name].model
    if family_of(model_name) != FAMILY:
        raise NodeError(node, f"preset {preset_name!r} was made for {model_name}, but the MODEL is FLUX.1; a preset "
                              f"must be of the model's family: use one of {', '.join(family_presets())}")
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
        """Stage ``k``'s ``steps + 1`` sigmas, its end included (empty beyond the last stage)."""
        import torch

        stages = self.plan.stages
        values = stages[k].sigmas if k < len(stages) else []
        return torch.tensor([float(s) for s in values], dtype=torch.float32)

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
