"""One prefill, from llava's merged sequence to `PruneRecord`s.

`layout` left-aligns the batch (so the last column is every sample's last real token,
whatever the host's padding side), applies a deferred (multi-crop) vision stage by dropping
rows after the merge, and says which grid cell every visual row holds; `prefill` runs the
decoder loop over it and writes the records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from ..pruning.select import gather_tokens, pack_rows
from .context import MERGED, PrefillContext
from .counts import ImageTokens
from .decoder import DecoderPruner, DecoderResult, LayerHost, VisualTokens
from .record import PruneRecord
from .seams import Hooks


@dataclass
class SampleLayout:
    """One sample: `rows` indices (into the merged sequence) of the tokens it keeps, and for
    its image (None for a text-only sample) where it starts among them, the grid cell of
    every image row, its token counts, the vision stage's scores by grid index and the
    image's (start, length) in the merged sequence."""
    rows: torch.Tensor
    start: int = 0
    grid: torch.Tensor = None
    image: Optional[ImageTokens] = None
    stage1_scores: Optional[torch.Tensor] = None
    span: Optional[tuple] = None


def sample_layouts(ctx: Optional[PrefillContext], valid_in: torch.Tensor, per_crop: int) -> List[SampleLayout]:
    batch = valid_in.shape[0]
    if ctx is None or ctx.spans is None:
        return [SampleLayout(torch.nonzero(valid_in[b]).squeeze(1)) for b in range(batch)]
    if len(ctx.spans) != batch:
        # generate() expands the merged batch (num_beams, num_return_sequences) after llava's merge
        if batch % len(ctx.spans):
            raise ValueError(f"batch of {batch} rows does not match the {len(ctx.spans)} samples llava merged")
        ctx = ctx.repeat(batch // len(ctx.spans))
    out, first_crop, v = [], 0, ctx.vision
    for b, span in enumerate(ctx.spans):
        real = torch.nonzero(valid_in[b]).squeeze(1)
        n_crops = ctx.crops[b] if ctx.crops else 1
        crops = slice(first_crop, first_crop + n_crops)
        first_crop += n_crops
        if span is None:
            out.append(SampleLayout(real, grid=torch.zeros(0, dtype=torch.long)))
            continue
        start, length = span
        if ctx.layouts is not None:
            grid = ctx.layouts[b]
            rows = torch.ones(length, dtype=torch.bool)
            if v.keep_mask is not None:  # deferred vision stage: drop after llava's merge
                m = v.keep_mask[crops].reshape(-1).cpu()
                rows = (grid < 0) | m[grid.clamp_min(0)]
            image = ImageTokens(n_crops, per_crop, int((grid >= 0).sum()))
            grid = grid[rows]
            keep_rank = torch.cat([torch.arange(start), start + torch.nonzero(rows).squeeze(1),
                                   torch.arange(start + length, real.numel())])
            real = real[keep_rank.to(real.device)]
        else:
            rows = v.grid if v.grid is not None else v.kept  # the tower's output rows, when it pruned
            grid = rows[b].cpu() if rows is not None and rows.shape[1] == length else torch.arange(length)
            image = ImageTokens.single(per_crop)
        scores = None if v.scores is None else v.scores[crops].reshape(-1).cpu()
        out.append(SampleLayout(real, start, grid, image, scores, span))
    return out


def prefill(pruner: DecoderPruner, host: LayerHost, embeds, attention_mask, ctx: Optional[PrefillContext],
            per_crop: int, cache, hooks: Hooks):
    """Run the decoder over llava's merged `embeds`; returns (hidden, records)."""
    device = embeds.device
    valid_in = (attention_mask.bool() if attention_mask is not None
                else torch.ones(embeds.shape[:2], dtype=torch.bool, device=device))
    samples = sample_layouts(ctx, valid_in, per_crop)
    index, valid = pack_rows([s.rows for s in samples])
    embeds = gather_tokens(embeds, index)
    visual = None
    if any(s.image is not None for s in samples):
        shift = [index.shape[1] - s.rows.numel() for s in samples]
        visual = VisualTokens(
            [torch.arange(s.grid.numel(), device=device) + s.start + shift[b] for b, s in enumerate(samples)],
            [s.grid.to(device) for s in samples],
            [s.image or ImageTokens.single(per_crop) for s in samples], pruner.plan.unit)
    result = pruner.prefill(host, embeds, valid, visual, cache, hooks)
    records = [record(s, b, result, pruner.plan) for b, s in enumerate(samples)]
    hooks.prefilled(records)
    return result.hidden, records


def record(s: SampleLayout, b: int, result: DecoderResult, plan) -> PruneRecord:
    patches = lambda g: g[g >= 0].cpu()  # noqa: E731  (newline rows are not patches)
    grid = s.grid if s.grid is not None else torch.zeros(0, dtype=torch.long)
    stage_scores, before = [], grid
    for scores, kept in zip(result.scores, result.kept):  # the patches each stage ranked
        rows = torch.nonzero(before >= 0).squeeze(1)
        stage_scores.append(scores[b][rows.to(scores[b].device)].cpu())
        before = kept[b]
    image = s.image
    return PruneRecord(
        num_patches=0 if image is None else (image.per_crop * image.crops if plan.unit == "crop" else image.rows),
        stage1_kept=patches(grid),
        final_kept=patches(result.kept[-1][b] if result.kept else grid),
        tokens_per_layer=result.tokens_per_layer[b],
        image_span=s.span,
        stage1_scores=s.stage1_scores,
        stage2_scores=stage_scores,
        decoder_kept=[patches(k[b]) for k in result.kept],
        merged=([int((grid == MERGED).sum())] if plan.vision is not None else []) + [m[b] for m in result.merged],
    )
