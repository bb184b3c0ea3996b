"""FastV (Chen et al., ECCV'24): at layer K, keep the visual tokens the last prompt token
attends to most in layer K-1 (pkunlp-icler/FastV)."""
from ..engine.plan import DecoderStage, Plan
from .registry import Knob, Method, count, positions_knob, register


def build(budget, knobs, shape) -> Plan:
    keep = knobs["keep"] if knobs["keep"] is not None else (budget if budget is not None else 0.5)
    return Plan("fastv", None, (DecoderStage(knobs["k"], "last_token", keep),), positions=knobs["positions"])


METHOD = register(Method(
    "fastv", "decoder layer K (default 2): attention from the last prompt token in layer K-1", build,
    knobs=(Knob("k", "--fastv-k", int, 2, "FastV: layer K (default 2)"),
           Knob("keep", "--fastv-keep", count, None, "FastV: tokens kept, count or ratio (default: --budget, 0.5)",
                sets_final=True, shown="--budget, else 0.5"),
           positions_knob("original")),
    source="FastV, Chen et al., ECCV'24"))
