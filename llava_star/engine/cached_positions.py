"""What a host's KV cache must know beyond keys and values once layers are pruned: for every
cached token of every layer, its position and whether it is real (not padding). Layers hold
different numbers of tokens, so positions cannot be recovered from cache lengths."""
from __future__ import annotations

from typing import Callable, List

import torch


class CachedPositions:
    """Mixin for a host's cache class (`class StarCache(CachedPositions, DynamicCache)`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_positions: List[torch.Tensor] = []
        self.key_valid: List[torch.Tensor] = []

    def add_token_info(self, layer_idx: int, positions: torch.Tensor, valid: torch.Tensor) -> None:
        if len(self.key_positions) <= layer_idx:
            self.key_positions.append(positions)
            self.key_valid.append(valid)
        else:  # the layer's own device (layers may sit on different devices)
            dev = self.key_positions[layer_idx].device
            self.key_positions[layer_idx] = torch.cat([self.key_positions[layer_idx], positions.to(dev)], 1)
            self.key_valid[layer_idx] = torch.cat([self.key_valid[layer_idx], valid.to(dev)], 1)

    def next_positions(self, q: int, layer_idx: int = 0) -> torch.Tensor:
        """[B, q] positions of q new tokens in one layer: after the last position each sample
        holds there."""
        last = (self.key_positions[layer_idx] * self.key_valid[layer_idx]).max(dim=1).values
        return last[:, None] + 1 + torch.arange(q, device=last.device)

    def map_positions(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply a batch-dimension operation (beam reorder, repeat, select) to the records."""
        for store in (self.key_positions, self.key_valid):
            for i in range(len(store)):
                store[i] = fn(store[i])
