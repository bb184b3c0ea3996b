"""The baselines' merging and rater rules against small cases computed by hand."""
import math

import pytest
import torch

from llava_star.engine.counts import recycled_count
from llava_star.pruning.merge import cluster_merge, sparsevlm_recycle, visionzip_contextual
from llava_star.pruning.raters import sparsevlm_raters


def test_visionzip_contextual_target_plus_mean_of_joined():
    # 5 tokens, 2 contextual: step 5 // 2 = 2, targets are tokens 0 and 2.
    hidden = torch.tensor([10.0, 1.0, 20.0, 3.0, 5.0]).view(1, 5, 1)
    keys = torch.tensor([[1, 0], [2, 0.1], [0, 1], [0.1, 3], [0, 5]]).view(1, 5, 2)
    out = visionzip_contextual(hidden, keys, 2)
    # token 1 joins target 0; tokens 3 and 4 join target 2
    assert out.view(-1).tolist() == pytest.approx([10 + 1, 20 + (3 + 5) / 2])


def test_visionzip_contextual_lonely_target_and_ties():
    hidden = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])[None]
    # token 1 points exactly between the targets 0 and 2 (a tie: the first target wins),
    # token 3 is nearest target 0; target 2 gets nobody and stays as it is.
    keys = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.1]])[None]
    out = visionzip_contextual(hidden, keys, 2)[0]
    assert out[0].tolist() == pytest.approx([1 + (3 + 7) / 2, 2 + (4 + 8) / 2])
    assert out[1].tolist() == pytest.approx([5.0, 6.0])


def test_visionzip_contextual_uses_cosine_not_dot_product():
    hidden = torch.tensor([0.0, 1.0, 100.0]).view(1, 3, 1)
    # targets (step 3 // 2 = 1): tokens 0, 1; token 2's key has the larger dot product with
    # target 1's long key but the same direction as target 0's
    keys = torch.tensor([[1.0, 0.0], [5.0, 5.0], [3.0, 0.5]])[None]
    out = visionzip_contextual(hidden, keys, 2)[0, :, 0]
    assert out.tolist() == pytest.approx([0 + 100, 1.0])


def test_visionzip_contextual_rejects_more_targets_than_tokens():
    with pytest.raises(ValueError, match="contextual"):
        visionzip_contextual(torch.zeros(1, 3, 4), torch.ones(1, 3, 2), 4)


# three 1-D groups; densities from the 3 nearest (self included), worked out by hand:
# G1 = {0, 1, 2.5} peak 1 (rho e^-1.083), G2 = {20, 20.5, 21} peak 20.5 (rho e^-1/6),
# G3 = {40, 40.2, 40.4} peak 40.2 (rho e^-0.0267, the densest: delta = max distance 40.4).
# scores delta*rho: 40.2 -> 39.3, 20.5 -> 19.5 * 0.847 = 16.5, 1 -> 19 * 0.339 = 6.4, all
# others < 1.5, so the centers in order are 40.2, 20.5, 1 and the means follow.
POINTS = [20.5, 0.0, 40.4, 1.0, 20.0, 40.0, 2.5, 21.0, 40.2]
MEANS = [40.2, 20.5, 3.5 / 3]


def test_cluster_merge_density_peaks_in_score_order():
    x = torch.tensor(POINTS, dtype=torch.float64).view(1, -1, 1)
    out = cluster_merge(x, 3, tiebreak_noise=0)[0, :, 0]
    assert out.tolist() == pytest.approx([m * 3 / (3 + 1e-6) for m in MEANS], rel=1e-9)


def test_cluster_merge_batched_and_noise_only_breaks_ties():
    x = torch.tensor(POINTS, dtype=torch.float64).view(1, -1, 1)
    x = torch.cat([x, x.flip(1) * 2])  # second sample: reversed order, doubled
    out = cluster_merge(x, 3, generator=torch.Generator().manual_seed(0))[:, :, 0]
    assert out[0].tolist() == pytest.approx(MEANS, rel=1e-5)
    assert out[1].tolist() == pytest.approx([2 * m for m in MEANS], rel=1e-5)


def test_cluster_merge_breaks_exact_ties_by_index_as_the_noise_would():
    # two pairs far apart, k=2: within a pair both tokens have the same density. With strict
    # "denser" and no noise both tokens of one pair would become centers; by index (or with the
    # official noise, whatever it draws) each pair gets one center.
    x = torch.tensor([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0], [9.0, 9.3]])[None]
    for out in (cluster_merge(x, 2, tiebreak_noise=0)[0],
                cluster_merge(x, 2, generator=torch.Generator().manual_seed(0))[0]):
        got = sorted(out.tolist())
        assert got[0] == pytest.approx([0.0, 0.05], abs=1e-5)
        assert got[1] == pytest.approx([9.0, 9.15], abs=1e-5)


def test_cluster_merge_ignores_fp32_noise_on_near_duplicates():
    """What a padded batch or another kernel does to the same tokens (1e-6 relative) does not
    change which near-duplicate becomes a center."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1, 12, 16, generator=gen)
    x = torch.cat([base, base + 1e-7 * torch.randn(base.shape, generator=gen)], dim=1)  # twins
    ref = cluster_merge(x, 5, tiebreak_noise=0)
    for trial in range(20):
        wiggled = x * (1 + 1e-6 * torch.randn(x.shape, generator=gen))
        assert torch.allclose(cluster_merge(wiggled, 5, tiebreak_noise=0), ref, atol=1e-4), trial


def test_recycling_merges_the_top_30_percent_by_score():
    dropped = torch.arange(10, dtype=torch.float64).view(1, 10, 1) * 10  # 0, 10, ..., 90
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.0, 0.6, 0.05, 0.01]])
    # int(0.3 * 10) + 1 = 4 recycled: tokens 1, 3, 5, 7; int(4 / 10) + 1 = 1 cluster
    out = sparsevlm_recycle(dropped, scores, tiebreak_noise=0)
    assert out.shape == (1, 1, 1)
    assert float(out) == pytest.approx((10 + 30 + 50 + 70) / (4 + 1e-6))


@pytest.mark.parametrize("dropped,count", [(510, 16), (52, 2), (15, 1), (9, 1), (1, 1), (0, 0)])
def test_recycled_count(dropped, count):
    # 510 dropped: int(153) + 1 = 154 recycled, int(15.4) + 1 = 16 clusters
    assert recycled_count(dropped) == count
    if dropped:
        x = torch.randn(1, dropped, 3, generator=torch.Generator().manual_seed(dropped))
        assert sparsevlm_recycle(x, torch.rand(1, dropped)).shape[1] == count


def test_recycling_nothing_dropped_is_an_error():
    with pytest.raises(ValueError, match="nothing was dropped"):
        sparsevlm_recycle(torch.zeros(1, 0, 4), torch.zeros(1, 0))


def test_raters_above_mean_of_softmax_over_text():
    visual = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    text = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]])
    # rows softmax([2,0,0]) and softmax([0,2,0]); m = [0.447, 0.447, 0.107], mean 1/3
    assert sparsevlm_raters(visual, text).tolist() == [[True, True, False]]


def test_raters_ignore_padding():
    visual = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    text = torch.tensor([[[50.0, 50.0], [2.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[False, True, True]])
    # over the real tokens: softmax([2, 0]) = [0.881, 0.119], softmax([0, 0]) = [0.5, 0.5];
    # m = [0.690, 0.310], mean 0.5: only the first real token rates
    e = math.exp(2)
    assert (e / (e + 1) + 0.5) / 2 > 0.5
    assert sparsevlm_raters(visual, text, mask).tolist() == [[False, True, False]]
    assert sparsevlm_raters(visual, text).tolist() == [[True, False, False]]  # unmasked, padding wins


def test_raters_need_text():
    with pytest.raises(ValueError, match="no text after the image"):
        sparsevlm_raters(torch.ones(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2, dtype=torch.bool))
