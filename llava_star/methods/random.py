"""The random control: a uniformly random subset of patches before the projector."""
from ..engine.plan import Plan, VisionStage
from .registry import Knob, Method, register


def build(budget, knobs, shape) -> Plan:
    keep = knobs["keep"] if knobs["keep"] is not None else (budget if budget is not None else 58)
    return Plan("random", VisionStage("random", keep), (), knobs["seed"])


METHOD = register(Method(
    "random", "vision stage: a random subset of patches (the control)", build,
    knobs=(Knob("keep", "--visual-token-num", int, None, "random: patches kept (default: --budget, 58)",
                sets_final=True, shown="--budget, else 58"),
           Knob("seed", "--prune-seed", int, 0, "random: seed of the kept subset (default 0)")),
    source="control"))
