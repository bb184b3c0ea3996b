"""Independent references of every method on transformers 5's stock LLaVA modules, written from
the official rules (the same rules as tests/official_reference.py, whose building blocks are
llava / transformers 4.37's; see that file and /work/notes/official-rules.md).

Only stock modules of an eager-attention `LlavaForConditionalGeneration` are used: the CLIP
tower with output_attentions, the projector, embed_tokens, the rotary module and the decoder
layers called one by one with an explicit causal mask. Decoder attention is computed here
explicitly (layernorm -> q/k projections -> rotary at the given positions -> causal fp32
softmax). Nothing from llava_star's scoring, selection or merging code is used, except the
published layer indices / schedules and `scale_layer`. Batch 1.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from llava_star.methods import SPARSEVLM_SCHEDULES
from reference_rules import Reference, causal, drop, pdrop_keeps, scaled, sparsevlm_keep, top, visionzip_rows  # noqa: F401  (re-exported)

MERGED = -1  # grid entry of a merged (recycled) token


# ---------------------------------------------------------------- stock building blocks
def lm(model):
    return model.model.language_model


def clip_outputs(model, px):
    tower = model.model.vision_tower
    return tower(px.to(next(tower.parameters()).dtype), output_attentions=True, output_hidden_states=True)


def splice(model, ids, image_rows):
    """The LLM input with the processor's placeholder run replaced by `image_rows` (so a
    vision-side method's LLM sees only its kept rows). -> (sequence [1, n, C], first image row)."""
    where = torch.nonzero(ids[0] == model.config.image_token_id).squeeze(1)
    start, end = int(where[0]), int(where[-1]) + 1
    emb = lm(model).embed_tokens
    return torch.cat([emb(ids[0, :start]), image_rows, emb(ids[0, end:])])[None], start


def image_features(model, px, keep=None):
    feats = clip_outputs(model, px).hidden_states[-2][:, 1:]
    if keep is not None:
        feats = feats[:, keep]
    return model.model.multi_modal_projector(feats)[0]


def run_layer(model, layer, h, pos):
    return layer(h, attention_mask=causal(h.shape[1], h.dtype), position_embeddings=lm(model).rotary_emb(h, pos))


def attention(model, layer, h, pos, rows=None):
    """Layer `layer`'s own attention probabilities on its input h at positions pos, heads
    averaged; rows: query rows to return (all by default). -> [len(rows), n]."""
    att = layer.self_attn
    x = layer.input_layernorm(h)
    n, hd = h.shape[1], att.head_dim
    q = att.q_proj(x).view(1, n, -1, hd).transpose(1, 2)
    k = att.k_proj(x).view(1, n, -1, hd).transpose(1, 2)
    cos, sin = lm(model).rotary_emb(x, pos)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows).view(-1)
    logits = q[:, :, rows] @ k.transpose(2, 3) / math.sqrt(hd) + causal(n)[:, :, rows]
    return logits.float().softmax(dim=-1).mean(dim=1)[0]


# ---------------------------------------------------------------- vision-side methods
def star(model, ids, px, stage1: int, layer: int, keep: int) -> Reference:
    """STAR: column mean of the select layer's attention (all rows, heads averaged, CLS column
    dropped), top stage1 patches; at decoder layer K, layer K-1's attention from the text after
    the image (mean over those rows), top `keep`; original positions."""
    clip = clip_outputs(model, px)
    col = clip.attentions[-2].mean(dim=1)[0].mean(dim=0)[1:]
    kept1 = top(col, stage1)
    h, start = splice(model, ids, model.model.multi_modal_projector(clip.hidden_states[-2][:, 1:][:, kept1])[0])
    pos = torch.arange(h.shape[1])[None]
    vis = torch.arange(start, start + stage1)
    grid, per_layer, kept, prev = kept1.clone(), [], [], None
    layers = lm(model).layers
    for i, lay in enumerate(layers):
        if i == layer:
            a = attention(model, layers[i - 1], *prev)
            text = torch.arange(int(vis[-1]) + 1, prev[0].shape[1])
            s = a[text][:, vis].mean(0)
            h, pos, grid, vis = drop(h, pos, grid, vis, top(s, keep), reindex=False)
            kept.append(grid.clone())
        per_layer.append(len(vis))
        prev = (h, pos)
        h = run_layer(model, lay, h, pos)
    return Reference(kept1, kept, per_layer)


def fastervlm(model, ids, px, keep: int) -> Reference:
    score = clip_outputs(model, px).attentions[-2].mean(1)[0, 0, 1:]
    return Reference(top(score, keep), [], [keep] * len(lm(model).layers))


def visionzip(model, ids, px, dominant: int, contextual: int) -> Reference:
    """VisionZip: CLS + (dominant - 1) patches by CLS attention of the select layer (summed over
    heads), the rest merged into `contextual` tokens by that layer's head-averaged keys."""
    clip = clip_outputs(model, px)
    layer = model.model.vision_tower.encoder.layers[-2]
    dom, rows = visionzip_rows(clip, layer, dominant, contextual)
    block = model.model.multi_modal_projector(rows[None])[0]
    return Reference(dom, [], [dominant + contextual] * len(lm(model).layers), [contextual], block)


# ---------------------------------------------------------------- decoder-side methods
def fastv(model, ids, px, k: int, keep: int) -> Reference:
    """FastV: at layer k, layer k-1's attention from the LAST token, top `keep`; original positions."""
    h, start = splice(model, ids, image_features(model, px))
    n_vis = h.shape[1] - (ids.shape[1] - int((ids[0] == model.config.image_token_id).sum()))
    grid, pos = torch.arange(n_vis), torch.arange(h.shape[1])[None]
    vis = torch.arange(start, start + n_vis)
    per_layer, prev, kept = [], None, []
    layers = lm(model).layers
    for i, layer in enumerate(layers):
        if i == k:
            s = attention(model, layers[i - 1], *prev, rows=[-1])[0, vis]
            h, pos, grid, vis = drop(h, pos, grid, vis, top(s, keep), reindex=False)
            kept.append(grid.clone())
        per_layer.append(len(vis))
        prev = (h, pos)
        h = run_layer(model, layer, h, pos)
    return Reference(torch.arange(n_vis), kept, per_layer)


def pdrop(model, ids, px, keeps: Sequence[int], layers=(8, 16, 24)) -> Reference:
    """PDrop: at rank layer l, layer l's OWN attention from the last token on its input; layers
    >= l see the kept set; positions re-indexed 0..n-1."""
    h, start = splice(model, ids, image_features(model, px))
    n_vis = 576
    grid, pos = torch.arange(n_vis), torch.arange(h.shape[1])[None]
    vis = torch.arange(start, start + n_vis)
    decoder = lm(model).layers
    stages = dict(zip(scaled(layers, len(decoder)), keeps))
    per_layer, kept = [], []
    for i, layer in enumerate(decoder):
        if i in stages:
            s = attention(model, layer, h, pos, rows=[h.shape[1] - 1])[0][vis]
            h, pos, grid, vis = drop(h, pos, grid, vis, top(s, stages[i]), reindex=True)
            kept.append(grid.clone())
        per_layer.append(len(vis))
        h = run_layer(model, layer, h, pos)
    return Reference(torch.arange(n_vis), kept, per_layer)


def sparsevlm(model, ids, px, budget: int = 64, recycle: bool = True, layers=(2, 6, 15)) -> Reference:
    """SparseVLM: raters once from the input embeddings; at ranking layer l, layer l runs on all
    current tokens and its own attention from the raters ranks the visual tokens; the output of
    layer l is pruned; the top 30% of the dropped (by score) are clustered (DPC-kNN) into
    int(n_rec / 10) + 1 merged tokens after the kept ones; positions re-indexed."""
    h, start = splice(model, ids, image_features(model, px))
    grid = torch.arange(576)
    v, t = h[0, start:start + 576], h[0, start + 576:]
    m = (v @ t.T).softmax(dim=1).mean(dim=0)
    raters = torch.nonzero(m > m.mean()).squeeze(1)
    decoder = lm(model).layers
    stages = dict(zip(scaled(layers, len(decoder)), SPARSEVLM_SCHEDULES[budget]))
    pos = torch.arange(h.shape[1])[None]
    per_layer, kept, merged = [], [], []
    for i, layer in enumerate(decoder):
        per_layer.append(len(grid))
        out = run_layer(model, layer, h, pos)
        if i in stages:
            n_vis = len(grid)
            text = start + n_vis
            s = attention(model, layer, h, pos, rows=text + raters)[:, start:text].mean(0)
            out, keep, c = sparsevlm_keep(out, s, start, n_vis, stages[i], recycle)
            pos = torch.arange(out.shape[1])[None]
            grid = torch.cat([grid[keep], torch.full((c,), MERGED)])
            kept.append(grid[grid >= 0])
            merged.append(c)
        h = out
    return Reference(torch.arange(576), kept, per_layer, merged)


