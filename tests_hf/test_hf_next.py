"""The hf host on LLaVA-NeXT (transformers 5's LlavaNextForConditionalGeneration, anyres with
unpad and newline) on a tiny llava-hf NeXT checkpoint, prompts through its own processor.
Which tokens each method keeps is checked against the llava host, itself checked against
independent references (tests/test_next.py), in test_cross_host.py; here: stock equality,
batch with padding = single runs, cached = uncached, beams, SDPA = eager, text-only samples, bad inputs."""
import pytest
import torch

from conftest import greedy, inputs, load, prompt, uncached_greedy
import llava_star.hf
from llava_star import MethodConfig

# two images whose unpadded layouts differ in length (coffee 400x600: 2112 patch rows,
# chelsea 300x451: 1440), so a batch of them is really padded
PICS = ("coffee", "chelsea")
QUESTIONS = ["What is shown in this picture?", "Is there a cat in the image?"]
# one of each path through the engine on NeXT (the cross-host test runs every method): a
# deferred vision stage with a decoder stage, recycling with reindexed positions, three stages
METHODS = {"star": dict(budget=58), "sparsevlm": dict(budget=64), "pdrop": dict(budget=29)}


def config(name):
    return MethodConfig.from_name(name, **METHODS.get(name, {}))


def kept(record):
    return record.stage1_kept.tolist(), [k.tolist() for k in record.decoder_kept], record.tokens_per_layer


def generated(model, batch, n):
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=n, output_logits=True,
                             return_dict_in_generate=True)
    return out.sequences[:, batch["input_ids"].shape[1]:].tolist(), out.logits[0]


def test_none_equals_stock(tiny_hf_next, images):
    proc, model = load(tiny_hf_next)
    batch = inputs(proc, [images[n] for n in PICS], QUESTIONS)
    assert batch["pixel_values"].dim() == 5 and len({int(m.sum()) for m in batch["attention_mask"]}) == 2
    want_tokens, want = generated(model, batch, 3)
    llava_star.hf.apply(model, MethodConfig.from_name("none"))
    assert type(model).__name__ == "StarLlavaNextForConditionalGeneration"
    tokens, logits = generated(model, batch, 3)
    torch.testing.assert_close(logits, want, atol=1e-4, rtol=0)  # the prefill's last-token logits
    assert tokens == want_tokens
    for b, r in enumerate(model.star_record):  # every placeholder is an image row; newline rows are not patches
        placeholders = int((batch["input_ids"][b] == model.config.image_token_id).sum())
        assert r.image_span[1] == placeholders > r.num_patches == r.final_kept.numel()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_batch_with_left_padding_equals_single_runs(tiny_hf_next, images, name):
    proc, model = load(tiny_hf_next, star=config(name))
    pics = [images[n] for n in PICS]
    singles = []
    for pic, q in zip(pics, QUESTIONS):
        toks = greedy(model, inputs(proc, [pic], [q]), n=3)[0].tolist()
        singles.append((toks, kept(model.star_record[0])))
    out = greedy(model, inputs(proc, pics, QUESTIONS), n=3)
    for b, (toks, want) in enumerate(singles):
        assert kept(model.star_record[b]) == want
        assert out[b].tolist() == toks


def test_cached_generation_equals_uncached_recompute(tiny_hf_next, images):
    proc, model = load(tiny_hf_next, star=config("star"))
    batch = inputs(proc, [images["chelsea"]], QUESTIONS[1:2])
    cached = greedy(model, batch, n=4)
    want = kept(model.star_record[0])
    assert uncached_greedy(model, batch, 4).tolist() == cached.tolist()
    assert kept(model.star_record[0]) == want


def test_crop_budget_and_the_vision_stage_removes_per_crop(tiny_hf_next, images):
    proc, model = load(tiny_hf_next, star=MethodConfig.from_name("fastervlm", budget=20, unit="crop"))
    batch = inputs(proc, [images["coffee"]], QUESTIONS[:1])
    greedy(model, batch, n=1)
    r = model.star_record[0]
    crops = r.num_patches // 576
    assert crops == batch["pixel_values"].shape[1] and r.stage1_kept.numel() <= 20 * crops
    # unpad can cut a kept patch of a grid crop, never one of the base image (crop 0)
    assert int((r.stage1_kept < 576).sum()) == 20


def test_a_text_only_sample_in_the_batch(tiny_hf_next, images):
    proc, model = load(tiny_hf_next, star=config("star"))
    alone = greedy(model, inputs(proc, [images["coffee"]], QUESTIONS[:1]), n=4)[0].tolist()
    want = kept(model.star_record[0])
    proc.tokenizer.padding_side = "left"
    batch = proc(images=[images["coffee"]], text=["USER: Say hello. ASSISTANT:", prompt(QUESTIONS[0])],
                 return_tensors="pt", padding=True)
    out = greedy(model, batch, n=4)
    assert model.star_record[0].tokens_per_layer == [0] * 8
    assert kept(model.star_record[1]) == want and out[1].tolist() == alone


def test_bad_inputs_are_one_line_errors(tiny_hf_next, images):
    proc, model = load(tiny_hf_next, star=config("star"))
    batch = inputs(proc, [images["coffee"]], QUESTIONS[:1])
    with pytest.raises(ValueError, match="needs image_sizes"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
    short = batch["input_ids"][:, 5:]  # the run lost placeholders: transformers' packing disagrees
    with pytest.raises(ValueError, match="image placeholder tokens but its image .* packs into"):
        model(input_ids=short, pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"])
    with pytest.raises(ValueError, match="visionzip needs one crop per image"):
        llava_star.hf.apply(model, MethodConfig.from_name("visionzip", budget=64))


def test_expanded_generate_batch_still_prunes(tiny_hf_next, images):
    """num_beams / num_return_sequences repeat the batch inside generate, after the merge: each
    copy keeps what the single run kept (the context's crops, layouts and keep mask repeat)."""
    proc, model = load(tiny_hf_next, star=config("star"))
    pics, questions = [images[n] for n in PICS], QUESTIONS
    greedy(model, inputs(proc, pics, questions), n=1)
    want = [kept(r) for r in model.star_record]
    with torch.no_grad():
        out = model.generate(**inputs(proc, pics, questions), num_beams=2, num_return_sequences=2, do_sample=False,
                             max_new_tokens=3)
    assert out.shape[0] == 4 and [kept(r) for r in model.star_record] == [w for w in want for _ in range(2)]


def test_sdpa_and_eager_agree(tiny_hf_next, images):
    """The masks built from positions (eager always takes one) give what SDPA's causal path gives."""
    runs = []
    for attn in ("sdpa", "eager"):
        proc, model = load(tiny_hf_next, attn=attn, star=config("pdrop"))
        toks = greedy(model, inputs(proc, [images[n] for n in PICS], QUESTIONS), n=3).tolist()
        runs.append((toks, [kept(r) for r in model.star_record]))
    assert runs[0] == runs[1]
