"""The decoder loop: runs the LLM's layers itself so decoder stages can remove visual tokens.

At prefill, each decoder stage scores the visual tokens from the previous layer's q/k
(queries recomputed for the scoring rows only, keys read from that layer's cache), keeps
the top ones and physically drops the rest from the hidden states; later layers never see
them and never cache them. Every token keeps its original position id, and masks are built
from positions (a key is visible to a query iff its position is not later and it is not
padding), so one rule serves prefill, decode, padding on either side and pruned caches.
Where no mask is needed (no padding) the layer gets `None`, so SDPA/FlashAttention take
their causal fast path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from transformers.cache_utils import DynamicCache

from ..config import DecoderStage, Plan, count_of
from ..pruning.scores import attention_probs, attention_received, rater_rows
from ..pruning.select import gather_tokens, pack_rows, random_sorted, topk_sorted


class StarCache(DynamicCache):
    """DynamicCache whose layers may hold different numbers of tokens, plus for every cached
    token its original position and whether it is real (not padding).

    `seen_tokens` counts the unpruned merged sequence, which is what `generate` uses to slice
    new input ids against its attention mask; decode steps take their positions from
    `key_positions` (each sample's last cached position + 1), not from `generate`."""

    def __init__(self):
        super().__init__()
        self.key_positions: List[torch.Tensor] = []
        self.key_valid: List[torch.Tensor] = []

    def add_token_info(self, layer_idx: int, positions: torch.Tensor, valid: torch.Tensor) -> None:
        if len(self.key_positions) <= layer_idx:
            self.key_positions.append(positions)
            self.key_valid.append(valid)
        else:
            self.key_positions[layer_idx] = torch.cat([self.key_positions[layer_idx], positions], 1)
            self.key_valid[layer_idx] = torch.cat([self.key_valid[layer_idx], valid], 1)

    def layer_lengths(self) -> List[int]:
        return [k.shape[-2] for k in self.key_cache]

    def reorder_cache(self, beam_idx: torch.LongTensor):
        for store in (self.key_cache, self.value_cache, self.key_positions, self.key_valid):
            for i in range(len(store)):
                store[i] = store[i].index_select(0, beam_idx.to(store[i].device))


@dataclass
class VisualTokens:
    """Where each sample's visual tokens sit in the current layout, and which grid cells they
    came from. `pos[b]` / `grid[b]` are aligned 1-D LongTensors; grid -1 marks a NeXT
    `image_newline` row, which is never dropped (it is layout, not content). A stage's keep
    count resolves per sample: a ratio of `base[b]` patches, or an int times `scale[b]`
    (the crop count in per-crop budgets)."""
    pos: List[torch.Tensor]
    grid: List[torch.Tensor]
    base: Sequence[int] = ()
    scale: Sequence[int] = ()

    def keep_count(self, b: int, keep) -> int:
        base = self.base[b] if self.base else None
        if isinstance(keep, float):
            return count_of(keep, base)
        return keep * (self.scale[b] if self.scale else 1)


def attention_mask_for(impl: str, q_pos, k_pos, k_valid, q_len: int, dtype) -> Optional[torch.Tensor]:
    """The mask a transformers 4.37 attention layer expects, or None when its own causal
    handling is already right (no padding; prefill square or single-token decode)."""
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


class DecoderPruner:
    """Owns a plan's decoder stages for one language model and runs its layers."""

    def __init__(self, plan: Plan, num_patches: int):
        self.plan = plan
        self.num_patches = num_patches
        self.stages: Dict[int, DecoderStage] = {st.layer: st for st in plan.decoder}
        # Set by tests / the uncached reference: grid indices to keep per stage, per sample,
        # instead of scoring (so a recomputed prefix keeps the same set).
        self.forced_keep: Optional[List[List[torch.Tensor]]] = None
        self._saved_input: Optional[torch.Tensor] = None  # input of the layer a stage scores with

    # ---------------------------------------------------------------- prefill
    def prefill(self, lm, embeds, valid, visual: Optional[VisualTokens], cache: StarCache):
        """Run every layer over a left-aligned prefill. Returns (hidden, valid, tokens_per_layer,
        stage scores, stage kept grids)."""
        impl = lm.config._attn_implementation
        pos = (valid.long().cumsum(1) - 1).clamp_min(0)
        cover_positions(lm, embeds.shape[1])
        h = embeds
        counts = [[] for _ in range(embeds.shape[0])]
        stage_scores, stage_kept = [], []
        for i, layer in enumerate(lm.layers):
            stage = self.stages.get(i)
            if stage is not None and visual is not None:
                layer_in_prev = self._saved_input
                scores = self._score(lm.layers[i - 1], layer_in_prev, pos, valid, visual, stage, cache, i - 1)
                kept_local = self._select(scores, visual, stage, len(stage_kept))
                stage_scores.append(scores)
                stage_kept.append([g[k] for g, k in zip(visual.grid, kept_local)])
                h, pos, valid, visual = self._drop(h, pos, valid, visual, kept_local)
            for b in range(h.shape[0]):
                counts[b].append(0 if visual is None else int(visual.pos[b].numel()))
            if (i + 1) in self.stages:
                self._saved_input = h
            cache.add_token_info(i, pos, valid)
            mask = attention_mask_for(impl, pos, pos, valid, h.shape[1], h.dtype)
            h = layer(h, attention_mask=mask, position_ids=pos, past_key_value=cache, use_cache=True)[0]
        self._saved_input = None
        return lm.norm(h), valid, counts, stage_scores, stage_kept

    def _score(self, layer, h_in, pos, valid, visual: VisualTokens, stage, cache, layer_idx):
        """Attention each visual token receives in `layer`, from the stage's query rows.
        Returns a list (per sample) of scores aligned with visual.pos[b]."""
        if stage.score == "random":
            return [torch.zeros(p.numel(), device=h_in.device) for p in visual.pos]
        rows = []
        for b, vpos in enumerate(visual.pos):
            real = torch.nonzero(valid[b]).squeeze(1)
            if stage.score == "last_token":
                rows.append(real[-1:])
            else:  # text after the image: the question and the prompt tail
                after = real[real > vpos[-1]] if vpos.numel() else real[-1:]
                if after.numel() == 0:
                    raise ValueError("no text tokens follow the image; decoder stages score visual "
                                     "tokens from the text after the image")
                rows.append(after)
        row_index, row_valid = pack_rows(rows)
        x = layer.input_layernorm(gather_tokens(h_in, row_index))
        attn = layer.self_attn
        bsz, q_len, _ = x.shape
        q = attn.q_proj(x).view(bsz, q_len, attn.num_heads, attn.head_dim).transpose(1, 2)
        row_pos = torch.gather(pos, 1, row_index)
        cos, sin = attn.rotary_emb(q, seq_len=int(pos.max()) + 1)
        q = _rotate(q, cos, sin, row_pos)
        k = cache.key_cache[layer_idx]
        allowed = (pos[:, None, :] <= row_pos[:, :, None]) & valid[:, None, :]
        probs = attention_probs(q, k, allowed)  # [B,H,Q,T]
        out = []
        for b, vpos in enumerate(visual.pos):
            if stage.score == "raters":
                to_visual = probs[b:b + 1, :, :, vpos].mean(dim=1)  # [1,Q,V]
                voters = rater_rows(to_visual, row_valid[b:b + 1])
                out.append(attention_received(probs[b:b + 1, :, :, vpos], voters)[0])
            else:
                out.append(attention_received(probs[b:b + 1, :, :, vpos], row_valid[b:b + 1])[0])
        return out

    def _select(self, scores, visual: VisualTokens, stage, stage_idx):
        """Per sample, positions (into visual.pos[b]) of the tokens to keep, ascending."""
        kept = []
        for b, s in enumerate(scores):
            grid = visual.grid[b]
            patch = torch.nonzero(grid >= 0).squeeze(1)  # newline rows always stay
            always = torch.nonzero(grid < 0).squeeze(1)
            n = patch.numel()
            k = min(visual.keep_count(b, stage.keep) if visual.base else count_of(stage.keep, self.num_patches), n)
            if self.forced_keep is not None:
                want = self.forced_keep[stage_idx][b].to(grid.device)
                chosen = patch[torch.isin(grid[patch], want)]
            elif n == 0:
                chosen = patch
            elif stage.score == "random":
                gen = torch.Generator().manual_seed(self.plan.seed + stage.layer)
                chosen = patch[random_sorted(n, k, gen).to(patch.device)]
            else:
                chosen = patch[topk_sorted(s[patch], k)]
            kept.append(torch.cat([chosen, always]).sort().values)
        return kept

    @staticmethod
    def _drop(h, pos, valid, visual: VisualTokens, kept_local):
        """Remove the visual tokens not in kept_local; returns the new left-aligned layout."""
        lists, new_vpos = [], []
        for b in range(h.shape[0]):
            real = valid[b].clone()
            real[visual.pos[b]] = False
            keep_vis = visual.pos[b][kept_local[b]]
            idx = torch.cat([torch.nonzero(real).squeeze(1), keep_vis]).sort().values
            lists.append(idx)
            new_vpos.append(torch.searchsorted(idx, keep_vis))
        index, new_valid = pack_rows(lists)
        shift = [index.shape[1] - l.numel() for l in lists]
        visual = VisualTokens([p + s for p, s in zip(new_vpos, shift)],
                              [g[k] for g, k in zip(visual.grid, kept_local)], visual.base, visual.scale)
        return gather_tokens(h, index), torch.gather(pos, 1, index), new_valid, visual

    # ----------------------------------------------------------------- decode
    @staticmethod
    def decode(lm, embeds, positions, new_valid, cache: StarCache):
        """Run new tokens over the per-layer (possibly pruned) caches."""
        impl = lm.config._attn_implementation
        cover_positions(lm, cache.seen_tokens + embeds.shape[1])  # positions never exceed this count
        h = embeds
        for i, layer in enumerate(lm.layers):
            cache.add_token_info(i, positions, new_valid)
            mask = attention_mask_for(impl, positions, cache.key_positions[i], cache.key_valid[i],
                                      h.shape[1], h.dtype)
            h = layer(h, attention_mask=mask, position_ids=positions, past_key_value=cache, use_cache=True)[0]
        return lm.norm(h)


def cover_positions(lm, n: int) -> None:
    """Make every layer's rotary table hold `n` positions. Each layer grows its own table only
    to its own cache length, which after pruning is shorter than the positions it holds
    (see patches/rotary.py); a plain int comparison per layer, no device sync."""
    for layer in lm.layers:
        rot = layer.self_attn.rotary_emb
        if n > rot.max_seq_len_cached:
            rot._set_cos_sin_cache(seq_len=n, device=rot.inv_freq.device, dtype=rot.cos_cached.dtype)


def _rotate(q, cos, sin, position_ids):
    """Rotary embedding of q at the given positions (the same formula the layer applies)."""
    cos = cos[position_ids].unsqueeze(1)
    sin = sin[position_ids].unsqueeze(1)
    half = q.shape[-1] // 2
    rotated = torch.cat((-q[..., half:], q[..., :half]), dim=-1)
    return q * cos + rotated * sin
