"""Pruning plans: what to score, where, and how many visual tokens to keep.

Every method is a `Plan`: an optional vision stage (before the projector) and a list of
decoder stages. The engine only knows plans; `llava_star.methods` builds them by name.
Counts are resolved by `engine.counts`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .counts import UNITS, Count, check_count, ratio_of

VISION_SCORES = ("attention_received", "cls_attention", "random")
# raters: text rows re-chosen at each stage by their attention mass; embedding_raters: text
# rows chosen once from the LLM input embeddings (SparseVLM's rule)
DECODER_SCORES = ("text_mean", "last_token", "raters", "embedding_raters", "random")
RANKS = ("previous", "own")  # which layer's attention ranks a decoder stage at layer l: l-1 or l
POSITIONS = ("original", "reindex")


def check_seed(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"seed must be an int, got {value!r}")


@dataclass(frozen=True)
class VisionStage:
    """Keep `keep` patches per image, ranked by `score` in the CLIP select layer. `merge`:
    that many more tokens merged from the patches not kept (VisionZip's contextual tokens);
    `cls_token`: the CLS token goes on to the LLM too, first (VisionZip)."""
    score: str
    keep: Count
    merge: int = 0
    cls_token: bool = False

    def __post_init__(self):
        if self.score not in VISION_SCORES:
            raise ValueError(f"vision score must be one of {VISION_SCORES}, got {self.score!r}")
        check_count("vision keep", self.keep)
        if isinstance(self.merge, bool) or not isinstance(self.merge, int) or self.merge < 0:
            raise ValueError(f"vision merge must be an int >= 0, got {self.merge!r}")


@dataclass(frozen=True)
class DecoderStage:
    """Layers >= `layer` see only `keep` visual tokens, ranked by `score` computed from the
    attention of layer `layer - 1` (`ranks="previous"`: its queries and cached keys) or of
    layer `layer` itself (`ranks="own"`: its q/k projections of its input). `recycle`: the
    dropped tokens are merged into new visual tokens that stay (SparseVLM)."""
    layer: int
    score: str
    keep: Count
    ranks: str = "previous"
    recycle: bool = False

    def __post_init__(self):
        if self.score not in DECODER_SCORES:
            raise ValueError(f"decoder score must be one of {DECODER_SCORES}, got {self.score!r}")
        if self.ranks not in RANKS:
            raise ValueError(f"decoder stage ranks must be one of {RANKS}, got {self.ranks!r}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 1:
            raise ValueError(f"decoder stage layer must be an int >= 1, got {self.layer!r}")
        check_count(f"keep at layer {self.layer}", self.keep)


@dataclass(frozen=True)
class Plan:
    name: str = "none"
    vision: Optional[VisionStage] = None
    decoder: Tuple[DecoderStage, ...] = ()
    seed: int = 0  # for the random control
    unit: str = "image"  # what counts refer to on multi-crop (anyres) images, see engine.counts
    positions: str = "original"  # after a decoder stage drops tokens: keep position ids or 0..n-1

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        check_seed(self.seed)
        if self.positions == "original" and any(st.recycle for st in self.decoder):
            raise ValueError("recycled (merged) tokens have no original position: recycling needs "
                             "positions='reindex'")

    @property
    def single_crop_only(self) -> bool:
        """Merged or CLS tokens from the vision stage: llava's anyres merge cannot lay them out."""
        return self.vision is not None and bool(self.vision.merge or self.vision.cls_token)

    @property
    def prunes(self) -> bool:
        return self.vision is not None or bool(self.decoder)

    def validate(self, num_layers: int, num_patches: int) -> "Plan":
        """Check the plan against a model (`num_layers` decoder layers, at most `num_patches`
        visual tokens per image). Raises ValueError naming the offending field."""
        prev = num_patches
        if self.vision is not None:
            k = ratio_of(self.vision.keep, num_patches)
            if k > num_patches:
                raise ValueError(f"vision keep {k} exceeds the {num_patches} patches per image")
            if self.vision.merge > num_patches - k:
                raise ValueError(f"vision merge {self.vision.merge} exceeds the {num_patches - k} patches "
                                 "left after the kept ones")
            prev = k
        last_layer = 0
        for st in self.decoder:
            if not 1 <= st.layer <= num_layers - 1:
                raise ValueError(f"decoder stage layer {st.layer} is outside 1..{num_layers - 1} "
                                 f"(the model has {num_layers} layers)")
            if st.layer <= last_layer:
                raise ValueError(f"decoder stage layers must increase, got {st.layer} after {last_layer}")
            k = ratio_of(st.keep, num_patches)
            if k > prev:
                raise ValueError(f"keep at layer {st.layer} ({k}) must not exceed the {prev} visual "
                                 "tokens the previous stage keeps (keep counts must not increase)")
            prev, last_layer = k, st.layer
        return self
