"""How a keep count becomes a number of tokens: the one resolver the tower, the decoder,
flops and the CLIs share.

A count is an `int` (tokens) or a `float` in (0, 1] (a fraction of the tokens it refers to).
On multi-crop (LLaVA-NeXT anyres) images the plan's `unit` says what a count refers to:
"image" (all crops together) or "crop" (every 576-patch crop, the base image included).
LLaVA-1.5 has one crop, where both units agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Count = Union[int, float]
UNITS = ("image", "crop")


def check_count(name: str, value: Count) -> None:
    """Raise ValueError naming `name` unless value is a positive int or a ratio in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an int count or a float ratio in (0, 1], got {value!r}")
    if isinstance(value, int) and value <= 0:
        raise ValueError(f"{name} must be a positive token count, got {value}")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError(f"{name} as a ratio must be in (0, 1], got {value}")


def ratio_of(value: Count, total: int) -> int:
    """An int stays itself; a ratio of `total` is rounded, at least 1 and at most `total`."""
    if isinstance(value, float):
        return max(1, min(total, int(round(value * total))))
    return value


@dataclass(frozen=True)
class ImageTokens:
    """The patch tokens of one image: `crops` CLIP crops of `per_crop` patches each, of which
    `rows` reach the language model (fewer than crops * per_crop after llava's unpad)."""
    crops: int
    per_crop: int
    rows: int

    @classmethod
    def single(cls, per_crop: int) -> "ImageTokens":
        return cls(1, per_crop, per_crop)


def vision_keep(keep: Count, unit: str, image: ImageTokens) -> int:
    """Patches the vision stage keeps in each crop. An int budget for a whole multi-crop
    image is spread evenly over its crops (rounded up per crop)."""
    if unit == "crop" or image.crops == 1 or isinstance(keep, float):
        return ratio_of(keep, image.per_crop)
    return -(-keep // image.crops)


def decoder_keep(keep: Count, unit: str, image: ImageTokens) -> int:
    """Visual tokens a decoder stage keeps for the whole image (before capping at what is
    left): per crop, that many times the crop count; per image, a ratio of its rows."""
    if unit == "crop":
        return ratio_of(keep, image.per_crop * image.crops) if isinstance(keep, float) else keep * image.crops
    return ratio_of(keep, image.rows)


def recycle_size(n_dropped: int) -> int:
    """SparseVLM recycling: how many of `n_dropped` dropped tokens are recycled (the top 30%, plus one)."""
    return min(n_dropped, int(n_dropped * 0.3) + 1)


def recycled_count(n_dropped: int) -> int:
    """How many merged tokens `sparsevlm_recycle` makes from `n_dropped` dropped tokens."""
    return int(recycle_size(n_dropped) / 10) + 1 if n_dropped else 0
