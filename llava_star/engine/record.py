"""What pruning did on the last prefill, per sample."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch


@dataclass
class PruneRecord:
    """One sample of one prefill.

    stage1_kept: indices into the image's patch grid (0..575 for LLaVA-1.5) kept by the vision
        stage, in sequence order (ascending on LLaVA-1.5); every patch (after llava's unpad on
        LLaVA-NeXT) when there is no vision stage.
    final_kept: the same grid indices for the visual tokens that survive the last stage of
        any kind (the last decoder stage; stage1_kept when there is none). `stage2_kept` is
        the same tensor under STAR's name for it.
    tokens_per_layer: visual tokens each decoder layer saw.
    stage1_scores: the vision stage's score of every patch, by grid index (None where not
        scored).
    stage2_scores: per decoder stage, the scores of the patches it ranked, aligned with
        stage1_kept (first stage) or decoder_kept[i - 1] (later stages).
    decoder_kept: per decoder stage, the grid indices it kept, in sequence order.
    merged: per stage (the vision stage first, when the plan has one), how many merged tokens
        (not grid cells: VisionZip's contextual tokens, SparseVLM's recycled ones) it added.
        They count in tokens_per_layer (and may be dropped by later stages), never in the
        *_kept lists; VisionZip's CLS token counts in tokens_per_layer only.
    On LLaVA-NeXT a grid index is crop * 576 + patch (crop 0 = the base image), and sequence
    order is llava's merge order (crops interleave row by row), not ascending.
    """
    num_patches: int
    stage1_kept: torch.Tensor
    final_kept: torch.Tensor
    tokens_per_layer: List[int]
    image_span: tuple  # (start, length) of the image in the LLM input sequence
    stage1_scores: Optional[torch.Tensor] = None
    stage2_scores: List[torch.Tensor] = field(default_factory=list)
    decoder_kept: List[torch.Tensor] = field(default_factory=list)  # grid indices per decoder stage
    merged: List[int] = field(default_factory=list)  # merged tokens added by each stage

    @property
    def stage2_kept(self) -> torch.Tensor:
        return self.final_kept

    @property
    def t_eq(self) -> float:
        """Layer-averaged visual-token count (the accounting SparseVLM and PDrop report)."""
        return sum(self.tokens_per_layer) / len(self.tokens_per_layer)

    def summary(self) -> dict:
        return {
            "visual_tokens": self.num_patches,
            "stage1_kept": int(self.stage1_kept.numel()),
            "final_kept": int(self.final_kept.numel()),
            "t_eq": round(self.t_eq, 2),
        }
