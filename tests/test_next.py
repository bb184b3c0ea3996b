"""LLaVA-NeXT (anyres, spatial_unpad, image_newline) and the Mistral variant under pruning."""
import math

import pytest
import torch

from conftest import greedy, load_star, load_stock, new_tokens, prompt_ids, uncached_greedy
from llava_star import MethodConfig, StarConfig
from llava_star.hosts.llava import merged_layout

Q = "What animal is in the picture?"
STAR = StarConfig(stage1_keep=0.875, layer=4, keep=200)


def _inputs(tok, model, proc, image, conv="vicuna_v1"):
    from llava.mm_utils import process_images

    return prompt_ids(tok, Q, conv)[None], process_images([image], proc, model.config).to(model.dtype)


def expected_layout(model, image_size, n_crops):
    """The merged image rows as llava lays them out, rebuilt here from the geometry: base crop
    row-major, then the grid crops tiled into one big patch grid, cut by llava's own
    `unpad_image`, one newline (-1) after each row. Entries: crop * 576 + patch."""
    from llava.mm_utils import get_anyres_image_grid_shape
    from llava.model.llava_arch import unpad_image

    side = 24
    npw, nph = get_anyres_image_grid_shape(image_size, model.config.image_grid_pinpoints, 336)
    assert npw * nph == n_crops - 1
    big = torch.empty(nph * side, npw * side, dtype=torch.long)
    for cy in range(nph):
        for cx in range(npw):
            crop = 1 + cy * npw + cx
            ids = crop * 576 + torch.arange(576).view(side, side)
            big[cy * side:(cy + 1) * side, cx * side:(cx + 1) * side] = ids
    big = unpad_image(big[None], image_size)[0]
    with_newline = torch.cat([big, torch.full((big.shape[0], 1), -1)], dim=1)
    return torch.cat([torch.arange(576), with_newline.flatten()])


@pytest.mark.parametrize("variant", ["llava-next", "llava-mistral"])
def test_disabled_equals_stock(tiny_dir, images, variant):
    path = tiny_dir(variant)
    conv = "mistral_instruct" if "mistral" in variant else "vicuna_v1"
    image = images["coffee"]
    tok, stock, proc = load_stock(path)
    ids, px = _inputs(tok, stock, proc, image, conv)
    with torch.no_grad():
        ref = stock(ids, images=px, image_sizes=[image.size]).logits
    _, model, _ = load_star(path, star=StarConfig(stage1_keep=1.0, layer=4, keep=1.0))
    with torch.no_grad():
        got = model(ids, images=px, image_sizes=[image.size]).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert greedy(model, ids, px, n=5, image_sizes=[image.size]).tolist() == \
        greedy(stock, ids, px, n=5, image_sizes=[image.size]).tolist()


@pytest.mark.parametrize("name", ["chelsea", "rocket"])
def test_layout_and_kept_sets_match_reference(tiny_dir, images, name):
    path = tiny_dir("llava-next")
    image = images[name]
    tok, model, proc = load_star(path, star=STAR)
    ids, px = _inputs(tok, model, proc, image)
    greedy(model, ids, px, n=1, image_sizes=[image.size])
    rec = model.star_record[0]
    n_crops = px.shape[1]
    layout = expected_layout(model, image.size, n_crops)
    assert merged_layout(model, ids, None, px, [image.size])[0].tolist() == layout.tolist()

    _, stock, _ = load_stock(path, attn="eager")
    with torch.no_grad():
        clip = stock.get_vision_tower().vision_tower(px[0], output_attentions=True)
        col = clip.attentions[-2].mean(1).mean(1)[:, 1:]  # [crops, 576]
        k1 = round(0.875 * 576)
        keep1 = set()
        for c in range(n_crops):
            keep1 |= set((c * 576 + torch.topk(col[c], k1).indices).tolist())
        patch_rows = [g for g in layout.tolist() if g >= 0]
        assert rec.stage1_kept.tolist() == [g for g in patch_rows if g in keep1]
        assert rec.num_patches == len(patch_rows)

        # stage 2: merged sequence from stock llava, stage-1 rows removed, layers run by hand
        from llava.constants import IMAGE_TOKEN_INDEX
        merged = stock.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, px, [image.size])[4]
        where = int(torch.nonzero(ids[0] == IMAGE_TOKEN_INDEX)[0])
        rows_keep = [i for i in range(merged.shape[1])
                     if not (where <= i < where + len(layout)) or layout[i - where] < 0
                     or int(layout[i - where]) in keep1]
        h = merged[:, rows_keep]
        grid = torch.tensor([int(layout[i - where]) for i in rows_keep if where <= i < where + len(layout)])
        vis = torch.arange(where, where + len(grid))
        pos = torch.arange(h.shape[1])[None]
        for i, layer in enumerate(stock.model.layers[:STAR.layer]):
            n = h.shape[1]
            mask = torch.full((n, n), torch.finfo(h.dtype).min).triu(1)[None, None]
            h, w = layer(h, attention_mask=mask, position_ids=pos, output_attentions=True)[:2]
        a = w[0].mean(0)
        score = a[int(vis[-1]) + 1:][:, vis].mean(0)
        patch = torch.nonzero(grid >= 0).squeeze(1)
        top = patch[torch.topk(score[patch], 200).indices].sort().values
    assert rec.stage2_kept.tolist() == grid[top].tolist()
    # the record's scores: CLIP's for every patch of every crop, the decoder's for the patches
    # it ranked (newline rows left out), in stage1_kept order
    torch.testing.assert_close(rec.stage1_scores, col.reshape(-1), atol=1e-5, rtol=1e-4)
    assert grid[patch].tolist() == rec.stage1_kept.tolist()
    torch.testing.assert_close(rec.stage2_scores[0], score[patch], atol=1e-5, rtol=1e-4)
    newlines = int((layout < 0).sum())
    assert rec.tokens_per_layer == [len(grid)] * 4 + [200 + newlines] * 4


def test_per_crop_budget(tiny_dir, images):
    image = images["chelsea"]
    tok, model, proc = load_star(tiny_dir("llava-next"), star=MethodConfig.from_name("star", budget=29, unit="crop"))
    ids, px = _inputs(tok, model, proc, image)
    greedy(model, ids, px, n=1, image_sizes=[image.size])
    rec = model.star_record[0]
    assert rec.stage2_kept.numel() == 29 * px.shape[1]
    assert rec.num_patches == 576 * px.shape[1]


@pytest.mark.parametrize("variant", ["llava-next", "llava-mistral"])
def test_cached_equals_uncached(tiny_dir, images, variant):
    path = tiny_dir(variant)
    conv = "mistral_instruct" if "mistral" in variant else "vicuna_v1"
    image = images["rocket"]
    tok, model, proc = load_star(path, star=STAR)
    ids, px = _inputs(tok, model, proc, image, conv)
    cached = new_tokens(greedy(model, ids, px, n=6, image_sizes=[image.size])[0], tok.bos_token_id)
    uncached = uncached_greedy(model, ids, px, len(cached), image_sizes=[image.size])
    assert cached == uncached


def test_batch_of_different_sizes_equals_singles(tiny_dir, images):
    from llava.mm_utils import process_images

    path = tiny_dir("llava-next")
    tok, model, proc = load_star(path, star=STAR)
    pics = [images["chelsea"], images["rocket"], images["astronaut"]]
    questions = [Q, "Is there a rocket? Answer yes or no.", "Describe it."]
    singles = []
    for pic, q in zip(pics, questions):
        ids = prompt_ids(tok, q)[None]
        px = process_images([pic], proc, model.config)
        out = greedy(model, ids, px, n=5, image_sizes=[pic.size])[0].tolist()
        singles.append((out, model.star_record[0].stage2_kept.tolist(), model.star_record[0].tokens_per_layer))
    model.config.tokenizer_padding_side = "left"
    ids = [prompt_ids(tok, q) for q in questions]
    n = max(len(x) for x in ids)
    input_ids = torch.zeros(3, n, dtype=torch.long)
    mask = torch.zeros(3, n, dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, n - len(x):], mask[i, n - len(x):] = x, 1
    px = process_images(pics, proc, model.config)  # different crop counts -> a list
    assert isinstance(px, list) and len({p.shape[0] for p in px}) > 1
    out = greedy(model, input_ids, px, attention_mask=mask, n=5, image_sizes=[p.size for p in pics])
    counts = set()
    for b, (toks, kept, per_layer) in enumerate(singles):
        assert out[b].tolist()[:len(toks)] == toks
        assert model.star_record[b].stage2_kept.tolist() == kept
        assert model.star_record[b].tokens_per_layer == per_layer
        counts.add(per_layer[0])
    assert len(counts) == 3  # really different visual token counts per sample


def test_fixed_grid_672(tiny_dir, images):
    from llava.mm_utils import process_images

    from llava_star import load_pretrained_model

    image = images["rocket"]
    tok, model, proc, _ = load_pretrained_model(tiny_dir("llava-next"), None, None, device="cpu",
                                                star=StarConfig(stage1_keep=1.0, layer=4, keep=1.0), fixed_grid=672)
    assert model.config.image_grid_pinpoints == [[672, 672]]
    px = process_images([image], proc, model.config)
    assert px.shape[1] == 5  # base + 2x2
    ids = prompt_ids(tok, Q)[None]
    greedy(model, ids, px, n=1, image_sizes=[image.size])
    # 5 x 576 = 2880 before llava's unpad; unpad trims the padded columns of this tall photo
    assert model.star_record[0].num_patches <= 2880
    assert math.isclose(model.star_record[0].num_patches, 576 + 2304, rel_tol=0.3)


@pytest.mark.parametrize("name,budget", [("fastv", 58), ("fastervlm", 58), ("sparsevlm", 64), ("pdrop", 29),
                                         ("random", 58), ("star", 29)])
def test_every_method_on_next(tiny_dir, images, name, budget):
    """Each method runs on the anyres path; its final patch count follows the budget and the
    cached generation equals the uncached recompute with the same kept sets."""
    image = images["chelsea"]
    tok, model, proc = load_star(tiny_dir("llava-next"), star=MethodConfig.from_name(name, budget=budget))
    ids, px = _inputs(tok, model, proc, image)
    cached = new_tokens(greedy(model, ids, px, n=4, image_sizes=[image.size])[0], tok.bos_token_id)
    rec = model.star_record[0]
    if name in ("fastervlm", "random"):  # int budget for the image, spread evenly over its crops
        n_crops = px.shape[1]
        assert rec.stage1_kept.numel() <= -(-budget // n_crops) * n_crops
    elif name == "sparsevlm":  # the last stage keeps 17 of the cells and recycled tokens, then recycles
        assert rec.stage2_kept.numel() <= 17 and rec.merged[-1] >= 1
    else:
        final = budget
        assert rec.stage2_kept.numel() == final
    assert cached == uncached_greedy(model, ids, px, len(cached), image_sizes=[image.size])


def test_whole_image_budget_above_one_crop(tiny_dir, images):
    """With whole-image counts (the default unit) a NeXT budget may exceed one crop's 576
    patches; per-crop counts may not."""
    from llava_star import apply_star
    from llava_star.hosts.llava import max_visual_tokens

    image = images["chelsea"]
    tok, model, proc = load_star(tiny_dir("llava-next"), star=StarConfig(stage1_keep=0.875, layer=4, keep=640))
    assert max_visual_tokens(model, "image") == 576 * (1 + 4)  # base + the 2x2 grid, the largest pinpoint
    ids, px = _inputs(tok, model, proc, image)
    greedy(model, ids, px, n=1, image_sizes=[image.size])
    rec = model.star_record[0]
    assert rec.stage1_kept.numel() > 640
    assert rec.stage2_kept.numel() == 640
    _, stock, _ = load_stock(tiny_dir("llava-next"))
    with pytest.raises(ValueError, match="exceeds the 576 patches"):
        apply_star(stock, StarConfig(stage1_keep=700, layer=4, keep=640, unit="crop"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layout_exact_in_half_precision(tiny_dir, images, dtype):
    """The merged-layout markers survive bf16/fp16 (patch ids up to 575 are not exact bf16
    numbers): the layout equals the fp32 one."""
    from llava_star import load_pretrained_model

    image = images["chelsea"]
    layouts = []
    for dt in (torch.float32, dtype):
        tok, model, proc, _ = load_pretrained_model(tiny_dir("llava-next"), None, None, device="cpu", dtype=dt,
                                                    star=STAR)
        ids, px = _inputs(tok, model, proc, image)
        layouts.append(merged_layout(model, ids, None, px, [image.size])[0])
    assert torch.equal(layouts[0], layouts[1])
    assert layouts[0].max() > 256 * 2  # really beyond bf16's exact integers
