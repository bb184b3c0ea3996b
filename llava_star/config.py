"""Pruning plans: what to score, where, and how many visual tokens to keep.

Every method is a `Plan`: an optional vision stage (before the projector) and a list of
decoder stages. The model code only knows plans; `StarConfig` and `MethodConfig` build them.

Counts: an `int` is a number of visual tokens; a `float` in (0, 1] is a fraction of the
visual tokens one image has before any pruning (576 for LLaVA-1.5). For LLaVA-NeXT (anyres)
the plan's `unit` says what a count refers to: "image" (the default: all crops of the
image together; a ratio of its patch tokens after llava's unpad) or "crop" (every crop,
the base image included, keeps that many of its 576; Table 2(b) style). Identical for
LLaVA-1.5, which has one crop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

Count = Union[int, float]

VISION_SCORES = ("attention_received", "cls_attention", "random")
DECODER_SCORES = ("text_mean", "last_token", "raters", "random")
UNITS = ("image", "crop")
REFERENCE_LAYERS = 32  # the depth (LLaVA-1.5-7B) the baselines' published layer indices refer to


def check_count(name: str, value: Count) -> None:
    """Raise ValueError naming `name` unless value is a positive int or a ratio in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an int count or a float ratio in (0, 1], got {value!r}")
    if isinstance(value, int) and value <= 0:
        raise ValueError(f"{name} must be a positive token count, got {value}")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError(f"{name} as a ratio must be in (0, 1], got {value}")


def check_seed(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"seed must be an int, got {value!r}")


def count_of(value: Count, total: int) -> int:
    """Resolve a count or ratio against `total` tokens (ratios rounded, at least 1)."""
    if isinstance(value, float):
        return max(1, min(total, int(round(value * total))))
    return value


@dataclass(frozen=True)
class VisionStage:
    """Keep `keep` patches per image, ranked by `score` in the CLIP select layer."""
    score: str
    keep: Count

    def __post_init__(self):
        if self.score not in VISION_SCORES:
            raise ValueError(f"vision score must be one of {VISION_SCORES}, got {self.score!r}")
        check_count("vision keep", self.keep)


@dataclass(frozen=True)
class DecoderStage:
    """Layers >= `layer` see only `keep` visual tokens, ranked by `score` computed from the
    attention of layer `layer - 1`."""
    layer: int
    score: str
    keep: Count

    def __post_init__(self):
        if self.score not in DECODER_SCORES:
            raise ValueError(f"decoder score must be one of {DECODER_SCORES}, got {self.score!r}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 1:
            raise ValueError(f"decoder stage layer must be an int >= 1, got {self.layer!r}")
        check_count(f"keep at layer {self.layer}", self.keep)


@dataclass(frozen=True)
class Plan:
    name: str = "none"
    vision: Optional[VisionStage] = None
    decoder: Tuple[DecoderStage, ...] = ()
    seed: int = 0  # for the random control
    unit: str = "image"  # what counts refer to on multi-crop (anyres) images, see above

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        check_seed(self.seed)

    @property
    def prunes(self) -> bool:
        return self.vision is not None or bool(self.decoder)

    def validate(self, num_layers: int, num_patches: int) -> "Plan":
        """Check the plan against a model (`num_layers` decoder layers, `num_patches` visual
        tokens per image). Raises ValueError naming the offending field."""
        prev = num_patches
        if self.vision is not None:
            k = count_of(self.vision.keep, num_patches)
            if k > num_patches:
                raise ValueError(f"vision keep {k} exceeds the {num_patches} patches per image")
            prev = k
        last_layer = 0
        for st in self.decoder:
            if not 1 <= st.layer <= num_layers - 1:
                raise ValueError(f"decoder stage layer {st.layer} is outside 1..{num_layers - 1} "
                                 f"(the model has {num_layers} layers)")
            if st.layer <= last_layer:
                raise ValueError(f"decoder stage layers must increase, got {st.layer} after {last_layer}")
            k = count_of(st.keep, num_patches)
            if k > prev:
                raise ValueError(f"keep at layer {st.layer} ({k}) must not exceed the {prev} visual "
                                 "tokens the previous stage keeps (keep counts must not increase)")
            prev, last_layer = k, st.layer
        return self


@dataclass(frozen=True)
class StarConfig:
    """STAR (arXiv 2505.12359): stage 1 keeps `stage1_keep` patches by the attention they
    receive in the CLIP select layer; stage 2 keeps `keep` of them at decoder layer `layer`
    by the mean attention they receive from the text after the image.

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


def scale_layer(layer: int, num_layers: int) -> int:
    """Map a layer index published for a 32-layer model to a model with `num_layers` layers."""
    return max(1, int(layer * num_layers / REFERENCE_LAYERS + 0.5))


BUDGETS = (288, 192, 128, 115, 64, 58, 29)
# SparseVLM's published schedules (tokens kept at layers 2, 6, 15) per budget.
SPARSEVLM_SCHEDULES = {192: (300, 200, 110), 128: (303, 110, 36), 64: (66, 30, 17)}
METHODS = ("none", "star", "fastv", "fastervlm", "sparsevlm", "pdrop", "random")
# the knobs each method reads (`unit` applies to all); anything else is a typo, not a default
METHOD_KNOBS = {"none": (), "star": ("stage1_keep", "layer", "keep", "seed"), "fastv": ("k", "keep"),
                "fastervlm": ("keep",), "random": ("keep", "seed"), "sparsevlm": ("layers", "schedule"),
                "pdrop": ("layers", "ratios")}


@dataclass(frozen=True)
class MethodConfig:
    """A named method with its knobs; `.plan(num_layers)` gives the engine's Plan.

    `budget` is the number of visual tokens the method keeps in the end ("remaining
    tokens"); SparseVLM's budgets are its published schedules. See docs/methods.md.
    """
    name: str = "none"
    budget: Optional[int] = None
    knobs: dict = field(default_factory=dict)

    @classmethod
    def from_name(cls, name: str, budget: Optional[int] = None, **knobs) -> "MethodConfig":
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
        unknown = sorted(set(knobs) - set(METHOD_KNOBS[name]) - {"unit"})
        if unknown:
            raise ValueError(f"{name} has no knob {', '.join(map(repr, unknown))}; it takes "
                             f"{', '.join(METHOD_KNOBS[name] + ('unit',))}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
            raise ValueError(f"budget must be a positive int, got {budget!r}")
        if name == "sparsevlm" and budget is not None and budget not in SPARSEVLM_SCHEDULES \
                and "schedule" not in knobs:
            raise ValueError(f"sparsevlm has published schedules for budgets "
                             f"{sorted(SPARSEVLM_SCHEDULES)}; give --sparsevlm-schedule for {budget}")
        cfg = cls(name, budget, dict(knobs))
        cfg.plan(REFERENCE_LAYERS)  # validate knobs early, against the reference depth
        return cfg

    def plan(self, num_layers: int) -> Plan:
        from dataclasses import replace

        plan = self._plan(num_layers)
        return replace(plan, unit=self.knobs.get("unit", "image"))

    def _plan(self, num_layers: int) -> Plan:
        n, b, kn = self.name, self.budget, self.knobs
        seed = kn.get("seed", 0)
        if n == "none":
            return Plan("none")
        if n == "star":
            return StarConfig(kn.get("stage1_keep", 0.875), kn.get("layer"),
                              kn.get("keep", b if b is not None else 58), seed,
                              kn.get("unit", "image")).plan(num_layers)
        if n == "fastervlm":
            return Plan(n, VisionStage("cls_attention", kn.get("keep", b if b is not None else 58)))
        if n == "fastv":
            k = kn.get("k", 2)
            keep = kn.get("keep", b if b is not None else 0.5)
            return Plan(n, None, (DecoderStage(k, "last_token", keep),))
        if n == "random":
            return Plan(n, VisionStage("random", kn.get("keep", b if b is not None else 58)), (), seed)
        if n == "sparsevlm":
            layers = kn.get("layers", (2, 6, 15))
            sched = tuple(kn.get("schedule", SPARSEVLM_SCHEDULES[b if b is not None else 192]))
            return Plan(n, None, _stages(layers, "raters", sched, num_layers, "sparsevlm"))
        if n == "pdrop":
            layers = kn.get("layers", (8, 16, 24))
            ratios = tuple(kn.get("ratios", (0.5, 0.25, 0.125)))
            if b is not None and "ratios" not in kn:
                # keep the published halving shape, as counts: the last stage keeps the budget
                # (capped at LLaVA-1.5's 576 so early stages never ask for more than exist)
                ratios = tuple(min(576, b * 2 ** (len(layers) - 1 - i)) for i in range(len(layers)))
            return Plan(n, None, _stages(layers, "last_token", ratios, num_layers, "pdrop"))
        raise ValueError(f"unknown method {n!r}")


def _stages(layers, score, keeps, num_layers, method) -> Tuple[DecoderStage, ...]:
    layers, keeps = tuple(layers), tuple(keeps)
    if len(layers) != len(keeps):
        raise ValueError(f"{method}: {len(layers)} layers but {len(keeps)} keep values; they must match")
    if any(b > a for a, b in zip(keeps, keeps[1:])):
        raise ValueError(f"{method}: keep values must not increase, got {list(keeps)}")
    scaled = [scale_layer(l, num_layers) for l in layers]
    for i in range(1, len(scaled)):  # keep stages distinct on shallow models
        scaled[i] = max(scaled[i], scaled[i - 1] + 1)
    return tuple(DecoderStage(l, score, k) for l, k in zip(scaled, keeps))
