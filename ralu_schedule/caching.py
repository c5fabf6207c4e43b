"""Step caches with a fixed pattern, for the cost model (torch-free).

A temporal cache reuses or extrapolates the transformer's work between steps. Where the
pattern of full and predicted steps is fixed, the cost model can predict it:

- :class:`TaylorSeerPolicy`: diffusers' ``TaylorSeerCacheConfig`` rule. Step ``j`` of a
  cache's life (0-based) runs the model fully when ``j < warmup``, or when
  ``(j - warmup - 1) % interval == 0``, or (``cooldown`` set) when ``j >= cooldown``; the
  other steps are predicted by a Taylor expansion of order ``order`` (which costs no
  transformer work, so the order does not change the FLOPs).

Inside RALU a cache's life is one stage (its state is reset at each transition, where the
token count changes), so the pattern restarts in every stage. A predicted step costs
``predicted_cost`` of a full one: 0 in the paper's accounting, which counts Taylor
prediction as free; diffusers' default TaylorSeer hooks predict the attention layers only,
and ``ralu_torch`` reports the fraction it measures.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import check_finite, check_positive_int


@dataclass(frozen=True, kw_only=True)
class TaylorSeerPolicy:
    interval: int = 5
    warmup: int = 3
    cooldown: int | None = None
    order: int = 1
    predicted_cost: float = 0.0

    def __post_init__(self):
        check_positive_int("interval", self.interval)
        check_positive_int("warmup", self.warmup, minimum=0)
        check_positive_int("order", self.order)
        if self.cooldown is not None:
            check_positive_int("cooldown", self.cooldown, minimum=0)
        cost = check_finite("predicted_cost", self.predicted_cost)
        if not 0.0 <= cost <= 1.0:
            raise ValueError(f"predicted_cost must lie in [0, 1] (a fraction of a full step), got {cost:g}")

    def full_steps(self, steps: int) -> tuple:
        """Indices (0-based) of the steps of a ``steps``-step stage that run the model fully."""
        return tuple(j for j in range(steps) if j < self.warmup or (j - self.warmup - 1) % self.interval == 0
                     or (self.cooldown is not None and j >= self.cooldown))

    def step_costs(self, steps: int) -> list:
        """Each step's cost as a fraction of a full step."""
        full = set(self.full_steps(steps))
        return [1.0 if j in full else self.predicted_cost for j in range(steps)]


#: Names accepted by :func:`parse_cache` and ``ralu-schedule cost --cache``.
CACHES = {"taylorseer": TaylorSeerPolicy}


def parse_cache(text: str):
    """``"taylorseer:interval=3,warmup=3"`` -> a policy (the command line's form)."""
    name, _, args = str(text).partition(":")
    if name not in CACHES:
        raise ValueError(f"cache must be one of {', '.join(CACHES)} (with options as NAME:key=value,...), got {name!r}")
    cls = CACHES[name]
    fields = {f for f in cls.__dataclass_fields__}
    kwargs = {}
    for item in filter(None, args.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in fields:
            raise ValueError(f"{name} options are {', '.join(sorted(fields))} as key=value, got {item!r}")
        try:
            kwargs[key] = None if value == "none" else (float(value) if key == "predicted_cost" else int(value))
        except ValueError:
            raise ValueError(f"{name} option {key} needs a number, got {value!r}") from None
    return cls(**kwargs)
