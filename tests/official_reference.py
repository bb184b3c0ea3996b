"""Independent references of the baselines, written from their official code's rules
(file and line references in /work/notes/official-rules.md, summarised in each docstring).

Only stock llava / transformers modules are used: the CLIP tower with output_attentions, the
projector, embed_tokens, and the decoder layers called one by one with an explicit causal mask.
Decoder attention is computed here explicitly (layernorm -> q/k projections -> rotary at the
given positions -> causal fp32 softmax). Nothing from llava_star's scoring, selection or
merging code is used, except the published layer indices / schedules and `scale_layer`.
Batch 1 (the official codes are batch-1 code or per-sample loops).

Each reference returns a `Reference`: kept grid indices (0..575 patch indices of the image, on
LLaVA-NeXT crop * 576 + patch) per stage, visual tokens per decoder layer, and merged tokens.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from llava_star.config import SPARSEVLM_SCHEDULES
from reference_rules import Reference, causal, drop, pdrop_keeps, scaled, sparsevlm_keep, top, visionzip_rows  # noqa: F401  (re-exported)

MERGED = -1  # grid entry of a merged (recycled) token: not a cell of the image


# ---------------------------------------------------------------- stock building blocks
def clip_outputs(model, px):
    tower = model.get_vision_tower().vision_tower
    return tower(px.to(tower.dtype), output_attentions=True, output_hidden_states=True)


def splice(model, ids, image_rows):
    """LLaVA-1.5's splice: text embeddings before the <image> placeholder, the image rows, the
    rest. Returns (sequence [1, n, C], index of the first image row)."""
    from llava.constants import IMAGE_TOKEN_INDEX

    where = int(torch.nonzero(ids[0] == IMAGE_TOKEN_INDEX)[0])
    emb = model.get_model().embed_tokens
    return torch.cat([emb(ids[0, :where]), image_rows, emb(ids[0, where + 1:])])[None], where


def llm_input(model, ids, px, image_sizes=None):
    """(sequence, first image row, grid index of every image row; -1 marks a newline row)."""
    if image_sizes is None:
        feats = clip_outputs(model, px).hidden_states[-2][:, 1:]
        h, start = splice(model, ids, model.get_model().mm_projector(feats)[0])
        return h, start, torch.arange(feats.shape[1])
    return next_input(model, ids, px, image_sizes)


def next_input(model, ids, px, image_sizes):
    """LLaVA-NeXT: llava's own merge (stock prepare_inputs_labels_for_multimodal), and the grid
    index of each merged row rebuilt from the geometry (tests/test_next.py `expected_layout`)."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from test_next import expected_layout

    out = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, px, image_sizes)
    h = out[4]
    start = int(torch.nonzero(ids[0] == IMAGE_TOKEN_INDEX)[0])
    layout = expected_layout(model, image_sizes[0], px.shape[1])
    return h, start, layout


def run_layer(layer, h, pos):
    return layer(h, attention_mask=causal(h.shape[1], h.dtype), position_ids=pos)[0]


def attention(layer, h, pos, rows=None):
    """Layer `layer`'s own attention probabilities on its input h at positions pos: its
    input_layernorm, q_proj / k_proj, rotary at `pos`, causal softmax in fp32, heads averaged.
    rows: query rows to return (all by default). -> [len(rows), n]."""
    att = layer.self_attn
    x = layer.input_layernorm(h)
    n, hd = h.shape[1], att.head_dim
    q = att.q_proj(x).view(1, n, att.num_heads, hd).transpose(1, 2)
    k = att.k_proj(x).view(1, n, att.num_key_value_heads, hd).transpose(1, 2)
    cos, sin = att.rotary_emb(k, seq_len=int(pos.max()) + 1)
    q, k = apply_rotary_pos_emb(q, k, cos, sin, pos)
    k = k.repeat_interleave(att.num_heads // att.num_key_value_heads, dim=1)
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows).view(-1)
    logits = q[:, :, rows] @ k.transpose(2, 3) / math.sqrt(hd) + causal(n)[:, :, rows]
    return logits.float().softmax(dim=-1).mean(dim=1)[0]


# ---------------------------------------------------------------- vision-side methods
def fastervlm(model, ids, px, keep: int) -> Reference:
    """CLS row of the select layer's (-2) attention, heads averaged, top `keep` patches."""
    clip = clip_outputs(model, px)
    score = clip.attentions[-2].mean(1)[0, 0, 1:]
    kept = top(score, keep)
    n_layers = len(model.get_model().layers)
    return Reference(kept, [], [keep] * n_layers)


def visionzip(model, ids, px, dominant: int, contextual: int) -> Reference:
    """VisionZip: CLS + (dominant - 1) patches by CLS attention of the select layer (summed over
    heads), the rest merged into `contextual` tokens by that layer's head-averaged keys
    (uniform-stride targets, argmax cosine, target + mean of joined). Image block at the LLM
    input: projector([CLS, dominant patches ascending, contextual in target order])."""
    clip = clip_outputs(model, px)
    layer = model.get_vision_tower().vision_tower.vision_model.encoder.layers[-2]
    dom, rows = visionzip_rows(clip, layer, dominant, contextual)
    block = model.get_model().mm_projector(rows[None])[0]
    n_layers = len(model.get_model().layers)
    return Reference(dom, [], [dominant + contextual] * n_layers, [contextual], block)


# ---------------------------------------------------------------- decoder-side methods
def fastv(model, ids, px, k: int, keep: int, image_sizes=None) -> Reference:
    """FastV (inplace mode): at layer k, the attention of layer k-1 (on its own input) from the
    LAST token, heads averaged, top `keep` image tokens; original position ids."""
    h, start, grid = llm_input(model, ids, px, image_sizes)
    pos = torch.arange(h.shape[1])[None]
    vis = torch.arange(start, start + len(grid))
    per_layer, prev, kept, first = [], None, [], grid.clone()
    for i, layer in enumerate(model.get_model().layers):
        if i == k:
            s = attention(model.get_model().layers[i - 1], *prev, rows=[-1])[0, vis]
            keep_idx = top(s, keep)
            h, pos, grid, vis = drop(h, pos, grid, vis, keep_idx, reindex=False)
            kept.append(grid.clone())
        per_layer.append(len(vis))
        prev = (h, pos)
        h = run_layer(layer, h, pos)
    return Reference(first[first >= 0], kept, per_layer)


def pdrop(model, ids, px, keeps: Sequence[int], layers=(8, 16, 24), image_sizes=None,
          own_layer: bool = True, reindex: bool = True, newlines_stay: bool = False) -> Reference:
    """PDrop: at each rank layer l, layer l's OWN input_layernorm, q_proj (last token) and k_proj
    (all current tokens) with rotary at the current positions, on layer l's input; causal fp32
    softmax, heads averaged; layers >= l see the kept set; positions re-indexed 0..n-1.
    On LLaVA-NeXT the whole merged image block (newline rows included) competes.
    own_layer=False / reindex=False switch one rule to this project's pre-issue-12 engine
    (layer l-1's attention on its own input; original positions), to measure each rule alone.
    newlines_stay=True: NeXT's newline rows never compete (this project's documented choice)."""
    h, start, grid = llm_input(model, ids, px, image_sizes)
    pos = torch.arange(h.shape[1])[None]
    vis = torch.arange(start, start + len(grid))
    decoder = model.get_model().layers
    stages = dict(zip(scaled(layers, len(decoder)), keeps))
    per_layer, kept, first, prev = [], [], grid.clone(), None
    for i, layer in enumerate(decoder):
        if i in stages:
            h_rank, pos_rank, ranker = (h, pos, layer) if own_layer else (*prev, decoder[i - 1])
            s = attention(ranker, h_rank, pos_rank, rows=[h_rank.shape[1] - 1])[0]
            s = s[vis] if own_layer else s[prev_vis]
            if newlines_stay:
                cells, rows = torch.nonzero(grid >= 0).squeeze(1), torch.nonzero(grid < 0).squeeze(1)
                keep_idx = torch.cat([cells[top(s[cells], stages[i])], rows]).sort().values
            else:
                keep_idx = top(s, stages[i])
            h, pos, grid, vis = drop(h, pos, grid, vis, keep_idx, reindex)
            kept.append(grid[grid >= 0])
        per_layer.append(len(vis))
        prev, prev_vis = (h, pos), vis
        h = run_layer(layer, h, pos)
    return Reference(first[first >= 0], kept, per_layer)


def sparsevlm(model, ids, px, budget: int = 64, recycle: bool = True, layers=(2, 6, 15),
              own_layer: bool = True, raters_once: bool = True, reindex: bool = True) -> Reference:
    """SparseVLM (v1 mechanics, published schedule): raters once from the input embeddings;
    at layer l, layer l runs on all current tokens and ITS OWN attention from the raters ranks
    the visual tokens (merged ones included), keep min(schedule, n - 1); the OUTPUT of layer l
    is pruned; the top 30% of the dropped tokens (by score) are clustered (DPC-kNN, k =
    int(n / 10) + 1) and their means inserted after the kept visual tokens; positions
    re-indexed. Tokens per layer count what each layer ran on.
    Switches to this project's pre-issue-12 engine, one rule at a time: own_layer=False ranks
    the INPUT of layer l by layer l-1's attention; raters_once=False re-chooses raters at each
    stage (text rows whose attention mass on the image is above their mean); reindex=False keeps
    original positions (only without recycling); recycle=False drops without merging."""
    if recycle and not reindex:
        raise ValueError("merged tokens have no original position: recycling needs reindex")
    h, start, grid = llm_input(model, ids, px)
    raters = embedding_raters(h, start, len(grid)) if raters_once else None
    decoder = model.get_model().layers
    stages = dict(zip(scaled(layers, len(decoder)), SPARSEVLM_SCHEDULES[budget]))
    pos = torch.arange(h.shape[1])[None]
    per_layer, kept, merged, prev = [], [], [], None
    for i, layer in enumerate(decoder):
        if i in stages and not own_layer:
            h, pos, grid, c = sparse_stage(decoder[i - 1], *prev, h, start, grid, raters,
                                           stages[i], recycle, reindex)
            kept.append(grid[grid >= 0])
            merged.append(c)
        per_layer.append(len(grid))
        prev = (h, pos)
        out = run_layer(layer, h, pos)
        if i in stages and own_layer:
            out, pos, grid, c = sparse_stage(layer, h, pos, out, start, grid, raters,
                                             stages[i], recycle, reindex)
            kept.append(grid[grid >= 0])
            merged.append(c)
        h = out
    return Reference(torch.arange(576), kept, per_layer, merged)


def embedding_raters(h, start, n_vis):
    """Text tokens after the image with m = softmax(V T^T over text).mean(over V) above mean(m);
    indices relative to the first text token."""
    v, t = h[0, start:start + n_vis], h[0, start + n_vis:]
    m = (v @ t.T).softmax(dim=1).mean(dim=0)
    return torch.nonzero(m > m.mean()).squeeze(1)


def sparse_stage(ranker, h_in, pos_in, out, start, grid, raters, keep_n, recycle, reindex):
    """One SparseVLM stage: rank the visual rows of `h_in` by `ranker`'s attention from the
    raters, keep the top ones of `out` (same rows), recycle the dropped. -> out, pos, grid, merged."""
    n_vis = len(grid)
    text = start + n_vis
    if raters is None:  # pre-issue-12 engine: per-stage raters from attention mass
        a = attention(ranker, h_in, pos_in)
        mass = a[text:, start:text].sum(1)
        rows = text + torch.nonzero(mass > mass.mean()).squeeze(1)
    else:
        rows = text + raters
    s = attention(ranker, h_in, pos_in, rows=rows)[:, start:text].mean(0)
    out, keep, c = sparsevlm_keep(out, s, start, n_vis, keep_n, recycle)
    if reindex:
        pos = torch.arange(out.shape[1])[None]
    else:
        pos = torch.cat([pos_in[:, :start], pos_in[:, start + keep], pos_in[:, text:]], dim=1)
    return out, pos, torch.cat([grid[keep], torch.full((c,), MERGED)]), c


__all__ = ["Reference", "fastervlm", "visionzip", "fastv", "pdrop", "sparsevlm", "pdrop_keeps"]
