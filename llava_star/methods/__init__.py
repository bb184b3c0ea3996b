"""Pruning methods by name. Each module registers one `Method`; `MethodConfig` names one
with its knobs and builds the engine's `Plan` for a model.

Adding a method: one module here (its knobs and a builder returning a `Plan`), imported
below, plus its test. See docs/design.md, "Add a method".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..engine.plan import Plan
from . import none, star, fastv, fastervlm, sparsevlm, pdrop, visionzip, random  # noqa: F401  (registers them)
from .registry import REFERENCE_LAYERS, REFERENCE_TOKENS, Knob, Method, Shape, get, knobs_of, names
from .schedule import scale_layer
from .sparsevlm import SCHEDULES as SPARSEVLM_SCHEDULES
from .star import StarConfig

METHODS = names()
# An unknown model's token limit at `from_name` time: counts are checked when a model is known.
_ANY_TOKENS = 1 << 30


@dataclass(frozen=True)
class MethodConfig:
    """A named method with its knobs; `.plan(num_layers)` gives the engine's Plan.

    `budget` is the number of visual tokens the method keeps in the end ("remaining
    tokens"); SparseVLM's budgets are its published schedules. See docs/methods.md.
    """
    name: str = "none"
    budget: Optional[int] = None
    knobs: dict = field(default_factory=dict)

    @classmethod
    def from_name(cls, name: str, budget: Optional[int] = None, **knobs) -> "MethodConfig":
        """Raises ValueError naming the method, knob or budget for anything wrong whatever the
        model; what depends on the model (layers, token counts) is checked when attached."""
        method = get(name)
        own = {k.name for k in knobs_of(name)}
        unknown = sorted(set(knobs) - own)
        if unknown:
            raise ValueError(f"{name} has no knob {', '.join(map(repr, unknown))}; it takes "
                             f"{', '.join(k.name for k in knobs_of(name))}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
            raise ValueError(f"budget must be a positive int, got {budget!r}")
        cfg = cls(name, budget, dict(knobs))
        if method.check is not None:
            method.check(budget, cfg.settings())
        cfg.plan(REFERENCE_LAYERS, _ANY_TOKENS)  # builds: knob types and schedules checked now
        return cfg

    def settings(self) -> dict:
        """Every knob of the method, defaults filled in."""
        return {k.name: self.knobs.get(k.name, k.default) for k in knobs_of(self.name)}

    def plan(self, num_layers: int, max_tokens: int = REFERENCE_TOKENS) -> Plan:
        """The Plan for a model of `num_layers` decoder layers whose images have at most
        `max_tokens` visual tokens."""
        from dataclasses import replace

        settings = self.settings()
        plan = get(self.name).build(self.budget, settings, Shape(num_layers, max_tokens))
        return replace(plan, unit=settings["unit"])


__all__ = ["MethodConfig", "StarConfig", "Method", "Knob", "Shape", "METHODS", "SPARSEVLM_SCHEDULES",
           "REFERENCE_LAYERS", "get", "names", "knobs_of", "scale_layer"]


def plan_for(config, num_layers: int, max_tokens) -> Plan:
    """A StarConfig / MethodConfig / Plan as the Plan for a model of `num_layers` layers, not
    yet validated; `max_tokens(unit)` is the most patch tokens a count may refer to (a host's
    `max_visual_tokens`)."""
    if isinstance(config, Plan):
        return config
    if isinstance(config, MethodConfig):
        return config.plan(num_layers, max_tokens(config.settings()["unit"]))
    if isinstance(config, StarConfig):
        return config.plan(num_layers)
    raise TypeError(f"expected StarConfig, MethodConfig or Plan, got {type(config).__name__}")
