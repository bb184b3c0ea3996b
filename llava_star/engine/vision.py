"""The vision stage on a CLIP encoder (transformers' `CLIPVisionTransformer`).

CLIP runs only up to the layer the LLM reads features from (stock LLaVA runs every layer and
discards the last one's output). In that layer the stage recomputes q/k from the layer's input
(one layer, no `output_attentions` over the tower), scores the patches and asks the selector
which to keep.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from ..pruning.merge import visionzip_contextual
from ..pruning.select import image_seed
from ..pruning.scores import attention_probs, attention_received, cls_attention
from .context import CLS, MERGED, PrefillContext, VisionResult
from .counts import ImageTokens, vision_keep
from .plan import VisionStage
from .seams import Hooks, Selection


def layers_to_run(num_layers: int, select_layer: int) -> int:
    """hidden_states[s] is the output of the s-th layer (hidden_states[0] = embeddings)."""
    return select_layer if select_layer >= 0 else num_layers + 1 + select_layer


def _heads(attn, proj, x):
    b, t, _ = x.shape
    return proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)


def patch_scores(layer, hidden: torch.Tensor, score: str, with_keys: bool = False):
    """[N, 1+P, C] input of a CLIP encoder layer -> [N, P] score of every patch, and with
    `with_keys` the layer's key states, heads averaged [N, 1+P, d] (VisionZip's metric)."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    k = _heads(attn, attn.k_proj, x)
    probs = attention_probs(_heads(attn, attn.q_proj, x), k)
    scores = cls_attention(probs) if score == "cls_attention" else attention_received(probs)[:, 1:]
    # attention_received: the column mean over every query row, CLS included
    return (scores, k.mean(dim=1)) if with_keys else scores


def tuple_layer_call(layer, hidden: torch.Tensor) -> torch.Tensor:
    """A CLIP encoder layer that takes (hidden, attention_mask, causal_attention_mask) and
    returns a tuple (transformers 4.x); hosts on other versions pass their own call."""
    return layer(hidden, None, None)[0]


def encode(vision_model, pixels: torch.Tensor, select_layer: int, stage: Optional[VisionStage], seed: int,
           hooks: Hooks, ctx: Optional[PrefillContext], patch_only: bool = True,
           run_layer: Callable = tuple_layer_call) -> Tuple[torch.Tensor, VisionResult]:
    """pixels [N,3,H,W] -> (features [N,k,C], what the stage did). With `ctx.crop_keep` set
    (multi-crop images) nothing is removed here: the result carries a keep mask instead,
    applied after llava's spatial merge, which needs every crop's full grid. `run_layer(layer,
    hidden)` runs one encoder layer (the call differs between transformers versions)."""
    vm = vision_model
    hidden = vm.pre_layrnorm(vm.embeddings(pixels))
    n_run = layers_to_run(len(vm.encoder.layers), select_layer)
    scores = keys = None
    for i, layer in enumerate(vm.encoder.layers[:n_run]):
        if stage is not None and stage.score != "random" and i == n_run - 1:
            with hooks.phase("vision_scores"):
                if stage.merge:
                    scores, keys = patch_scores(layer, hidden, stage.score, with_keys=True)
                else:
                    scores = patch_scores(layer, hidden, stage.score)
        hidden = run_layer(layer, hidden)
    features = hidden[:, 1:] if patch_only else hidden
    if stage is None:
        return features, VisionResult()
    num_patches = hidden.shape[1] - 1
    deferred = ctx is not None and ctx.crop_keep is not None
    if deferred and (stage.merge or stage.cls_token):
        raise ValueError("merged and CLS tokens (VisionZip) need one crop per image (LLaVA-1.5 layouts); "
                         "LLaVA-NeXT's anyres merge lays out patch grids only")
    if deferred:
        keep, first = ctx.crop_keep, ctx.crop_first
    else:  # one crop per image: every crop starts its image
        keep = [vision_keep(stage.keep, "image", ImageTokens.single(num_patches))] * hidden.shape[0]
        first = [True] * hidden.shape[0]
    with hooks.phase("vision_scores"):
        kept = _select(scores, keep, first, seed, pixels, num_patches, hooks, hidden.device)
    if deferred:
        mask = torch.zeros(hidden.shape[0], num_patches, dtype=torch.bool, device=hidden.device)
        for i, k in enumerate(kept):
            mask[i, k] = True
        return features, VisionResult(keep_mask=mask, scores=scores)
    kept = torch.stack(kept)
    if stage.merge or stage.cls_token:
        return _with_extra_tokens(hidden, keys, kept, scores, stage)
    offset = 0 if patch_only else 1  # keep CLS in 'cls_patch' mode
    index = kept + offset
    if offset:
        index = torch.cat([torch.zeros_like(index[:, :1]), index], dim=1)
    features = torch.gather(features, 1, index[..., None].expand(-1, -1, features.shape[-1]))
    return features, VisionResult(kept=kept, scores=scores)


def _with_extra_tokens(hidden, keys, kept, scores, stage: VisionStage) -> Tuple[torch.Tensor, VisionResult]:
    """VisionZip's layout: [CLS], the kept patches in order, then `stage.merge` tokens merged
    from the other patches by key similarity (dvlab-research/VisionZip, clip_encoder.py)."""
    n, num_patches = hidden.shape[0], hidden.shape[1] - 1
    patches = hidden[:, 1:]
    parts, grid = [], []
    if stage.cls_token:
        parts.append(hidden[:, :1])
        grid.append(torch.full((n, 1), CLS, dtype=torch.long, device=kept.device))
    parts.append(torch.gather(patches, 1, kept[..., None].to(hidden.device).expand(-1, -1, hidden.shape[-1])))
    grid.append(kept)
    if stage.merge:
        dropped = torch.ones(n, num_patches, dtype=torch.bool, device=hidden.device)
        dropped[torch.arange(n, device=hidden.device)[:, None], kept.to(hidden.device)] = False
        rest = dropped.nonzero()[:, 1].view(n, -1)  # ascending per image (same count each)
        pick = lambda t: torch.gather(t, 1, rest[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
        parts.append(visionzip_contextual(pick(patches), pick(keys[:, 1:]), stage.merge))
        grid.append(torch.full((n, stage.merge), MERGED, dtype=torch.long, device=kept.device))
    return torch.cat(parts, 1), VisionResult(kept=kept, scores=scores, grid=torch.cat(grid, 1))


def _select(scores, keep: List[int], first: List[bool], seed: int, pixels, num_patches: int, hooks: Hooks,
            device) -> List[torch.Tensor]:
    """Per crop, the kept patch indices (ascending). The random control draws from a generator
    seeded by the seed and the image's first crop, so every image gets its own subset, the
    same whatever batch it is in."""
    grid = torch.arange(num_patches, device=device)
    out, gen = [], None
    for i, k in enumerate(keep):
        if first[i] and scores is None:
            gen = torch.Generator().manual_seed(image_seed(seed, pixels[i]))
        k = max(1, min(int(k), num_patches))
        sel = Selection("vision", 0, i, None if scores is None else scores[i], grid, k, gen)
        out.append(hooks.selector(sel))  # on the grid's device (CPU for a meta-device FLOP count)
    return out
