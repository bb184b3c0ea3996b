import torch
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral

_PATCHED = False


def rotary_table_covers_positions() -> None:
    """Let a layer's rotary table reach positions beyond its (pruned) cache length.

    transformers 4.37 attention asks the rotary module for a table of `kv_seq_len` rows
    (new tokens + cached tokens of *that* layer) and then indexes it with `position_ids`.
    After decoder pruning a layer caches fewer tokens than the original positions it
    holds, so position 640 may be looked up in a 100-row table. We return the whole cached
    table (growing it if asked for more); indexing by position ids gives the same rows as
    before for every position that was valid, so stock models are unaffected.
    """
    global _PATCHED
    if _PATCHED:
        return
    for cls in (modeling_llama.LlamaRotaryEmbedding, modeling_mistral.MistralRotaryEmbedding):
        cls.forward = _full_table_forward
    _PATCHED = True


def _full_table_forward(self, x: torch.Tensor, seq_len=None):
    if seq_len is not None and seq_len > self.max_seq_len_cached:
        self._set_cos_sin_cache(seq_len=seq_len, device=x.device, dtype=x.dtype)
    return self.cos_cached.to(dtype=x.dtype), self.sin_cached.to(dtype=x.dtype)
