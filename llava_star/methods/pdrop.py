"""PyramidDrop (Xing et al., CVPR'25; Cooperx521/PyramidDrop): at rank layers 8, 16, 24,
layer l's own input_layernorm, q_proj (last instruction token) and k_proj + rotary (every
current token) on layer l's input rank the visual tokens; layers >= l see the kept set;
position ids re-indexed after each drop. Each stage halves what is left."""
from ..engine.plan import Plan
from .registry import REFERENCE_TOKENS, Knob, Method, float_list, int_list, positions_knob, register
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
    return Plan("pdrop", None, decoder_stages("pdrop", knobs["layers"], "last_token", _keeps(budget, knobs),
                                              shape.num_layers, ranks="own"), positions=knobs["positions"])


METHOD = register(Method(
    "pdrop", "rank layers 8, 16, 24: layer l's own attention from the last instruction token; halving", build,
    knobs=(Knob("layers", "--pdrop-layers", int_list, (8, 16, 24), "PDrop: layers (default 8,16,24)"),
           Knob("ratios", "--pdrop-ratios", float_list, None, "PDrop: keep ratios (default 0.5,0.25,0.125)",
                sets_final=True, shown="4B,2B,B for --budget B, else 0.5,0.25,0.125"),
           positions_knob("reindex")),
    source="PyramidDrop, Xing et al., CVPR'25"))
