"""Token merging rules of the baselines, as pure tensor functions (no model code).

- VisionZip's contextual tokens (dvlab-research/VisionZip, `visionzip/clip_encoder.py` 59-80).
- SparseVLM's token recycling (Gumpest/SparseVLMs v1 91fb6d9, `modelling_sparse_llama.py`
  251-283 and `utils.py` `cluster_and_merge` 155-213; unchanged in v1.5).

Every function takes a batch [B, N, ...] with the same N per sample (the official rules are
batch-1 code; where a rule used a batch-wide statistic it is taken per sample here).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..engine.counts import recycle_size


def visionzip_contextual(hidden: torch.Tensor, keys: torch.Tensor, contextual: int) -> torch.Tensor:
    """VisionZip contextual merging of the non-dominant tokens.

    hidden [B, N, C]: the select-layer hidden states of the tokens left after the dominant
    selection, in sequence order; keys [B, N, d]: the same layer's key states, heads averaged.
    Targets are every `max(1, N // contextual)`-th token (the first `contextual` of them); every
    other token joins the target of highest cosine key similarity (first on ties); a contextual
    token is its target's hidden state PLUS the mean of the tokens that joined it (the target
    itself is not in that mean; a target nobody joined stays as it is). Returns [B, contextual, C]
    in target order.
    """
    b, n, _ = hidden.shape
    if not 0 < contextual <= n:
        raise ValueError(f"visionzip: cannot form {contextual} contextual tokens from {n} tokens")
    unit = keys / keys.norm(dim=-1, keepdim=True)
    step = max(1, n // contextual)
    targets = torch.arange(0, n, step, device=hidden.device)[:contextual]
    others = torch.ones(n, dtype=torch.bool, device=hidden.device)
    others[targets] = False
    others = torch.nonzero(others).squeeze(1)  # indices, not a mask: bookkeeping stays data-free
    choice = (unit[:, others] @ unit[:, targets].transpose(1, 2)).argmax(dim=2)  # [B, N - contextual]
    assign = torch.nn.functional.one_hot(choice, contextual).to(hidden.dtype)     # [B, N - c, c]
    counts = assign.sum(dim=1).clamp(min=1).unsqueeze(-1)                          # [B, c, 1]
    joined_mean = assign.transpose(1, 2) @ hidden[:, others] / counts
    return hidden[:, targets] + joined_mean


def sparsevlm_recycle(dropped: torch.Tensor, scores: torch.Tensor, tiebreak_noise: float = 1e-6,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """SparseVLM token recycling of the visual tokens one stage dropped.

    dropped [B, N, C]: the dropped tokens' states at the OUTPUT of the ranking layer, in
    sequence order; scores [B, N]: their rater scores at that stage. The top 30% by score
    (`int(0.3 N) + 1`, descending order) are clustered into `int(n / 10) + 1` groups by
    `cluster_merge`; returns those merged tokens [B, clusters, C], which the official code puts
    right after the kept visual tokens.
    """
    n = dropped.shape[1]
    if n == 0:
        raise ValueError("sparsevlm: nothing was dropped, nothing to recycle")
    n_recycled = recycle_size(n)
    top = scores.topk(n_recycled, dim=1).indices  # descending score, as torch.topk in the code
    picked = torch.gather(dropped, 1, top.unsqueeze(-1).expand(-1, -1, dropped.shape[2]))
    return cluster_merge(picked, int(n_recycled / 10) + 1, tiebreak_noise, generator)


def cluster_merge(x: torch.Tensor, k: int, tiebreak_noise: float = 1e-6,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """DPC-kNN clustering of x [B, N, C] into k clusters, each replaced by its mean.

    Distances are Euclidean / sqrt(C); density = exp(-mean squared distance to the k nearest
    tokens, self included, rounded to 1e-4) plus uniform noise in [0, tiebreak_noise) as in
    the official code (0 makes it deterministic; equal densities then rank by index, the
    lower one denser); a token's delta is its distance to the nearest denser token (the
    global maximum distance for the densest); the k highest delta * density are the
    centers (in that order); every token joins its nearest center, each center itself.
    The mean divides by (count + 1e-6), as the code does. Returns [B, k, C] in center order.
    """
    b, n, c = x.shape
    if not 0 < k <= n:
        raise ValueError(f"sparsevlm: cannot form {k} clusters from {n} tokens")
    # Euclidean distances in matmul form, as torch.cdist computes them for more than 25 rows
    # (written out so FLOP counters see the matmul)
    sq = (x * x).sum(dim=-1)
    dist = (sq[:, :, None] + sq[:, None, :] - 2 * x @ x.transpose(1, 2)).clamp_min(0).sqrt() / c ** 0.5
    nearest = dist.topk(k, dim=-1, largest=False).values
    # Near-duplicate tokens have densities equal up to fp32 noise, which a padded batch or
    # another kernel rounds differently: compare them at 1e-4 of the exponent, ties by index
    # (the official code breaks ties with unseeded noise instead, so every run differs).
    level = ((nearest.float() ** 2).mean(dim=-1) * 1e4).round()
    density = (-level / 1e4).exp().to(x.dtype)
    if tiebreak_noise:
        density = density + torch.rand(density.shape, generator=generator, dtype=density.dtype,
                                        device=density.device) * tiebreak_noise
    index = torch.arange(n, device=x.device)
    tied_before = (density[:, None, :] == density[:, :, None]) & (index[None, :] < index[:, None])[None]
    denser = (density[:, None, :] > density[:, :, None]) | tied_before   # [i, j]: j denser than i
    far = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = torch.where(denser, dist, far).min(dim=-1).values
    centers = (delta * density).topk(k, dim=-1).indices                  # [B, k]
    to_center = torch.gather(dist, 1, centers.unsqueeze(-1).expand(-1, -1, n))  # [B, k, N]
    label = to_center.argmin(dim=1)                                       # [B, N]
    label.scatter_(1, centers, torch.arange(k, device=x.device).expand(b, k))
    member = torch.nn.functional.one_hot(label, k).to(x.dtype)           # [B, N, k]
    return member.transpose(1, 2) @ x / (member.sum(dim=1).unsqueeze(-1) + 1e-6)
