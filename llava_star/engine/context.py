"""One prefill's facts, in one object.

The host opens a `PrefillContext` when llava's merge runs, the vision tower fills its
`vision` field (a `VisionResult`, not attributes on the tower), the merge adds where each
image landed, and the model's forward consumes it once. Nothing else carries state from
one call to the next.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from .seams import Hooks


# Grid index of a visual row that is not a patch cell: a NeXT `image_newline` row (layout,
# never dropped), a merged token (VisionZip's contextual tokens, SparseVLM's recycled ones) and
# the CLIP CLS token (VisionZip passes it on).
NEWLINE, MERGED, CLS = -1, -2, -3


@dataclass
class VisionResult:
    """What the vision stage did, one row per CLIP crop of the tower's batch.
    kept [N, k] grid indices when the stage removed patches itself (one crop per image);
    grid [N, L] the grid index of every feature row it returned, where that is more than the
    kept patches (CLS first, merged tokens after them: see NEWLINE, MERGED, CLS);
    keep_mask [N, P] when removal is deferred to after llava's merge (multi-crop images);
    scores [N, P] the stage's score of every patch (None when not scored)."""
    kept: Optional[torch.Tensor] = None
    keep_mask: Optional[torch.Tensor] = None
    scores: Optional[torch.Tensor] = None
    grid: Optional[torch.Tensor] = None


@dataclass
class PrefillContext:
    """hooks: the model's selector and observers for this call; crops: CLIP crops per sample (None for one crop each); crop_keep / crop_first: per crop
    of the tower's batch, the vision stage's keep count and whether it starts its image
    (multi-crop only); spans: (start, length) of each sample's image in the merged sequence,
    None for a text-only sample; layouts: per sample, the grid index of every row of the
    image span (-1 for an `image_newline` row; multi-crop only)."""
    hooks: Hooks = field(default_factory=Hooks)
    crops: Optional[List[int]] = None
    crop_keep: Optional[List[int]] = None
    crop_first: Optional[List[bool]] = None
    vision: VisionResult = field(default_factory=VisionResult)
    spans: Optional[list] = None
    layouts: Optional[list] = None

    def repeat(self, r: int) -> "PrefillContext":
        """The context for a batch that `generate` expanded `r` times after llava's merge
        (num_beams, num_return_sequences: `repeat_interleave` over samples)."""
        rep = lambda xs: None if xs is None else [x for x in xs for _ in range(r)]  # noqa: E731
        sizes = self.crops or [1] * len(self.spans)  # tower rows per sample
        per_sample = lambda t: None if t is None else torch.cat(rep(list(t.split(sizes))))  # noqa: E731
        v = self.vision
        rows = lambda t: None if t is None else t.repeat_interleave(r, 0)  # noqa: E731  (one crop each)
        vision = VisionResult(rows(v.kept), per_sample(v.keep_mask), per_sample(v.scores), rows(v.grid))
        return PrefillContext(self.hooks, rep(self.crops), None, None, vision, rep(self.spans), rep(self.layouts))


_OPEN: contextvars.ContextVar[Optional[PrefillContext]] = contextvars.ContextVar("llava_star_prefill", default=None)


@contextlib.contextmanager
def opened(ctx: PrefillContext):
    """Make `ctx` the one the vision tower fills, for the duration of llava's merge."""
    token = _OPEN.set(ctx)
    try:
        yield ctx
    finally:
        _OPEN.reset(token)


def current() -> Optional[PrefillContext]:
    return _OPEN.get()
