"""The hf host (transformers 5's LlavaForConditionalGeneration) on a tiny llava-hf checkpoint:
stock equality, every method's kept sets against independent references on stock modules,
cached = uncached, batch = single, true removal, SDPA = eager, bad inputs."""
import pytest
import torch

import reference_hf as ref
from conftest import greedy, inputs, load, prompt, uncached_greedy
import llava_star.hf
from llava_star import MethodConfig
from llava_star.engine.record import PruneRecord
from llava_star.hosts.hf import StarCache
from llava_star.methods import names

QUESTIONS = ["What is shown in this picture?",
             "Is there a cat in the image? Answer the question using a single word or phrase.",
             "Describe the colors."]
METHODS = {
    "none": dict(),
    "star": dict(budget=58),
    "fastv": dict(budget=58),
    "fastervlm": dict(budget=58),
    "sparsevlm": dict(budget=64),
    "pdrop": dict(budget=29),
    "visionzip": dict(budget=64),
    "random": dict(budget=58),
}


def config(name):
    return MethodConfig.from_name(name, **METHODS[name])


@pytest.fixture(scope="module")
def stock(tiny_hf):
    return load(tiny_hf)


@pytest.fixture(scope="module")
def eager(tiny_hf):
    return load(tiny_hf, attn="eager")[1]


def test_every_registered_method_is_covered():
    assert set(METHODS) == set(names())


def test_none_equals_stock_and_remove_gives_it_back(tiny_hf, images):
    proc, model = load(tiny_hf)
    batch = inputs(proc, [images["astronaut"]], QUESTIONS[:1])
    assert batch["input_ids"].shape[1] > 576  # the processor expanded <image> into 576 placeholders
    with torch.no_grad():
        want = model(**batch).logits
    want_tokens = greedy(model, batch)
    llava_star.hf.apply(model, config("none"))
    assert type(model).__name__ == "StarLlavaForConditionalGeneration"
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, want, atol=1e-5, rtol=0)
    assert greedy(model, batch).tolist() == want_tokens.tolist()
    rec = model.star_record[0]
    assert isinstance(rec, PruneRecord) and rec.final_kept.tolist() == list(range(576))
    llava_star.hf.apply(model, config("star"))
    assert greedy(model, batch).tolist() != want_tokens.tolist() or model.star_record[0].final_kept.numel() == 58
    llava_star.hf.remove(model)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert not any(k.startswith("star_") for k in vars(model))
    assert greedy(model, batch).tolist() == want_tokens.tolist()


def _engine_record(tiny_hf, image, name, **kw):
    proc, model = load(tiny_hf, star=MethodConfig.from_name(name, **kw))
    batch = inputs(proc, [image], QUESTIONS[1:2])
    greedy(model, batch, n=1)
    return batch, model.star_record[0]


def _same_kept(rec, expected):
    assert rec.stage1_kept.tolist() == expected.stage1_kept.tolist()
    assert [k.tolist() for k in rec.decoder_kept] == [k.tolist() for k in expected.decoder_kept]
    assert rec.tokens_per_layer == expected.tokens_per_layer


@pytest.mark.parametrize("image", ["coffee", "chelsea"])
def test_star_matches_reference(tiny_hf, images, eager, image):
    batch, rec = _engine_record(tiny_hf, images[image], "star", budget=58)
    with torch.no_grad():
        expected = ref.star(eager, batch["input_ids"], batch["pixel_values"], stage1=504, layer=4, keep=58)
    _same_kept(rec, expected)
    assert rec.final_kept.tolist() == expected.decoder_kept[-1].tolist()


def test_fastv_matches_reference(tiny_hf, images, eager):
    batch, rec = _engine_record(tiny_hf, images["coffee"], "fastv", budget=58)
    with torch.no_grad():
        expected = ref.fastv(eager, batch["input_ids"], batch["pixel_values"], k=2, keep=58)
    _same_kept(rec, expected)


@pytest.mark.parametrize("image", ["coffee", "rocket"])
def test_fastervlm_matches_reference(tiny_hf, images, eager, image):
    batch, rec = _engine_record(tiny_hf, images[image], "fastervlm", budget=58)
    with torch.no_grad():
        expected = ref.fastervlm(eager, batch["input_ids"], batch["pixel_values"], keep=58)
    _same_kept(rec, expected)


@pytest.mark.parametrize("budget", [None, 29])
def test_pdrop_matches_reference(tiny_hf, images, eager, budget):
    batch, rec = _engine_record(tiny_hf, images["coffee"], "pdrop", budget=budget)
    with torch.no_grad():
        expected = ref.pdrop(eager, batch["input_ids"], batch["pixel_values"], ref.pdrop_keeps(budget))
    _same_kept(rec, expected)


@pytest.mark.parametrize("recycle", [True, False])
def test_sparsevlm_matches_reference(tiny_hf, images, eager, recycle):
    batch, rec = _engine_record(tiny_hf, images["coffee"], "sparsevlm", budget=64, recycle=recycle)
    with torch.no_grad():
        expected = ref.sparsevlm(eager, batch["input_ids"], batch["pixel_values"], 64, recycle=recycle)
    _same_kept(rec, expected)
    assert list(rec.merged) == expected.merged


def test_visionzip_matches_reference(tiny_hf, images, eager):
    proc, model = load(tiny_hf, star=MethodConfig.from_name("visionzip", budget=64))
    batch = inputs(proc, [images["coffee"]], QUESTIONS[1:2])
    seen = []  # the first decoder layer's input: the LLM input sequence
    layer0 = model.model.language_model.layers[0]
    hook = layer0.register_forward_pre_hook(lambda m, a, kw: seen.append(a[0] if a else kw["hidden_states"]),
                                            with_kwargs=True)
    try:
        greedy(model, batch, n=1)
    finally:
        hook.remove()
    rec = model.star_record[0]
    with torch.no_grad():
        expected = ref.visionzip(eager, batch["input_ids"], batch["pixel_values"], 54, 10)
    assert rec.stage1_kept.tolist() == expected.stage1_kept.tolist()
    assert rec.tokens_per_layer == expected.tokens_per_layer
    assert len(rec.stage1_kept) + 1 + sum(rec.merged) == 64
    start, length = rec.image_span
    torch.testing.assert_close(seen[0][0, start:start + length], expected.image_block, atol=1e-5, rtol=1e-5)


def test_random_control_draws_per_image(tiny_hf, images):
    kept = [_engine_record(tiny_hf, images[n], "random", budget=58, seed=0)[1].stage1_kept.tolist()
            for n in ("coffee", "chelsea", "coffee")]
    assert kept[0] != kept[1] and kept[0] == kept[2]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_cached_generation_equals_uncached_recompute(tiny_hf, images, name):
    proc, model = load(tiny_hf, star=config(name))
    batch = inputs(proc, [images["chelsea"]], QUESTIONS[:1])
    cached = greedy(model, batch, n=5)
    kept = [k.tolist() for k in model.star_record[0].decoder_kept] + [model.star_record[0].stage1_kept.tolist()]
    uncached = uncached_greedy(model, batch, 5)
    assert [k.tolist() for k in model.star_record[0].decoder_kept] + \
        [model.star_record[0].stage1_kept.tolist()] == kept  # the recompute pruned the same sets
    assert cached.tolist() == uncached.tolist()


# SparseVLM's recycling once decided near-duplicate densities by fp32 rounding, so a padded batch
# picked other cluster centres on astronaut; it ranks them at 1e-4 with ties by index now
# (pruning/merge.cluster_merge), and astronaut is in every method's batch.


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batch_with_left_padding_equals_single_runs(tiny_hf, images, name):
    proc, model = load(tiny_hf, star=config(name))
    pics = [images[n] for n in ("astronaut", "coffee", "rocket")]
    singles = []
    for pic, q in zip(pics, QUESTIONS):
        toks = greedy(model, inputs(proc, [pic], [q]), n=3)[0].tolist()
        r = model.star_record[0]
        singles.append((toks, r.stage1_kept.tolist(), [k.tolist() for k in r.decoder_kept], r.tokens_per_layer))
    batch = inputs(proc, pics, QUESTIONS[:len(pics)])
    assert len({int(m.sum()) for m in batch["attention_mask"]}) == len(pics)  # really different lengths
    out = greedy(model, batch, n=3)
    for b, (toks, k1, kd, per_layer) in enumerate(singles):
        r = model.star_record[b]
        assert (r.stage1_kept.tolist(), [k.tolist() for k in r.decoder_kept], r.tokens_per_layer) == (k1, kd, per_layer)
        assert out[b].tolist() == toks


def test_a_text_only_sample_in_the_batch(tiny_hf, images):
    proc, model = load(tiny_hf, star=config("star"))
    alone = greedy(model, inputs(proc, [images["coffee"]], QUESTIONS[1:2]), n=4)[0].tolist()
    kept = model.star_record[0].final_kept.tolist()
    proc.tokenizer.padding_side = "left"
    batch = proc(images=[images["coffee"]], text=["USER: Say hello. ASSISTANT:", prompt(QUESTIONS[1])],
                 return_tensors="pt", padding=True)
    out = greedy(model, batch, n=4)
    assert model.star_record[0].tokens_per_layer == [0] * 8
    assert model.star_record[1].final_kept.tolist() == kept and out[1].tolist() == alone


def test_only_kept_tokens_reach_later_layers_and_caches_shrink(tiny_hf, images):
    proc, model = load(tiny_hf, star=config("star"))
    batch = inputs(proc, [images["astronaut"]], QUESTIONS[:1])
    seen = {}
    def record(i):
        def hook(mod, args, kwargs):
            seen.setdefault(i, (args[0] if args else kwargs["hidden_states"]).shape[1])
        return hook

    hooks = [layer.register_forward_pre_hook(record(i), with_kwargs=True)
             for i, layer in enumerate(model.model.language_model.layers)]
    with torch.no_grad():
        out = model(**batch, use_cache=True)
    for h in hooks:
        h.remove()
    n_text = batch["input_ids"].shape[1] - 576
    assert [seen[i] for i in range(8)] == [n_text + 504] * 4 + [n_text + 58] * 4
    cache = out.cache
    assert isinstance(cache, StarCache)
    assert cache.layer_lengths() == [n_text + 504] * 4 + [n_text + 58] * 4
    assert int(cache.key_positions[-1][0, -1]) == n_text + 504 - 1  # original positions
    nxt = out.logits[:, -1:].argmax(-1)
    with torch.no_grad():
        model(input_ids=nxt, cache=cache, attention_mask=torch.ones(1, batch["input_ids"].shape[1] + 1,
                                                                    dtype=torch.long), use_cache=True)
    assert cache.layer_lengths() == [n_text + 505] * 4 + [n_text + 59] * 4
    assert int(cache.key_positions[-1][0, -1]) == n_text + 504


def test_reindexed_positions_after_a_stage(tiny_hf, images):
    proc, model = load(tiny_hf, star=config("pdrop"))
    batch = inputs(proc, [images["astronaut"]], QUESTIONS[:1])
    with torch.no_grad():
        cache = model(**batch, use_cache=True).cache
    lengths = cache.layer_lengths()
    assert [int(cache.key_positions[i][0, -1]) for i in range(8)] == [n - 1 for n in lengths]


def test_sdpa_and_eager_agree(tiny_hf, images):
    results = []
    for attn in ("sdpa", "eager"):
        proc, model = load(tiny_hf, attn=attn, star=config("star"))
        assert model.config.text_config._attn_implementation == attn
        out = greedy(model, inputs(proc, [images["astronaut"], images["chelsea"]], QUESTIONS[:2]), n=5)
        results.append((out.tolist(), [r.final_kept.tolist() for r in model.star_record]))
    assert results[0] == results[1]


def test_expanded_generate_batch_still_prunes(tiny_hf, images):
    proc, model = load(tiny_hf, star=config("star"))
    batch = inputs(proc, [images["astronaut"]], QUESTIONS[:1])
    greedy(model, batch, n=2)
    kept = model.star_record[0].final_kept.tolist()
    with torch.no_grad():
        out = model.generate(**batch, num_beams=2, num_return_sequences=2, do_sample=False, max_new_tokens=4)
    assert out.shape[0] == 2 and len(model.star_record) == 2
    assert all(r.final_kept.tolist() == kept and r.tokens_per_layer == [504] * 4 + [58] * 4
               for r in model.star_record)


def test_bad_inputs_are_one_line_errors(tiny_hf, images):
    proc, model = load(tiny_hf, star=config("star"))
    batch = inputs(proc, [images["coffee"]], QUESTIONS[:1])
    with pytest.raises(ValueError, match="do not return attentions"):
        model(**batch, output_attentions=True)
    with pytest.raises(ValueError, match="pixel_values holds 2 images"):
        model(input_ids=batch["input_ids"], pixel_values=torch.cat([batch["pixel_values"]] * 2))
    two = torch.cat([batch["input_ids"][:, :-3], batch["input_ids"][:, -600:]], 1)
    with pytest.raises(ValueError, match="one image per sample"):
        model(input_ids=two, pixel_values=batch["pixel_values"])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match="outside 1..7"):
        llava_star.hf.apply(model, MethodConfig.from_name("star", budget=58, layer=9))
    with pytest.raises(TypeError, match="LlavaForConditionalGeneration or LlavaNextForConditionalGeneration"):
        llava_star.hf.apply(model.model.language_model, config("star"))
