"""SparseVLM (Zhang et al., ICML'25): at layers 2, 6, 15, attention from the rater text
tokens (Gumpest/SparseVLMs); budgets are its published schedules."""
from ..engine.plan import Plan
from .registry import Knob, Method, int_list, register
from .schedule import decoder_stages

# tokens kept at layers 2, 6, 15, per budget (the paper's schedules)
SCHEDULES = {192: (300, 200, 110), 128: (303, 110, 36), 64: (66, 30, 17)}


def _schedule(budget, knobs):
    if knobs["schedule"] is not None:
        return tuple(knobs["schedule"])
    return SCHEDULES[budget if budget is not None else 192]


def build(budget, knobs, shape) -> Plan:
    return Plan("sparsevlm", None, decoder_stages("sparsevlm", knobs["layers"], "raters",
                                                  _schedule(budget, knobs), shape.num_layers))


def check(budget, knobs) -> None:
    if budget is not None and budget not in SCHEDULES and knobs["schedule"] is None:
        raise ValueError(f"sparsevlm has published schedules for budgets {sorted(SCHEDULES)}; "
                         f"give --sparsevlm-schedule for {budget}")


METHOD = register(Method(
    "sparsevlm", "decoder layers 2, 6, 15: attention from rater text tokens", build,
    knobs=(Knob("layers", "--sparsevlm-layers", int_list, (2, 6, 15), "SparseVLM: layers (default 2,6,15)"),
           Knob("schedule", "--sparsevlm-schedule", int_list, None,
                "SparseVLM: tokens kept per layer (default: the published schedule of --budget)")),
    budgets=tuple(SCHEDULES), check=check, source="SparseVLM, Zhang et al., ICML'25"))
