"""No pruning: the engine's own layer loop with every visual token (stock llava's answers)."""
from ..engine.plan import Plan
from .registry import Method, register

METHOD = register(Method("none", "no pruning (the engine's layer loop, every visual token)",
                         build=lambda budget, knobs, shape: Plan("none")))
