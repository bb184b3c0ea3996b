"""SparseVLM (Zhang et al., ICML'25; Gumpest/SparseVLMs v1/v1.5): raters chosen once from the
LLM input embeddings (text tokens after the image whose softmax relevance to the visual
tokens is above the mean); at ranking layers 2, 6, 15 the layer runs on every current token
and its own attention from the raters ranks the visual tokens; its OUTPUT is pruned, and the
dropped tokens are recycled (the top 30% clustered into merged tokens that stay and compete
later); position ids re-indexed. Budgets are its published schedules."""
from ..engine.plan import Plan
from .registry import Knob, Method, int_list, positions_knob, register
from .schedule import decoder_stages

# tokens kept after ranking layers 2, 6, 15, per budget (the v1.5 schedules)
SCHEDULES = {192: (300, 200, 110), 128: (303, 110, 36), 64: (66, 30, 17)}


def _schedule(budget, knobs):
    if knobs["schedule"] is not None:
        return tuple(knobs["schedule"])
    return SCHEDULES[budget if budget is not None else 192]


def build(budget, knobs, shape) -> Plan:
    # ranking layer l (scaled to the model) prunes its output: the stage sits at layer l + 1
    # and ranks with layer l's attention ("previous")
    return Plan("sparsevlm", None, decoder_stages("sparsevlm", knobs["layers"], "embedding_raters",
                                                  _schedule(budget, knobs), shape.num_layers, offset=1,
                                                  recycle=knobs["recycle"]), positions=knobs["positions"])


def check(budget, knobs) -> None:
    if budget is not None and budget not in SCHEDULES and knobs["schedule"] is None:
        raise ValueError(f"sparsevlm has published schedules for budgets {sorted(SCHEDULES)}; "
                         f"give --sparsevlm-schedule for {budget}")
    if knobs["recycle"] and knobs["positions"] == "original":
        raise ValueError("sparsevlm: recycled tokens need --positions reindex (or --no-sparsevlm-recycle)")


METHOD = register(Method(
    "sparsevlm", "raters from the input embeddings; ranking layers 2, 6, 15 rank with their own attention "
                 "and prune their output; dropped tokens recycled", build,
    knobs=(Knob("layers", "--sparsevlm-layers", int_list, (2, 6, 15), "SparseVLM: ranking layers (default 2,6,15)"),
           Knob("schedule", "--sparsevlm-schedule", int_list, None,
                "SparseVLM: tokens kept per layer (default: the published schedule of --budget)",
                shown="the schedule of --budget, else 192's"),
           Knob("recycle", "--sparsevlm-recycle", bool, True,
                "SparseVLM: merge the dropped tokens into recycled ones (default: on, as the official code)"),
           positions_knob("reindex")),
    budgets=tuple(SCHEDULES), check=check, source="SparseVLM, Zhang et al., ICML'25"))
