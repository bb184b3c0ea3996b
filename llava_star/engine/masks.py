"""Attention masks from positions, for any host's layers: after pruning, a layer's keys are
a left-aligned subset whose positions (not indices) say what each query may see."""
from __future__ import annotations

from typing import Optional

import torch


def attention_mask_for(impl: str, q_pos, k_pos, k_valid, q_len: int, dtype) -> Optional[torch.Tensor]:
    """The additive mask a transformers attention layer takes (4.37's and 5's alike), or None
    when its own causal handling is already right (no padding; prefill square or single-token
    decode), so SDPA/FlashAttention take their causal fast path. Masks come from positions:
    key j is visible to query i iff pos_j <= pos_i and j is real."""
    no_padding = bool(k_valid.all())
    square = q_len == k_pos.shape[1]
    if impl == "flash_attention_2":
        # FA2 takes a 2-D key padding mask and is causal by index, which our left-aligned,
        # order-preserving layout satisfies.
        return None if no_padding else k_valid.to(torch.long)
    if no_padding and (q_len == 1 or (square and impl == "sdpa")):
        return None
    allowed = (k_pos[:, None, :] <= q_pos[:, :, None]) & k_valid[:, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
