"""FasterVLM (Zhang et al.): keep the patches the CLS query attends to most in the CLIP
select layer, before the projector (Theia-4869/FasterVLM)."""
from ..engine.plan import Plan, VisionStage
from .registry import Knob, Method, register


def build(budget, knobs, shape) -> Plan:
    keep = knobs["keep"] if knobs["keep"] is not None else (budget if budget is not None else 58)
    return Plan("fastervlm", VisionStage("cls_attention", keep))


METHOD = register(Method(
    "fastervlm", "vision stage: CLS attention in the CLIP select layer", build,
    knobs=(Knob("keep", "--visual-token-num", int, None, "FasterVLM: patches kept (default: --budget, 58)",
                sets_final=True, shown="--budget, else 58"),),
    source="FasterVLM, Zhang et al., 2024"))
