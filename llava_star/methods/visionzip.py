"""VisionZip (Yang et al., CVPR'25; dvlab-research/VisionZip): in the CLIP select layer, the
CLS token and the patches the CLS query attends to most (dominant tokens), plus contextual
tokens merged from the other patches by key similarity, all before the projector."""
from ..engine.plan import Plan, VisionStage
from .registry import Knob, Method, register

# published splits (dominant incl. CLS, contextual): 64 -> 54+10, 128 -> 108+20, 192 -> 162+30;
# every other budget keeps their 10/64 share of contextual tokens, rounded
CONTEXTUAL_SHARE = 10 / 64


def split(budget: int):
    contextual = int(round(budget * CONTEXTUAL_SHARE))
    return budget - contextual, contextual


def build(budget, knobs, shape) -> Plan:
    dominant, contextual = split(budget if budget is not None else 64)
    dominant = knobs["dominant"] if knobs["dominant"] is not None else dominant
    contextual = knobs["contextual"] if knobs["contextual"] is not None else contextual
    if dominant < 2:
        raise ValueError(f"visionzip: dominant must be >= 2 (the CLS token and a patch), got {dominant}")
    # the CLS token is one of the dominant tokens (the official code keeps dominant - 1 patches)
    return Plan("visionzip", VisionStage("cls_attention", dominant - 1, merge=contextual, cls_token=True))


METHOD = register(Method(
    "visionzip", "vision stage: CLS + CLS-attention patches (dominant) + contextual tokens merged by key "
                 "similarity", build,
    knobs=(Knob("dominant", "--visionzip-dominant", int, None,
                "VisionZip: dominant tokens, CLS included (default: --budget minus the contextual share)",
                sets_final=True, shown="--budget - contextual, else 54"),
           Knob("contextual", "--visionzip-contextual", int, None,
                "VisionZip: contextual (merged) tokens (default: round(--budget * 10/64); 64 -> 10)",
                sets_final=True, shown="round(--budget * 10/64), else 10")),
    source="VisionZip, Yang et al., CVPR'25"))
