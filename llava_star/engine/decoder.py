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

from ..pruning.scores import attention_probs, attention_received, rater_rows
from ..pruning.select import gather_tokens, pack_rows
from .counts import ImageTokens, decoder_keep
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

    def keep_count(self, b: int, keep) -> int:
        return decoder_keep(keep, self.unit, self.images[b])


@dataclass
class DecoderResult:
    """hidden [B,T,C] after the final norm; per sample the visual tokens every layer saw; per
    stage, per sample, the scores of the visual tokens it ranked and the grid cells it kept."""
    hidden: torch.Tensor
    tokens_per_layer: List[List[int]]
    scores: List[List[torch.Tensor]]
    kept: List[List[torch.Tensor]]


class DecoderPruner:
    """Runs a plan's decoder stages over a host's layers."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.stages: Dict[int, DecoderStage] = {st.layer: st for st in plan.decoder}

    # ---------------------------------------------------------------- prefill
    def prefill(self, host: LayerHost, embeds, valid, visual: Optional[VisualTokens], cache,
                hooks: Hooks) -> DecoderResult:
        """Run every layer over a left-aligned prefill."""
        pos = (valid.long().cumsum(1) - 1).clamp_min(0)
        host.begin(embeds.shape[1])
        h, scored_input = embeds, None  # scored_input: input of the layer a stage scores with
        counts = [[] for _ in range(embeds.shape[0])]
        stage_scores, stage_kept = [], []
        for i in range(host.num_layers):
            stage = self.stages.get(i)
            if stage is not None and visual is not None:
                with hooks.phase("decoder_scores"):
                    scores = self._score(host, i - 1, scored_input, pos, valid, visual, stage, cache)
                    kept_local = self._select(scores, visual, stage, len(stage_kept), hooks)
                stage_scores.append(scores)
                stage_kept.append([g[k] for g, k in zip(visual.grid, kept_local)])
                h, pos, valid, visual = drop(h, pos, valid, visual, kept_local)
            for b in range(h.shape[0]):
                counts[b].append(0 if visual is None else int(visual.pos[b].numel()))
            scored_input = h if (i + 1) in self.stages else None
            cache.add_token_info(i, pos, valid)
            h = host.run(i, h, pos, pos, valid, cache)
        return DecoderResult(host.norm(h), counts, stage_scores, stage_kept)

    @staticmethod
    def _score(host: LayerHost, layer_idx: int, h_in, pos, valid, visual: VisualTokens, stage, cache):
        """Attention each visual token receives in layer `layer_idx`, from the stage's query
        rows. Returns a list (per sample) of scores aligned with visual.pos[b]."""
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
        k = host.cached_keys(layer_idx, cache)
        allowed = (pos[:, None, :] <= row_pos[:, :, None]) & valid[:, None, :]
        probs = attention_probs(q, k, allowed)  # [B,H,Q,T]
        out = []
        for b, vpos in enumerate(visual.pos):
            voters = row_valid[b:b + 1]
            if stage.score == "raters":
                voters = rater_rows(probs[b:b + 1, :, :, vpos].mean(dim=1), voters)
            out.append(attention_received(probs[b:b + 1, :, :, vpos], voters)[0])
        return out

    def _select(self, scores, visual: VisualTokens, stage, stage_idx: int, hooks: Hooks):
        """Per sample, positions (into visual.pos[b]) of the tokens to keep, ascending."""
        kept = []
        for b, s in enumerate(scores):
            grid = visual.grid[b]
            patch = torch.nonzero(grid >= 0).squeeze(1)  # newline rows always stay
            always = torch.nonzero(grid < 0).squeeze(1)
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
    @staticmethod
    def decode(host: LayerHost, embeds, positions, new_valid, cache, n_positions: int):
        """Run new tokens over the per-layer (possibly pruned) caches; positions never exceed
        `n_positions`."""
        host.begin(n_positions)
        h = embeds
        for i in range(host.num_layers):
            cache.add_token_info(i, positions, new_valid)
            h = host.run(i, h, positions, cache.key_positions[i], cache.key_valid[i], cache)
        return host.norm(h)


def drop(h, pos, valid, visual: VisualTokens, kept_local):
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
                          [g[k] for g, k in zip(visual.grid, kept_local)], visual.images, visual.unit)
    return gather_tokens(h, index), torch.gather(pos, 1, index), new_valid, visual
