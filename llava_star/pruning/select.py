"""Selection and index bookkeeping. Pure tensor functions, tested without a model."""
from __future__ import annotations

import hashlib

import torch


def topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest scores along the last dim, returned in ascending (original,
    i.e. spatial) order. Ties go to the lower index, so the result is deterministic across
    devices and attention kernels. scores [..., N] -> [..., k] LongTensor."""
    n = scores.shape[-1]
    if not 0 < k <= n:
        raise ValueError(f"cannot keep {k} of {n} tokens")
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices
    return order[..., :k].sort(dim=-1).values


def random_sorted(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random k-subset of range(n), ascending (the 'random' control)."""
    if not 0 < k <= n:
        raise ValueError(f"cannot keep {k} of {n} tokens")
    return torch.randperm(n, generator=generator)[:k].sort().values


def image_seed(seed: int, pixels: torch.Tensor) -> int:
    """A generator seed from `seed` and an image's pixels (rounded to fp16, so fp16 and fp32
    runs of one image agree): the random control's subset follows the image, not its place
    in a batch or a benchmark."""
    data = pixels.detach().to(device="cpu", dtype=torch.float16).contiguous().numpy().tobytes()
    digest = hashlib.sha256(str(int(seed)).encode() + b":" + data).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def pack_rows(index_lists: list[torch.Tensor], pad_index: int = 0):
    """Left-align per-sample index lists into one [B, L] index tensor plus a validity mask.

    Samples may keep different numbers of tokens (different prompt lengths, NeXT images of
    different sizes). Padding goes on the left so the last column is every sample's last
    real token, which is the row generation reads its next-token logits from."""
    length = max(int(ix.numel()) for ix in index_lists)
    device = index_lists[0].device
    index = torch.full((len(index_lists), length), pad_index, dtype=torch.long, device=device)
    valid = torch.zeros((len(index_lists), length), dtype=torch.bool, device=device)
    for b, ix in enumerate(index_lists):
        if ix.numel():
            index[b, length - ix.numel():] = ix
            valid[b, length - ix.numel():] = True
    return index, valid


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B,T,...] gathered along dim 1 with index [B,L] -> [B,L,...]."""
    view = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return torch.gather(x, 1, view)
