"""transformers 5.x decoder layers (LLaMA, Mistral) as the engine's `LayerHost`, and the cache.

What differs from the 4.37 host (hosts/llava/layers.py): the rotary embedding is one module of
the language model, called with per-token positions, and its (cos, sin) are passed into every
layer (`position_embeddings`); layers return a tensor; the cache is a `Cache` of per-layer
`DynamicLayer`s, which already may hold different numbers of tokens.
"""
from __future__ import annotations

import contextlib
from typing import List

import torch
from transformers.cache_utils import DynamicCache

from ...engine.cached_positions import CachedPositions
from ...engine.masks import attention_mask_for

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2")


class StarCache(CachedPositions, DynamicCache):
    """A DynamicCache whose layers hold different numbers of tokens (pruned ones are never
    cached), plus for every cached token its position and whether it is real (not padding).
    Decode steps take their positions from `key_positions` (each sample's last cached
    position + 1), not from `generate`'s position ids, which count the unpruned sequence."""

    def layer_lengths(self) -> List[int]:
        return [layer.get_seq_length() for layer in self.layers]

    def keys_of(self, layer_idx: int) -> torch.Tensor:
        return self.layers[layer_idx].keys

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        self.map_positions(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int):
        super().batch_repeat_interleave(repeats)
        self.map_positions(lambda t: t.repeat_interleave(repeats, 0))

    def batch_select_indices(self, indices: torch.Tensor):
        super().batch_select_indices(indices)
        self.map_positions(lambda t: t[indices.to(t.device)])


def _rotate(x, cos, sin):
    """Rotary embedding of x [B, H, T, D] with cos/sin [B, T, D] (the formula the layer applies)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _device_of(module) -> torch.device:
    """Where a module computes: accelerate's execution device when it is dispatched (its
    weights may sit on "meta" until its hook loads them), else where its weights are."""
    dev = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if dev is not None:
        return torch.device(dev) if not isinstance(dev, torch.device) else dev
    return next(module.parameters()).device


@contextlib.contextmanager
def weights_loaded(module):
    """Run parts of a dispatched module (its layernorm and projections, for scoring) with the
    weights its accelerate hook would load for a forward (offloaded layers keep them elsewhere)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        yield
        return
    hook.pre_forward(module)
    try:
        yield
    finally:
        hook.post_forward(module, None)


class DecoderLayers:
    """The engine's view of a transformers 5 `LlamaModel` / `MistralModel` (`lm`). Each layer
    runs on its own device and hands its output, queries and keys back on `home` (where the
    engine keeps positions and masks), so a model dispatched over devices (device_map) works."""

    def __init__(self, lm, home: torch.device):
        self.lm = lm
        self.home = home
        self.num_layers = len(lm.layers)
        self.impl = lm.config._attn_implementation

    def begin(self, n_positions: int) -> None:
        """Nothing to grow: the rotary module computes (cos, sin) from positions on each call."""

    def _rotary(self, x, pos):
        return self.lm.rotary_emb(x, pos.to(x.device))

    def run(self, i, h, q_pos, k_pos, k_valid, cache):
        layer = self.lm.layers[i]
        dev = _device_of(layer)
        h = h.to(dev)
        q_pos, k_pos, k_valid = q_pos.to(dev), k_pos.to(dev), k_valid.to(dev)
        mask = attention_mask_for(self.impl, q_pos, k_pos, k_valid, h.shape[1], h.dtype)
        out = layer(h, attention_mask=mask, position_embeddings=self._rotary(h, q_pos), cache=cache,
                    use_cache=True)
        return out.to(self.home)

    def _project(self, i, h, pos, proj: str):
        layer = self.lm.layers[i]
        attn = layer.self_attn
        dev = _device_of(layer)
        with weights_loaded(layer):
            x = layer.input_layernorm(h.to(dev))
            bsz, t, _ = x.shape
            y = getattr(attn, proj)(x).view(bsz, t, -1, attn.head_dim).transpose(1, 2)
        cos, sin = self._rotary(x, pos)
        return _rotate(y, cos, sin).to(self.home)

    def queries(self, i, h_rows, row_pos):
        return self._project(i, h_rows, row_pos, "q_proj")

    def keys(self, i, h, pos):
        return self._project(i, h, pos, "k_proj")

    def cached_keys(self, i, cache):
        return cache.keys_of(i).to(self.home)

    def norm(self, h):
        return self.lm.norm(h.to(_device_of(self.lm.norm))).to(self.home)
