"""SparseVLM's text raters, chosen once from the LLM input embeddings (pure tensor function).

Gumpest/SparseVLMs v1 91fb6d9 `modelling_sparse_llama.py` 215-220 (same in v1.5): before the
first decoder layer, with V the image's embeddings and T every token after the image,
m = softmax(V T^T over the text).mean(over the visual tokens); the raters are the text tokens
with m above the mean of m. The raters' attention rows then score the visual tokens at every
pruning stage; they are not re-chosen.
"""
from __future__ import annotations

from typing import Optional

import torch


def sparsevlm_raters(visual: torch.Tensor, text: torch.Tensor,
                     text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """visual [B, V, C], text [B, T, C] (the embeddings after the image) -> bool [B, T].

    `text_mask` [B, T] (True = real token) leaves padding out of the softmax and of the mean;
    the official code is batch-1 and takes the mean over the whole batch, here it is per sample.
    """
    logits = visual.float() @ text.float().transpose(1, 2)  # [B, V, T]
    if text_mask is None:
        text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    if not bool(text_mask.any(dim=1).all()):
        raise ValueError("sparsevlm: a sample has no text after the image to rate with")
    logits = logits.masked_fill(~text_mask[:, None, :], float("-inf"))
    m = logits.softmax(dim=2).mean(dim=1)  # [B, T]; padding columns are 0
    mean = m.sum(dim=1, keepdim=True) / text_mask.sum(dim=1, keepdim=True)
    return (m > mean) & text_mask
