"""STAR (arXiv 2505.12359): stage 1 after CLIP, stage 2 at decoder layer K."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ..engine.counts import UNITS, Count, check_count
from ..engine.plan import DecoderStage, Plan, VisionStage, check_seed
from .registry import Knob, Method, count, positions_knob, register


@dataclass(frozen=True)
class StarConfig:
    """STAR: stage 1 keeps `stage1_keep` patches by the attention they receive in the CLIP
    select layer; stage 2 keeps `keep` of them at decoder layer `layer` by the mean attention
    they receive from the text after the image.

    Defaults are inferred, not printed in the paper: its Table 3 FLOPs fit `layer = L/2`
    (None here, resolved per model) and stage 1 keeping 87.5% (504 of 576) at every budget.
    """
    stage1_keep: Count = 0.875
    layer: Optional[int] = None
    keep: Count = 58
    seed: int = 0
    unit: str = "image"

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        check_count("stage1_keep", self.stage1_keep)
        check_count("keep", self.keep)
        check_seed(self.seed)
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)
                                       or self.layer < 1):
            raise ValueError(f"layer must be an int >= 1 (or None for L/2), got {self.layer!r}")
        if type(self.keep) is type(self.stage1_keep) and self.keep > self.stage1_keep:
            raise ValueError(f"keep ({self.keep}) must not exceed stage1_keep ({self.stage1_keep})")

    def plan(self, num_layers: int) -> Plan:
        layer = self.layer if self.layer is not None else num_layers // 2
        return Plan("star", VisionStage("attention_received", self.stage1_keep),
                    (DecoderStage(layer, "text_mean", self.keep),), self.seed, self.unit)


def build(budget, knobs, shape) -> Plan:
    keep = knobs["keep"] if knobs["keep"] is not None else (budget if budget is not None else 58)
    plan = StarConfig(knobs["stage1_keep"], knobs["layer"], keep, knobs["seed"], knobs["unit"]).plan(shape.num_layers)
    return replace(plan, positions=knobs["positions"])


METHOD = register(Method(
    "star", "vision stage: attention received in the CLIP select layer; decoder layer L/2: mean attention "
            "from the text after the image", build,
    knobs=(Knob("stage1_keep", "--star-stage1-keep", count, 0.875,
                "STAR: patches kept after CLIP, count or ratio (default 0.875 = 504/576)"),
           Knob("layer", "--star-layer", int, None, "STAR: decoder layer K (default L/2)", shown="L/2"),
           Knob("keep", "--star-keep", count, None, "STAR: visual tokens kept at layer K (default: --budget, 58)",
                sets_final=True, shown="--budget, else 58"),
           Knob("seed", None, int, 0, "unused by STAR's scores; kept for StarConfig"),
           positions_knob("original")),
    source="this paper"))
