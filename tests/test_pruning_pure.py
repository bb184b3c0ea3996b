"""Pure scoring / selection functions, without a model."""
import pytest
import torch

from llava_star.pruning.scores import attention_probs, attention_received, cls_attention, rater_rows, stage1_scores
from llava_star.pruning.select import gather_tokens, pack_rows, random_sorted, topk_sorted


def test_attention_received_is_column_mean_not_row_mean():
    probs = torch.tensor([[[[0.7, 0.2, 0.1],
                            [0.1, 0.8, 0.1],
                            [0.6, 0.3, 0.1]]]])  # B=1,H=1,Q=3,T=3
    got = attention_received(probs)
    assert torch.allclose(got, torch.tensor([[1.4 / 3, 1.3 / 3, 0.3 / 3]]))
    # a row mean of a row-softmax is constant: the pitfall the column mean avoids
    assert torch.allclose(probs.mean(-1), torch.full((1, 1, 3), 1 / 3))


def test_attention_received_row_weights_and_heads():
    probs = torch.zeros(1, 2, 2, 2)
    probs[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs[0, 1] = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # heads averaged: row0 = [1, 0], row1 = [.5, .5]; only row 1 votes
    got = attention_received(probs, torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(got, torch.tensor([[0.5, 0.5]]))


def test_attention_probs_matches_softmax_and_masks():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8)  # grouped-query: 2 kv heads
    allowed = torch.ones(2, 3, 5, dtype=torch.bool)
    allowed[:, :, 4] = False
    p = attention_probs(q, k, allowed)
    kk = k.repeat_interleave(2, dim=1)
    ref = ((q @ kk.transpose(-1, -2)) / 8 ** 0.5)[..., :4].softmax(-1)
    assert torch.allclose(p[..., :4], ref, atol=1e-6) and float(p[..., 4].abs().max()) < 1e-12


def test_stage1_and_cls_scores_drop_cls_column():
    torch.manual_seed(1)
    q, k = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    p = attention_probs(q, k)
    assert torch.allclose(stage1_scores(q, k), p.mean(1).mean(1)[:, 1:])
    assert torch.allclose(cls_attention(p), p[:, :, 0, 1:].mean(1))


def test_rater_rows_picks_above_mean_and_never_empty():
    to_vis = torch.tensor([[[0.5, 0.4], [0.1, 0.0], [0.3, 0.3], [0.9, 0.0]]])
    valid = torch.tensor([[True, True, True, False]])
    # relevance of valid rows: .9, .1, .6 -> mean .533 -> rows 0 and 2
    assert rater_rows(to_vis, valid).tolist() == [[True, False, True, False]]
    flat = torch.full((1, 3, 2), 0.2)
    assert rater_rows(flat, torch.ones(1, 3, dtype=torch.bool)).all()


def test_topk_sorted_order_and_ties():
    s = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.3])
    assert topk_sorted(s, 2).tolist() == [1, 3]
    assert topk_sorted(s, 3).tolist() == [1, 2, 3]
    assert topk_sorted(torch.ones(6), 2).tolist() == [0, 1]  # ties -> lower index
    with pytest.raises(ValueError):
        topk_sorted(s, 0)
    with pytest.raises(ValueError):
        topk_sorted(s, 6)


def test_random_sorted_seeded():
    a = random_sorted(10, 4, torch.Generator().manual_seed(5))
    b = random_sorted(10, 4, torch.Generator().manual_seed(5))
    assert a.tolist() == b.tolist() == sorted(set(a.tolist())) and len(a) == 4


def test_pack_rows_left_aligns_and_gathers():
    index, valid = pack_rows([torch.tensor([0, 2, 3]), torch.tensor([1])])
    assert index.tolist() == [[0, 2, 3], [0, 0, 1]]
    assert valid.tolist() == [[True, True, True], [False, False, True]]
    x = torch.arange(8.0).view(2, 4, 1)
    assert gather_tokens(x, index)[..., 0].tolist() == [[0, 2, 3], [4, 4, 5]]
