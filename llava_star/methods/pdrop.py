"""PyramidDrop (Xing et al., CVPR'25): at layers 8, 16, 24, attention from the last
instruction token; each stage halves what is left (Cooperx521/PyramidDrop)."""
from ..engine.plan import Plan
from .registry import REFERENCE_TOKENS, Knob, Method, float_list, int_list, register
from .schedule import decoder_stages


def _keeps(budget, knobs):
    if knobs["ratios"] is not None or budget is None:
        return tuple(knobs["ratios"] or (0.5, 0.25, 0.125))
    # the published halving shape, as counts: the last stage keeps the budget; earlier stages
    # ask for at most LLaVA-1.5's 576 (or the budget, above that), so they never ask for
    # more tokens than exist there
    n, cap = len(knobs["layers"]), max(REFERENCE_TOKENS, budget)
    return tuple(min(cap, budget * 2 ** (n - 1 - i)) for i in range(n))


def build(budget, knobs, shape) -> Plan:
    if budget is not None and budget > shape.max_tokens:
        raise ValueError(f"pdrop: --budget {budget} exceeds the {shape.max_tokens} visual tokens an image has")
    return Plan("pdrop", None, decoder_stages("pdrop", knobs["layers"], "last_token",
                                              _keeps(budget, knobs), shape.num_layers))


METHOD = register(Method(
    "pdrop", "decoder layers 8, 16, 24: attention from the last instruction token; halving", build,
    knobs=(Knob("layers", "--pdrop-layers", int_list, (8, 16, 24), "PDrop: layers (default 8,16,24)"),
           Knob("ratios", "--pdrop-ratios", float_list, None, "PDrop: keep ratios (default 0.5,0.25,0.125)",
                sets_final=True)),
    source="PyramidDrop, Xing et al., CVPR'25"))
