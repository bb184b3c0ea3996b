"""transformers 4.37 LLaMA/Mistral layers as the engine's `LayerHost`, and the cache.

Everything here is specific to the decoder-layer API llava 1.2.2 runs on: the 4-D additive
mask (or FA2's 2-D padding mask), `position_ids` into each layer's own rotary table, and
`DynamicCache`'s `key_cache` lists.
"""
from __future__ import annotations

from typing import List

import torch
from transformers.cache_utils import DynamicCache

from ...engine.cached_positions import CachedPositions
from ...engine.masks import attention_mask_for


class StarCache(CachedPositions, DynamicCache):
    """DynamicCache whose layers may hold different numbers of tokens, plus for every cached
    token its original position and whether it is real (not padding).

    `seen_tokens` counts the unpruned merged sequence, which is what `generate` uses to slice
    new input ids against its attention mask; decode steps take their positions from
    `key_positions` (each sample's last cached position + 1), not from `generate`."""

    def layer_lengths(self) -> List[int]:
        return [k.shape[-2] for k in self.key_cache]

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        self.map_positions(lambda t: t.index_select(0, beam_idx.to(t.device)))


class LlamaLayers:
    """The engine's view of a 4.37 `LlamaModel` / `MistralModel` (`lm`)."""

    def __init__(self, lm):
        self.lm = lm
        self.num_layers = len(lm.layers)
        self.impl = lm.config._attn_implementation

    def begin(self, n_positions: int) -> None:
        """Make every layer's rotary table hold `n_positions`. Each layer grows its own table
        only to its own cache length, which after pruning is shorter than the positions it
        holds (see patches/rotary.py); a plain int comparison per layer, no device sync."""
        for layer in self.lm.layers:
            rot = layer.self_attn.rotary_emb
            if n_positions > rot.max_seq_len_cached:
                rot._set_cos_sin_cache(seq_len=n_positions, device=rot.inv_freq.device, dtype=rot.cos_cached.dtype)

    def run(self, i, h, q_pos, k_pos, k_valid, cache):
        mask = attention_mask_for(self.impl, q_pos, k_pos, k_valid, h.shape[1], h.dtype)
        return self.lm.layers[i](h, attention_mask=mask, position_ids=q_pos, past_key_value=cache, use_cache=True)[0]

    def queries(self, i, h_rows, row_pos):
        attn = self.lm.layers[i].self_attn
        return self._projected(i, h_rows, row_pos, attn.q_proj, attn.num_heads)

    def keys(self, i, h, pos):
        attn = self.lm.layers[i].self_attn
        return self._projected(i, h, pos, attn.k_proj, attn.num_key_value_heads)

    def _projected(self, i, h, pos, proj, heads):
        """Layer i's normed input through q_proj or k_proj, per head, with rotary at `pos`."""
        layer = self.lm.layers[i]
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        bsz, n, _ = x.shape
        y = proj(x).view(bsz, n, heads, attn.head_dim).transpose(1, 2)
        cos, sin = attn.rotary_emb(y, seq_len=int(pos.max()) + 1)
        return _rotate(y, cos, sin, pos)

    def cached_keys(self, i, cache):
        return cache.key_cache[i]

    def norm(self, h):
        return self.lm.norm(h)


def _rotate(q, cos, sin, position_ids):
    """Rotary embedding of q (or k) at the given positions (the formula the layer applies)."""
    cos = cos[position_ids].unsqueeze(1)
    sin = sin[position_ids].unsqueeze(1)
    half = q.shape[-1] // 2
    rotated = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
    return q * cos + rotated * sin
