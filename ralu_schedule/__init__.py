"""ralu_schedule: the scheduling mathematics of Region-Adaptive Latent Upsampling (RALU).

Shifted timestep distributions, closed-form noise re-injection, NT-matching for any
number of stages, layouts and schedules with JSON export, presets, and an analytic cost
model. Depends on numpy and scipy (sympy only for :func:`derive`); never on torch.
"""

from .cost import MODELS, layout_cost
from .distributions import ShiftedTime
from .grid import PIXELS_PER_TOKEN, token_grid
from .layout import FORMAT, Layout, Plan, Schedule, Stage, Transition, upsample_count
from .matching import Bounds, solve
from .metric import actual_density, js_distance, paper_metric, target_density
from .models import MODEL_INFO, ModelInfo, model_info
from .presets import DEFAULT_PRESETS, EVIDENCE, PRESETS, Preset, get_preset, preset
from .reinjection import (Reinjection, block_noise_beta, max_correlation, nearest_upsampling_matrix,
                          noise_covariance, reinjection, sample_block_noise)
from .shift import SHIFT_RULES, ShiftRule, shift_rule, shift_sigmas, unshift_sigmas


def derive(block_size=None):
    """Symbolic derivation of ``s, a, b`` (imports sympy); see :mod:`ralu_schedule.derivation`."""
    from .derivation import derive as _derive

    return _derive(block_size)


__all__ = [
    "DEFAULT_PRESETS", "EVIDENCE", "FORMAT", "MODELS", "MODEL_INFO", "ModelInfo", "model_info", "PIXELS_PER_TOKEN", "PRESETS", "Plan", "SHIFT_RULES", "Bounds", "Layout", "Preset", "Reinjection", "Schedule",
    "ShiftRule", "ShiftedTime", "Stage", "Transition", "actual_density", "block_noise_beta",
    "derive", "get_preset", "js_distance", "layout_cost", "max_correlation", "nearest_upsampling_matrix", "noise_covariance",
    "paper_metric", "preset", "reinjection", "sample_block_noise", "shift_rule", "shift_sigmas",
    "solve", "target_density", "token_grid", "unshift_sigmas", "upsample_count",
]
__version__ = "0.1.0"
