"""The host-independent pieces of the official-rule references (tests/official_reference.py
for the llava host, tests_hf/reference_hf.py for the hf host): what a reference records, the
causal mask, selection order, token drops, DPC-kNN, PDrop's counts, layer scaling."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from llava_star.methods import scale_layer


@dataclass
class Reference:
    stage1_kept: torch.Tensor                      # grid indices reaching the LLM
    decoder_kept: List[torch.Tensor] = field(default_factory=list)  # per decoder stage
    tokens_per_layer: List[int] = field(default_factory=list)       # visual tokens each layer ran on
    merged: List[int] = field(default_factory=list)                 # merged tokens added per stage
    image_block: Optional[torch.Tensor] = None     # the image's rows at the LLM input (VisionZip)


def causal(n: int, dtype=torch.float32):
    return torch.full((n, n), torch.finfo(dtype).min).triu(1)[None, None]


def top(scores, k):
    """torch.topk, returned ascending (sequence order), as the official codes sort."""
    return scores.topk(k).indices.sort().values


def scaled(layers: Sequence[int], num_layers: int) -> List[int]:
    """Published 32-layer indices on a shallower model, kept distinct."""
    out = [scale_layer(l, num_layers) for l in layers]
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    return out


def density_peak_means(x, k):
    """DPC-kNN as in SparseVLM's cluster_and_merge, written out token by token (no tie noise:
    fp32 densities of distinct real tokens do not tie): distance / sqrt(C); density exp(-mean
    squared distance to the k nearest, self included); delta = distance to the nearest denser
    token (the largest distance overall for the densest); centers = k largest delta * density;
    each token joins its nearest center; mean / (count + 1e-6)."""
    n, c = x.shape
    d = torch.cdist(x[None], x[None])[0] / c ** 0.5
    # densities compared at 1e-4 of the exponent, equal ones by index (the engine's documented
    # stand-in for the official unseeded tie noise)
    level = [round(float((d[i].sort().values[:k] ** 2).mean()) * 1e4) for i in range(n)]
    rho = [math.exp(-lv / 1e4) for lv in level]
    far = float(d.max())
    denser = lambda j, i: level[j] < level[i] or (level[j] == level[i] and j < i)  # noqa: E731
    delta = [min([float(d[i, j]) for j in range(n) if denser(j, i)], default=far) for i in range(n)]
    score = torch.tensor([delta[i] * rho[i] for i in range(n)])
    centers = score.topk(k).indices.tolist()
    groups = {ci: [ci] for ci in centers}
    for i in range(n):
        if i not in groups:
            groups[min(centers, key=lambda ci: float(d[ci, i]))].append(i)
    return torch.stack([x[groups[ci]].sum(0) / (len(groups[ci]) + 1e-6) for ci in centers])


def drop(h, pos, grid, vis, keep_idx, reindex: bool):
    """Keep the visual rows `vis[keep_idx]` (and every non-visual row)."""
    gone = set(vis.tolist()) - set(vis[keep_idx].tolist())
    rows = torch.tensor([r for r in range(h.shape[1]) if r not in gone])
    h = h[:, rows]
    pos = torch.arange(len(rows))[None] if reindex else pos[:, rows]
    new_vis = torch.nonzero(torch.isin(rows, vis[keep_idx])).squeeze(1)
    return h, pos, grid[keep_idx], new_vis


def pdrop_keeps(budget: Optional[int], n0: int = 576) -> List[int]:
    """PDrop counts: official ratios 0.5/0.25/0.125 of the image's tokens (int()), or this
    project's documented budget mapping 4B/2B/B (each at most n0)."""
    if budget is None:
        return [int(n0 * r) for r in (0.5, 0.25, 0.125)]
    return [min(n0, budget * 4), min(n0, budget * 2), budget]


def visionzip_rows(clip, layer, dominant: int, contextual: int):
    """VisionZip's rule on CLIP outputs (hidden states and attentions of every layer) and the
    select layer `layer`: the dominant patches (CLS attention, heads summed, top D-1,
    ascending) and the rows the projector gets: [CLS, dominant, contextual in target order]."""
    hid = clip.hidden_states[-2][0]
    att = layer.self_attn
    keys = att.k_proj(layer.layer_norm1(clip.hidden_states[-3][0]))
    keys = keys.view(hid.shape[0], att.num_heads, att.head_dim).mean(1)
    dom = clip.attentions[-2][0, :, 0, 1:].sum(0).topk(dominant - 1).indices.sort().values
    rest = torch.tensor([p for p in range(hid.shape[0] - 1) if p not in set(dom.tolist())])
    unit = [keys[1 + p] / keys[1 + p].norm() for p in rest.tolist()]
    step = max(1, len(rest) // contextual)
    targets = list(range(0, len(rest), step))[:contextual]
    joined = {t: [] for t in targets}
    for i in range(len(rest)):
        if i in joined:
            continue
        sims = [float(unit[i] @ unit[t]) for t in targets]
        joined[targets[sims.index(max(sims))]].append(hid[1 + rest[i]])
    ctx = [hid[1 + rest[t]] + (torch.stack(joined[t]).mean(0) if joined[t] else 0) for t in targets]
    rows = torch.cat([hid[:1], hid[1 + dom], torch.stack(ctx)])
    return dom, rows


def sparsevlm_keep(out, s, start: int, n_vis: int, keep_n: int, recycle: bool):
    """SparseVLM's pruning of a ranking layer's output: keep the top min(keep_n, n - 1)
    visual rows by score s; recycle the top 30% (+1) of the dropped by score into int(n/10)+1
    DPC-kNN means placed after the kept rows. -> (out, kept indices, merged count)."""
    text = start + n_vis
    keep = top(s, min(keep_n, n_vis - 1))
    gone = torch.tensor([j for j in range(n_vis) if j not in set(keep.tolist())], dtype=torch.long)
    new, c = [out[0, start + keep]], 0
    if recycle and len(gone):
        n_rec = int(len(gone) * 0.3) + 1
        pick = gone[s[gone].topk(n_rec).indices]
        c = int(n_rec / 10) + 1
        new.append(density_peak_means(out[0, start + pick], c))
    return torch.cat([out[:, :start], torch.cat(new)[None], out[:, text:]], dim=1), keep, c
