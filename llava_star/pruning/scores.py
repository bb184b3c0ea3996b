"""Token scores from attention. Pure tensor functions, tested without a model.

Shapes: B batch, H heads, Q query rows, T key tokens, D head dim.
"""
from __future__ import annotations

import math

import torch


def attention_probs(q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention probabilities in fp32. q [B,H,Q,D], k [B,Hk,T,D] (Hk divides H, as in
    grouped-query attention), allowed [B,Q,T] bool or None (all allowed). Returns [B,H,Q,T]."""
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if allowed is not None:
        logits = logits.masked_fill(~allowed[:, None], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=-1)


def attention_received(probs: torch.Tensor, row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention each key token *receives*: average over heads, then a (weighted) mean over
    query rows, i.e. a column mean. [B,H,Q,T] -> [B,T].

    (A row mean of a row-softmax is 1/T for every row, so it carries no information; the
    column mean is the score.) `row_weights` [B,Q] selects/weights the rows that vote, e.g.
    only valid text tokens; rows with weight 0 do not count."""
    per_row = probs.mean(dim=1)  # [B,Q,T]
    if row_weights is None:
        return per_row.mean(dim=1)
    w = row_weights.to(per_row.dtype)
    return (per_row * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1e-12)


def cls_attention(probs: torch.Tensor) -> torch.Tensor:
    """Attention of the CLS query (row 0) to every patch (columns 1..), heads averaged.
    [B,H,1+P,1+P] -> [B,P] (FasterVLM's score)."""
    return probs[:, :, 0, 1:].mean(dim=1)


def stage1_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """STAR stage 1: for CLIP self-attention q, k [B,H,1+P,D] (CLS first), the mean attention
    each patch receives from all 1+P query rows. Returns [B,P]."""
    return attention_received(attention_probs(q, k))[:, 1:]


def rater_rows(probs_to_visual: torch.Tensor, valid_rows: torch.Tensor) -> torch.Tensor:
    """SparseVLM's raters: the text rows whose total attention to the visual tokens is above
    the mean over valid text rows. probs_to_visual [B,Q,V] (heads averaged), valid_rows [B,Q]
    bool. Returns [B,Q] bool; falls back to all valid rows where no row is above the mean
    (all equal), so a sample never loses its voters."""
    relevance = probs_to_visual.sum(dim=-1)
    w = valid_rows.to(relevance.dtype)
    mean = (relevance * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1)
    chosen = (relevance > mean) & valid_rows
    none = ~chosen.any(dim=1, keepdim=True)
    return torch.where(none, valid_rows, chosen)
