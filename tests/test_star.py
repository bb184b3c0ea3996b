"""STAR on the tiny LLaVA-1.5 checkpoint: the seven acceptance checks of the STAR core."""
import pytest
import torch

from conftest import batch_inputs, greedy, load_star, load_stock, prompt_ids, uncached_greedy
from llava_star import StarConfig, apply_star
from llava_star.hosts.llava.layers import StarCache

QUESTIONS = ["What is shown in this picture?",
             "Is there a cat in the image? Answer the question using a single word or phrase.",
             "Describe the colors."]
STAR = StarConfig(stage1_keep=504, layer=4, keep=58)


def _single(tok, model, proc, image, question):
    from llava.mm_utils import process_images

    ids = prompt_ids(tok, question)[None]
    return ids, process_images([image], proc, model.config).to(model.dtype)


def _new_tokens(out, bos):
    """generate() with inputs_embeds returns [BOS] + new tokens in transformers 4.37; strip
    BOS and anything after EOS / padding."""
    toks = out.tolist()[1:] if out[0] == bos else out.tolist()
    return toks[:toks.index(2) + 1] if 2 in toks else toks


# 1 -----------------------------------------------------------------------------------------
def test_disabled_and_none_equal_stock_logits(tiny15, images):
    tok, stock, proc = load_stock(tiny15)
    ids, px = _single(tok, stock, proc, images["astronaut"], QUESTIONS[0])
    with torch.no_grad():
        ref = stock(ids, images=px).logits
    _, plain, _ = load_star(tiny15, star=None)
    assert type(plain).__name__ == "LlavaLlamaForCausalLM"  # star=None: stock class, untouched
    with torch.no_grad():
        torch.testing.assert_close(plain(ids, images=px).logits, ref, atol=1e-5, rtol=0)
    _, disabled, _ = load_star(tiny15, star=StarConfig(stage1_keep=576, layer=4, keep=576))
    with torch.no_grad():
        got = disabled(ids, images=px).logits
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    rec = disabled.star_record[0]
    assert rec.stage1_kept.tolist() == list(range(576)) == rec.stage2_kept.tolist()
    assert greedy(disabled, ids, px).tolist() == greedy(stock, ids, px).tolist()


# 2 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_name,question", [("astronaut", QUESTIONS[0]), ("coffee", QUESTIONS[1])])
def test_kept_indices_match_eager_reference(tiny15, images, image_name, question):
    from llava.constants import IMAGE_TOKEN_INDEX

    tok, model, proc = load_star(tiny15, star=STAR)
    ids, px = _single(tok, model, proc, images[image_name], question)
    greedy(model, ids, px, n=1)
    rec = model.star_record[0]

    # Independent reference, stock model, eager attention with output_attentions=True.
    _, stock, _ = load_stock(tiny15, attn="eager")
    with torch.no_grad():
        clip = stock.get_vision_tower().vision_tower(px, output_attentions=True, output_hidden_states=True)
        attn = clip.attentions[-2]  # the layer whose output is hidden_states[-2]
        col = attn.mean(dim=1)[0].mean(dim=0)[1:]  # heads, then query rows; drop CLS column
        ref1 = torch.topk(col, 504).indices.sort().values
        assert rec.stage1_kept.tolist() == ref1.tolist()

        feats = clip.hidden_states[-2][:, 1:][:, ref1]
        image_embeds = stock.get_model().mm_projector(feats)[0]
        where = int(torch.nonzero(ids[0] == IMAGE_TOKEN_INDEX)[0])
        embed = stock.get_model().embed_tokens
        seq = torch.cat([embed(ids[0, :where]), image_embeds, embed(ids[0, where + 1:])])[None]
        out = stock.model(inputs_embeds=seq, output_attentions=True)
        a = out.attentions[STAR.layer - 1][0].mean(0)  # [T, T], heads averaged
        img = slice(where, where + 504)
        score = a[where + 504:, img].mean(0)  # text after the image: question + prompt tail
        ref2 = ref1[torch.topk(score, 58).indices.sort().values]
    assert rec.stage2_kept.tolist() == ref2.tolist()
    assert rec.image_span == (where, 504)


# 3 -----------------------------------------------------------------------------------------
def test_cached_generation_equals_uncached_recompute(tiny15, images):
    tok, model, proc = load_star(tiny15, star=STAR)
    ids, px = _single(tok, model, proc, images["chelsea"], QUESTIONS[0])
    n = 8
    cached = _new_tokens(greedy(model, ids, px, n=n)[0], tok.bos_token_id)
    kept = model.star_record[0].stage2_kept.tolist()
    uncached = uncached_greedy(model, ids, px, len(cached))
    assert model.star_record[0].stage2_kept.tolist() == kept  # the recompute really pruned the same set
    assert cached == uncached
    assert len(cached) >= 3


# 4 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_single_runs(tiny15, images, side):
    tok, model, proc = load_star(tiny15, star=STAR)
    pics = [images["astronaut"], images["coffee"], images["rocket"]]
    singles = []
    for pic, q in zip(pics, QUESTIONS):
        ids, px = _single(tok, model, proc, pic, q)
        singles.append((_new_tokens(greedy(model, ids, px, n=6)[0], tok.bos_token_id),
                        model.star_record[0].stage1_kept.tolist(), model.star_record[0].stage2_kept.tolist()))
    model.config.tokenizer_padding_side = side
    ids, mask, px = batch_inputs(tok, proc, model, pics, QUESTIONS, side=side)
    assert len({int(m.sum()) for m in mask}) == 3  # really different lengths
    out = greedy(model, ids, px, attention_mask=mask, n=6)
    for b, (toks, k1, k2) in enumerate(singles):
        got = _new_tokens(out[b], tok.bos_token_id)
        assert got[:len(toks)] == toks
        assert model.star_record[b].stage1_kept.tolist() == k1
        assert model.star_record[b].stage2_kept.tolist() == k2


# 5 -----------------------------------------------------------------------------------------
def test_sdpa_and_eager_agree(tiny15, images):
    results = []
    for attn in ("sdpa", "eager"):
        tok, model, proc = load_star(tiny15, star=STAR, attn=attn)
        assert model.config._attn_implementation == attn
        model.config.tokenizer_padding_side = "left"
        pics = [images["astronaut"], images["chelsea"]]
        ids, mask, px = batch_inputs(tok, proc, model, pics, QUESTIONS[:2])
        out = greedy(model, ids, px, attention_mask=mask, n=5)
        results.append((out.tolist(), [(r.stage1_kept.tolist(), r.stage2_kept.tolist()) for r in model.star_record]))
    assert results[0] == results[1]


# 6 -----------------------------------------------------------------------------------------
def test_only_kept_tokens_reach_later_layers_and_caches_shrink(tiny15, images):
    tok, model, proc = load_star(tiny15, star=STAR)
    ids, px = _single(tok, model, proc, images["astronaut"], QUESTIONS[0])
    seen = {}

    def record(i):
        def hook(mod, args, kwargs):
            seen.setdefault(i, (args[0] if args else kwargs["hidden_states"]).shape[1])
        return hook

    hooks = [layer.register_forward_pre_hook(record(i), with_kwargs=True)
             for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        out = model(ids, images=px, use_cache=True)
    for h in hooks:
        h.remove()
    n_text = ids.shape[1] - 1
    L = model.config.num_hidden_layers
    assert [seen[i] for i in range(L)] == [n_text + 504] * 4 + [n_text + 58] * (L - 4)
    cache = out.past_key_values
    assert isinstance(cache, StarCache)
    assert cache.layer_lengths() == [n_text + 504] * 4 + [n_text + 58] * (L - 4)
    assert cache.seen_tokens == n_text + 504  # generate continues positions from here
    assert model.star_record[0].tokens_per_layer == [504] * 4 + [58] * (L - 4)
    assert model.star_record[0].t_eq == pytest.approx((504 * 4 + 58 * 4) / 8)
    # positions of the kept tokens are their original ones, so the last text token keeps its
    assert int(cache.key_positions[-1][0, -1]) == n_text + 504 - 1
    # one decode step grows every layer's cache by one
    nxt = out.logits[:, -1:].argmax(-1)
    with torch.no_grad():
        model(nxt, past_key_values=cache, attention_mask=torch.ones(1, n_text + 505, dtype=torch.long),
              use_cache=True)
    assert cache.layer_lengths() == [n_text + 505] * 4 + [n_text + 59] * (L - 4)
    assert int(cache.key_positions[-1][0, -1]) == n_text + 504


# 7 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,field", [
    (dict(stage1_keep=0), "stage1_keep"), (dict(keep=-3), "keep"), (dict(keep=1.5), "keep"),
    (dict(stage1_keep=0.0), "stage1_keep"), (dict(keep=True), "keep"), (dict(keep="58"), "keep"),
    (dict(stage1_keep=504, keep=600), "keep"), (dict(stage1_keep=0.5, keep=0.75), "keep"),
    (dict(layer=0), "layer"), (dict(layer=2.0), "layer"), (dict(layer=True), "layer"),
    (dict(seed=1.5), "seed"), (dict(unit="crops"), "unit"),
])
def test_bad_star_config_raises_named_error(kwargs, field):
    # anchored: "keep" must not be satisfied by a message about "stage1_keep"
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        StarConfig(**kwargs)


def test_expanded_generate_batch_still_prunes(tiny15, images):
    """num_return_sequences / num_beams (also via generation_config) expand the batch after
    llava's merge; every expanded row must be pruned like its sample, not silently left whole."""
    from transformers import GenerationConfig

    tok, model, proc = load_star(tiny15, star=STAR)
    ids, px = _single(tok, model, proc, images["astronaut"], QUESTIONS[0])
    one = _new_tokens(greedy(model, ids, px, n=4)[0], tok.bos_token_id)
    kept = model.star_record[0].stage2_kept.tolist()
    gc = GenerationConfig(**{**model.generation_config.to_dict(), "num_beams": 2, "num_return_sequences": 2,
                             "do_sample": False, "max_new_tokens": 4})
    with torch.no_grad():
        model.generate(ids, images=px, generation_config=gc)
    assert len(model.star_record) == 2
    for rec in model.star_record:
        assert rec.tokens_per_layer == [504] * 4 + [58] * 4 and rec.stage2_kept.tolist() == kept
    with torch.no_grad():
        model.generate(ids, images=px, do_sample=True, num_return_sequences=2, max_new_tokens=2)
    assert [r.tokens_per_layer for r in model.star_record] == [[504] * 4 + [58] * 4] * 2
    assert one  # the plain run produced tokens


def test_failed_generate_leaves_no_stale_image_span(tiny15, images):
    tok, model, proc = load_star(tiny15, star=STAR)
    ids, px = _single(tok, model, proc, images["astronaut"], QUESTIONS[0])
    text = ids[ids != -200][None]  # the same prompt without its image
    with pytest.raises(ValueError):
        model.generate(ids, images=px, max_new_tokens=2, not_a_generate_kwarg=1)
    with torch.no_grad():
        model.generate(text, do_sample=False, max_new_tokens=2)
    assert model.star_record[0].image_span is None and model.star_record[0].tokens_per_layer == [0] * 8


@pytest.mark.parametrize("kwargs,message", [
    (dict(layer=8), "outside 1..7"), (dict(layer=40), "outside 1..7"),
    (dict(stage1_keep=700, keep=58), "vision keep 700 exceeds the 576"),
    (dict(stage1_keep=50, keep=0.5), "must not exceed the 50"),
])
def test_config_checked_against_model(tiny15, kwargs, message):
    _, model, _ = load_star(tiny15)
    with pytest.raises(ValueError, match=message):
        apply_star(model, StarConfig(**kwargs))
    assert type(model).__name__ == "LlavaLlamaForCausalLM"  # a refused config changes nothing


def test_ratios_resolve_and_default_layer_is_half_depth(tiny15, images):
    tok, model, proc = load_star(tiny15, star=StarConfig(stage1_keep=0.875, keep=0.1))
    ids, px = _single(tok, model, proc, images["rocket"], QUESTIONS[2])
    greedy(model, ids, px, n=1)
    assert model.star_record[0].tokens_per_layer == [504] * 4 + [58] * 4


def test_positions_beyond_a_pruned_layers_rotary_table(tiny15, images):
    """A layer after stage 2 caches ~90 tokens but holds positions up to ~570: its rotary
    table must reach them. Shrink every table to 64 rows; prefill and decode still give the
    same logits as with the full tables."""
    tok, model, proc = load_star(tiny15, star=STAR)
    ids, px = _single(tok, model, proc, images["astronaut"], QUESTIONS[0])

    def prefill_and_step():
        with torch.no_grad():
            out = model(ids, images=px, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            n = out.past_key_values.seen_tokens + 1
            step = model(nxt, past_key_values=out.past_key_values,
                         attention_mask=torch.ones(1, n, dtype=torch.long), use_cache=True)
        return out.logits, step.logits

    ref = prefill_and_step()
    for layer in model.model.layers:
        rot = layer.self_attn.rotary_emb
        rot._set_cos_sin_cache(seq_len=64, device=rot.inv_freq.device, dtype=rot.cos_cached.dtype)
    got = prefill_and_step()
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert all(l.self_attn.rotary_emb.max_seq_len_cached >= ids.shape[1] + 504 for l in model.model.layers)
