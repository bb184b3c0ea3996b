"""Every method is a plan of the same engine: schedules, kept sets against an independent
reference written here from each method's definition, and cached = uncached generation."""
import pytest
import torch

from conftest import greedy, load_star, load_stock, new_tokens, prompt_ids, uncached_greedy
from llava_star import MethodConfig, apply_star

QUESTION = "Is there a cat in the image? Answer the question using a single word or phrase."

# method, budget, expected visual tokens per decoder layer on the 8-layer tiny model
CASES = [
    ("fastv", 58, [576, 576] + [58] * 6),
    ("fastv", None, [576, 576] + [288] * 6),
    ("fastervlm", 58, [58] * 8),
    ("random", 115, [115] * 8),
    ("pdrop", None, [576, 576, 288, 288, 144, 144, 72, 72]),
    ("pdrop", 29, [576, 576, 116, 116, 58, 58, 29, 29]),
    ("sparsevlm", 64, [576, 576, 82, 32, 32, 18, 18, 18]),  # outputs of layers 1/2/4 pruned, + recycled
    ("star", 58, [504] * 4 + [58] * 4),
]


def _inputs(tok, model, proc, image):
    from llava.mm_utils import process_images

    return prompt_ids(tok, QUESTION)[None], process_images([image], proc, model.config).to(model.dtype)


def reference_keep(stock, ids, px, plan):
    """Independent reference: stock CLIP with output_attentions, then the stock decoder layers
    called one by one with an explicit causal mask and output_attentions=True; each stage
    scores from the previous layer's returned attention weights and drops rows."""
    from llava.constants import IMAGE_TOKEN_INDEX

    with torch.no_grad():
        clip = stock.get_vision_tower().vision_tower(px, output_attentions=True, output_hidden_states=True)
        feats = clip.hidden_states[-2][:, 1:]
        grid = torch.arange(576)
        if plan.vision is not None:
            attn = clip.attentions[-2].mean(1)[0]  # [577, 577]
            k = plan.vision.keep if isinstance(plan.vision.keep, int) else round(plan.vision.keep * 576)
            if plan.vision.score == "cls_attention":
                s = attn[0, 1:]
            elif plan.vision.score == "attention_received":
                s = attn.mean(0)[1:]
            else:
                s = None
            if s is not None:
                grid = torch.topk(s, k).indices.sort().values
            else:  # the control's draw: seeded by the seed and the image itself
                from llava_star.pruning.select import image_seed

                gen = torch.Generator().manual_seed(image_seed(plan.seed, px[0]))
                grid = torch.randperm(576, generator=gen)[:k].sort().values
        img = stock.get_model().mm_projector(feats[:, grid])[0]
        where = int(torch.nonzero(ids[0] == IMAGE_TOKEN_INDEX)[0])
        emb = stock.get_model().embed_tokens
        h = torch.cat([emb(ids[0, :where]), img, emb(ids[0, where + 1:])])[None]
        pos = torch.arange(h.shape[1])[None]
        vis = torch.arange(where, where + len(grid))  # rows of h holding visual tokens
        stages = {st.layer: st for st in plan.decoder}
        weights, per_layer = None, []
        for i, layer in enumerate(stock.model.layers):
            if i in stages:
                st = stages[i]
                a = weights[0].mean(0)  # [T, T] from layer i-1, heads averaged
                after = torch.arange(int(vis[-1]) + 1, h.shape[1])
                if st.score == "last_token":
                    s = a[-1, vis]
                elif st.score == "text_mean":
                    s = a[after][:, vis].mean(0)
                else:  # raters: text rows whose attention to the image is above the mean
                    rel = a[after][:, vis].sum(1)
                    s = a[after[rel > rel.mean()]][:, vis].mean(0)
                k = st.keep if isinstance(st.keep, int) else round(st.keep * 576)
                keep = torch.topk(s, min(k, len(vis))).indices.sort().values
                drop = set(vis.tolist()) - set(vis[keep].tolist())
                rows = torch.tensor([r for r in range(h.shape[1]) if r not in drop])
                grid = grid[keep]
                h, pos = h[:, rows], pos[:, rows]
                vis = torch.nonzero(torch.isin(rows, vis[keep])).squeeze(1)
            per_layer.append(len(vis))
            n = h.shape[1]
            mask = torch.full((n, n), torch.finfo(h.dtype).min).triu(1)[None, None]
            h, weights = layer(h, attention_mask=mask, position_ids=pos, output_attentions=True)[:2]
    return grid, per_layer


@pytest.fixture(scope="module")
def stock_eager(tiny15):
    return load_stock(tiny15, attn="eager")


@pytest.mark.parametrize("name,budget,schedule", CASES)
def test_method_matches_reference_and_schedule(tiny15, images, stock_eager, name, budget, schedule):
    tok, model, proc = load_star(tiny15, star=MethodConfig.from_name(name, budget=budget))
    ids, px = _inputs(tok, model, proc, images["coffee"])
    greedy(model, ids, px, n=1)
    rec = model.star_record[0]
    assert rec.tokens_per_layer == schedule
    assert rec.t_eq == pytest.approx(sum(schedule) / 8)
    if name in ("pdrop", "sparsevlm"):
        return  # their official rules (own-layer ranking, re-indexed positions, recycling) have
        # their own independent references: tests/test_official_baselines.py
    ref_grid, ref_layers = reference_keep(stock_eager[1], ids, px, model.star_plan)
    assert ref_layers == schedule
    assert rec.stage2_kept.tolist() == ref_grid.tolist()


@pytest.mark.parametrize("name,budget", [("fastv", 58), ("pdrop", None), ("sparsevlm", 64), ("fastervlm", 58)])
def test_method_cached_equals_uncached(tiny15, images, name, budget):
    tok, model, proc = load_star(tiny15, star=MethodConfig.from_name(name, budget=budget))
    ids, px = _inputs(tok, model, proc, images["rocket"])
    cached = new_tokens(greedy(model, ids, px, n=6)[0], tok.bos_token_id)
    uncached = uncached_greedy(model, ids, px, len(cached))
    assert cached == uncached


def test_random_control_is_seeded(tiny15, images):
    kept = []
    for seed in (0, 0, 1):
        tok, model, proc = load_star(tiny15, star=MethodConfig.from_name("random", budget=58, seed=seed))
        ids, px = _inputs(tok, model, proc, images["coffee"])
        greedy(model, ids, px, n=1)
        kept.append(model.star_record[0].stage2_kept.tolist())
    assert kept[0] == kept[1] != kept[2]


def test_random_control_does_not_depend_on_the_batch(tiny15, images):
    from conftest import batch_inputs

    tok, model, proc = load_star(tiny15, star=MethodConfig.from_name("random", budget=58))
    pics = [images["astronaut"], images["coffee"]]
    singles = []
    for pic in pics:
        ids, px = _inputs(tok, model, proc, pic)
        greedy(model, ids, px, n=1)
        singles.append(model.star_record[0].stage1_kept.tolist())
    model.config.tokenizer_padding_side = "left"
    ids, mask, px = batch_inputs(tok, proc, model, pics, [QUESTION, QUESTION + " Why?"])
    greedy(model, ids, px, attention_mask=mask, n=1)
    assert [r.stage1_kept.tolist() for r in model.star_record] == singles


@pytest.mark.parametrize("call,message", [
    (lambda: MethodConfig.from_name("fastvv"), "unknown method 'fastvv'"),
    (lambda: MethodConfig.from_name("fastv", k=0), "layer must be an int >= 1"),
    (lambda: MethodConfig.from_name("pdrop", ratios=(0.5, 0.25)), "3 layers but 2 keep values"),
    (lambda: MethodConfig.from_name("pdrop", ratios=(0.25, 0.5, 0.125)), "must not increase"),
    (lambda: MethodConfig.from_name("sparsevlm", schedule=(66, 80, 17)), "must not increase"),
    (lambda: MethodConfig.from_name("sparsevlm", budget=58), "give --sparsevlm-schedule"),
    (lambda: MethodConfig.from_name("star", budget=0), "budget must be a positive int"),
    (lambda: MethodConfig.from_name("pdrop", ratios=(1.5, 0.25, 0.125)), r"ratio must be in \(0, 1\]"),
    (lambda: MethodConfig.from_name("fastv", layer=3), "fastv has no knob 'layer'"),
    (lambda: MethodConfig.from_name("star", stage1=0.5), "star has no knob 'stage1'"),
    (lambda: MethodConfig.from_name("random", budget=58, seed="1"), "seed must be an int"),
])
def test_bad_method_configs_fail_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_fastv_layer_beyond_model_depth(tiny15):
    _, model, _ = load_star(tiny15)
    with pytest.raises(ValueError, match="outside 1..7"):
        apply_star(model, MethodConfig.from_name("fastv", k=8))


def test_cli_flag_of_another_method_is_an_error():
    import argparse

    from llava_star.cli import add_method_args, method_from_args

    p = argparse.ArgumentParser()
    add_method_args(p)
    with pytest.raises(SystemExit, match="--fastv-k does not apply to --method star"):
        method_from_args(p.parse_args(["--method", "star", "--fastv-k", "3"]))
    with pytest.raises(SystemExit, match="--budget needs a pruning --method"):
        method_from_args(p.parse_args(["--budget", "58"]))
    cfg = method_from_args(p.parse_args(["--method", "pdrop", "--pdrop-layers", "4,8,12", "--pdrop-ratios", "0.5,0.3,0.1"]))
    assert [(s.layer, s.keep) for s in cfg.plan(32).decoder] == [(4, 0.5), (8, 0.3), (12, 0.1)]
    with pytest.raises(SystemExit, match="--budget and --star-keep both set"):
        method_from_args(p.parse_args(["--method", "star", "--budget", "58", "--star-keep", "115"]))
    with pytest.raises(SystemExit, match="--budget and --visual-token-num both set"):
        method_from_args(p.parse_args(["--method", "fastervlm", "--budget", "58", "--visual-token-num", "64"]))
    with pytest.raises(SystemExit, match="--prune-seed applies to --method random only"):
        method_from_args(p.parse_args(["--method", "fastv", "--prune-seed", "3"]))
    cfg = method_from_args(p.parse_args(["--method", "random", "--budget", "58", "--prune-seed", "3"]))
    assert cfg.plan(32).seed == 3
    assert method_from_args(p.parse_args(["--method", "random", "--budget", "58"])).plan(32).seed == 0
