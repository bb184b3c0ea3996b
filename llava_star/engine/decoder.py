"""The decoder loop: runs the LLM's layers itself so decoder stages can remove visual tokens.

At prefill, each decoder stage scores the visual tokens from the previous layer's q/k
(queries recomputed for the scoring rows only, keys read from that layer's cache), asks the
selector which to keep and physically drops the rest from the hidden states; later layers
never see them and never cache them. Every token keeps its original position id. The host
(`LayerHost`) builds masks from positions and calls its own layers, so the loop knows no
transformers version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Sequence

import torch

from ..pruning.merge import cluster_merge
from ..pruning.raters import sparsevlm_raters
from ..pruning.scores import attention_probs, attention_received, rater_rows
from ..pruning.select import gather_tokens, pack_rows
from .context import MERGED, NEWLINE
from .counts import ImageTokens, decoder_keep, recycle_size, recycled_count
from .plan import DecoderStage, Plan
from .seams import Hooks, Selection


class LayerHost(Protocol):
    """What the loop needs from a host's language model (see hosts/llava/layers.py).
    The cache it passes around must offer `add_token_info(layer, positions, valid)`,
    `key_positions` and `key_valid` (per layer)."""
    num_layers: int

    def begin(self, n_positions: int) -> None: ...        # e.g. grow rotary tables
    def run(self, i: int, h, q_pos, k_pos, k_valid, cache): ...   # layer i over h, caching its k/v
    def queries(self, i: int, h_rows, row_pos): ...       # layer i's rotated queries [B,H,Q,D]
    def keys(self, i: int, h, pos): ...                  # layer i's rotated keys of its input h [B,Hk,T,D]
    def cached_keys(self, i: int, cache): ...            # layer i's cached keys [B,Hk,T,D]
    def norm(self, h): ...


@dataclass
class VisualTokens:
    """Where each sample's visual tokens sit in the current layout, and which grid cells they
    came from. `pos[b]` / `grid[b]` are aligned 1-D LongTensors; grid -1 marks a NeXT
    `image_newline` row, which is never dropped (it is layout, not content). `images[b]`
    resolves a stage's keep count for the sample (`unit`: see engine.counts)."""
    pos: List[torch.Tensor]
    grid: List[torch.Tensor]
    images: Sequence[ImageTokens]
    unit: str = "image"
    raters: Optional[torch.Tensor] = None  # [B,T] bool: the rows chosen to rate (embedding_raters)

    def keep_count(self, b: int, keep) -> int:
        return decoder_keep(keep, self.unit, self.images[b])


@dataclass
class DecoderResult:
    """hidden [B,T,C] after the final norm; per sample the visual tokens every layer saw; per
    stage, per sample, the scores of the visual tokens it ranked and the grid cells it kept."""
    hidden: torch.Tensor
    tokens_per_layer: List[List[int]]
    scores: List[List[torch.Tensor]]
    kept: List[List[torch.Tensor]]  # the grid index of every visual token after each stage
    merged: List[List[int]]  # per stage, per sample: merged tokens the stage added


class DecoderPruner:
    """Runs a plan's decoder stages over a host's layers."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.stages: Dict[int, DecoderStage] = {st.layer: st for st in plan.decoder}

    # ---------------------------------------------------------------- prefill
    def prefill(self, host: LayerHost, embeds, valid, visual: Optional[VisualTokens], cache,
                hooks: Hooks) -> DecoderResult:
        """Run every layer over a left-aligned prefill."""
        pos = positions_of(valid)
        host.begin(embeds.shape[1])
        if visual is not None and any(st.score == "embedding_raters" for st in self.plan.decoder):
            visual.raters = embedding_raters(embeds, valid, visual)
        h, scored_input = embeds, None  # scored_input: input of the layer a stage scores with
        counts = [[] for _ in range(embeds.shape[0])]
        stage_scores, stage_kept, stage_merged = [], [], []
        for i in range(host.num_layers):
            stage = self.stages.get(i)
            if stage is not None and visual is not None:
                with hooks.phase("decoder_scores"):
                    layer, h_in = (i, h) if stage.ranks == "own" else (i - 1, scored_input)
                    scores = self._score(host, layer, h_in, pos, valid, visual, stage, cache)
                    kept_local = self._select(scores, visual, stage, len(stage_kept), hooks)
                    merged = recycled(h, visual, kept_local, scores, len(stage_kept), hooks) if stage.recycle else None
                h, pos, valid, visual = drop(h, pos, valid, visual, kept_local, merged)
                if self.plan.positions == "reindex":
                    pos = positions_of(valid)
                stage_scores.append(scores)
                stage_kept.append(list(visual.grid))
                stage_merged.append([0 if m is None else int(m.shape[0]) for m in (merged or [None] * len(scores))])
            for b in range(h.shape[0]):
                counts[b].append(0 if visual is None else int(visual.pos[b].numel()))
            scored_input = h if (i + 1) in self.stages else None
            cache.add_token_info(i, pos, valid)
            h = host.run(i, h, pos, pos, valid, cache)
        return DecoderResult(host.norm(h), counts, stage_scores, stage_kept, stage_merged)

    @staticmethod
    def _score(host: LayerHost, layer_idx: int, h_in, pos, valid, visual: VisualTokens, stage, cache):
        """Attention each visual token receives in layer `layer_idx` (from its cache, or from
        its own projections of `h_in` for `ranks="own"`), from the stage's query rows.
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
        row_pos = torch.gather(pos, 1, row_index)
        q = host.queries(layer_idx, gather_tokens(h_in, row_index), row_pos)
        k = host.keys(layer_idx, h_in, pos) if stage.ranks == "own" else host.cached_keys(layer_idx, cache)
        allowed = (pos[:, None, :] <= row_pos[:, :, None]) & valid[:, None, :]
        probs = attention_probs(q, k, allowed)  # [B,H,Q,T]
        out = []
        for b, vpos in enumerate(visual.pos):
            voters = row_valid[b:b + 1]
            if stage.score == "raters":
                voters = rater_rows(probs[b:b + 1, :, :, vpos].mean(dim=1), voters)
            elif stage.score == "embedding_raters":
                voters = voters & torch.gather(visual.raters[b:b + 1], 1, row_index[b:b + 1])
            out.append(attention_received(probs[b:b + 1, :, :, vpos], voters)[0])
        return out

    def _select(self, scores, visual: VisualTokens, stage, stage_idx: int, hooks: Hooks):
        """Per sample, positions (into visual.pos[b]) of the tokens to keep, ascending."""
        kept = []
        for b, s in enumerate(scores):
            grid = visual.grid[b]
            patch = torch.nonzero(grid != NEWLINE).squeeze(1)  # newline rows always stay
            always = torch.nonzero(grid == NEWLINE).squeeze(1)
            n = patch.numel()
            k = min(visual.keep_count(b, stage.keep), n)
            if n == 0:
                chosen = patch
            else:
                gen = torch.Generator().manual_seed(self.plan.seed + stage.layer) if stage.score == "random" else None
                sel = Selection("decoder", stage_idx, b, None if gen is not None else s[patch], grid[patch], k, gen)
                chosen = patch[hooks.selector(sel).to(patch.device)]
            kept.append(torch.cat([chosen, always]).sort().values)
        return kept

    # ----------------------------------------------------------------- decode
    def decode(self, host: LayerHost, embeds, new_valid, cache, n_positions: int):
        """Run new tokens over the per-layer (possibly pruned) caches; positions never exceed
        `n_positions`. Each layer continues from the last position it holds (after a
        re-indexing stage, later layers hold smaller positions)."""
        host.begin(n_positions)
        h, q = embeds, embeds.shape[1]
        positions = cache.next_positions(q, 0)
        for i in range(host.num_layers):
            if self.plan.positions == "reindex" and i:
                positions = cache.next_positions(q, i)
            cache.add_token_info(i, positions, new_valid)
            h = host.run(i, h, positions, cache.key_positions[i], cache.key_valid[i], cache)
        return host.norm(h)


def positions_of(valid: torch.Tensor) -> torch.Tensor:
    """0..n-1 over each sample's real tokens (padding gets 0)."""
    return (valid.long().cumsum(1) - 1).clamp_min(0)


def embedding_raters(embeds, valid, visual: VisualTokens) -> torch.Tensor:
    """[B,T] bool: SparseVLM's raters among the real tokens after each image, chosen once from
    the LLM input embeddings."""
    rows = []
    for b, vpos in enumerate(visual.pos):
        none = torch.zeros(valid.shape[1], dtype=torch.bool, device=valid.device)
        if vpos.numel() == 0:
            rows.append(none)
            continue
        real = torch.nonzero(valid[b]).squeeze(1)
        after = real[real > vpos[-1]]
        if after.numel() == 0:
            raise ValueError("no text tokens follow the image; SparseVLM's raters are text tokens after it")
        chosen = sparsevlm_raters(embeds[b:b + 1, vpos], embeds[b:b + 1, after])[0]
        rows.append(none.index_put((after,), chosen))  # not in place: on meta, only shapes
    return torch.stack(rows)


def recycled(h, visual: VisualTokens, kept_local, scores, stage_idx: int, hooks: Hooks) -> List[Optional[torch.Tensor]]:
    """Per sample, SparseVLM's merged tokens [c, C] made from the visual tokens this stage
    drops (None where it drops none): the selector picks the best-scored 30% (+1) of them
    ("recycle" selections), which are clustered by DPC-kNN into merged tokens, without the
    official code's random tie-break noise."""
    out = []
    for b, kept in enumerate(kept_local):
        dropped = torch.ones(visual.pos[b].numel(), dtype=torch.bool, device=kept.device)
        dropped[kept] = False
        dropped &= visual.grid[b] != NEWLINE
        rows = torch.nonzero(dropped).squeeze(1)
        if rows.numel() == 0:
            out.append(None)
            continue
        n = recycle_size(rows.numel())
        pick = rows[hooks.selector(Selection("recycle", stage_idx, b, scores[b][rows], visual.grid[b][rows], n))]
        states = h[b, visual.pos[b][pick]][None]
        out.append(cluster_merge(states, recycled_count(rows.numel()), tiebreak_noise=0.0)[0])
    return out


def drop(h, pos, valid, visual: VisualTokens, kept_local, merged=None):
    """Remove the visual tokens not in kept_local and put `merged` tokens (per sample, or
    None) right after the kept ones; returns the new left-aligned layout. Positions travel
    with the tokens (a merged token takes its image's last kept position; re-indexing
    stages recompute them)."""
    if merged is not None and any(m is not None for m in merged):
        return _drop_and_insert(h, pos, valid, visual, kept_local, merged)
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
    raters = None if visual.raters is None else torch.gather(visual.raters, 1, index) & new_valid
    visual = VisualTokens([p + s for p, s in zip(new_vpos, shift)],
                          [g[k] for g, k in zip(visual.grid, kept_local)], visual.images, visual.unit, raters)
    return gather_tokens(h, index), torch.gather(pos, 1, index), new_valid, visual


def _drop_and_insert(h, pos, valid, visual: VisualTokens, kept_local, merged):
    """`drop` with new tokens: each sample's sequence is rebuilt as [before the image, kept
    visual tokens, merged tokens, after the image] and the batch left-aligned again."""
    rows_h, rows_pos, rows_rater, vis_pos, grids = [], [], [], [], []
    for b in range(h.shape[0]):
        vpos, keep_vis = visual.pos[b], visual.pos[b][kept_local[b]]
        real = torch.nonzero(valid[b]).squeeze(1)
        first = vpos.min() if vpos.numel() else real[-1] + 1
        before, after = real[real < first], real[real > (vpos.max() if vpos.numel() else real[-1])]
        new = merged[b] if merged[b] is not None else h.new_zeros(0, h.shape[-1])
        anchor = pos[b, keep_vis[-1] if keep_vis.numel() else before[-1]]
        rows_h.append(torch.cat([h[b, before], h[b, keep_vis], new, h[b, after]]))
        rows_pos.append(torch.cat([pos[b, before], pos[b, keep_vis], anchor.repeat(new.shape[0]), pos[b, after]]))
        flags = visual.raters[b] if visual.raters is not None else torch.zeros_like(valid[b])
        rows_rater.append(torch.cat([flags[before], flags[keep_vis], flags.new_zeros(new.shape[0]), flags[after]]))
        vis_pos.append(before.numel() + torch.arange(keep_vis.numel() + new.shape[0], device=h.device))
        grids.append(torch.cat([visual.grid[b][kept_local[b]],
                                torch.full((new.shape[0],), MERGED, dtype=torch.long, device=visual.grid[b].device)]))
    length = max(r.shape[0] for r in rows_h)
    out_h = h.new_zeros(h.shape[0], length, h.shape[-1])
    out_pos = torch.zeros(h.shape[0], length, dtype=pos.dtype, device=pos.device)
    out_valid = torch.zeros(h.shape[0], length, dtype=torch.bool, device=valid.device)
    out_rater = torch.zeros_like(out_valid)
    for b, r in enumerate(rows_h):
        pad = length - r.shape[0]
        out_h[b, pad:], out_pos[b, pad:], out_valid[b, pad:], out_rater[b, pad:] = r, rows_pos[b], True, rows_rater[b]
        vis_pos[b] = vis_pos[b] + pad
    raters = out_rater if visual.raters is not None else None
    return out_h, out_pos, out_valid, VisualTokens(vis_pos, grids, visual.images, visual.unit, raters)
