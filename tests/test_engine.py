"""The engine's seams, the registry, remove_star, position policies and the changed methods'
batch = single / cached = uncached guarantees."""
import argparse

import pytest
import torch

from conftest import batch_inputs, greedy, load_star, load_stock, new_tokens, prompt_ids, uncached_greedy
from llava_star import MethodConfig, apply_star, remove_star
from llava_star.engine.seams import Observer, Recorded, hooks

Q = "What is in the image? Answer the question using a single word or phrase."


def _inputs(tok, model, proc, image, question=Q):
    from llava.mm_utils import process_images

    return prompt_ids(tok, question)[None], process_images([image], proc, model.config).to(model.dtype)


def test_remove_star_gives_back_stock_llava(tiny15, images):
    tok, stock, proc = load_stock(tiny15)
    ids, px = _inputs(tok, stock, proc, images["coffee"])
    want = greedy(stock, ids, px, n=5)
    apply_star(stock, MethodConfig.from_name("star", budget=58))
    assert greedy(stock, ids, px, n=5).tolist() != want.tolist() or stock.star_record[0].stage2_kept.numel() == 58
    remove_star(stock)
    assert type(stock).__name__ == "LlavaLlamaForCausalLM"
    assert type(stock.get_vision_tower()).__name__ == "CLIPVisionTower"
    assert not any(k.startswith("star_") or k == "_star_call" for k in vars(stock))
    assert greedy(stock, ids, px, n=5).tolist() == want.tolist()
    with pytest.raises(TypeError, match="remove_star needs a model converted by apply_star"):
        remove_star(stock)


def test_observer_sees_every_phase_and_the_records(tiny15, images):
    class Log(Observer):
        def __init__(self):
            self.phases, self.records = [], []

        def phase(self, name):
            self.phases.append(name)
            return super().phase(name)

        def prefilled(self, records):
            self.records.append(records)

    tok, model, proc = load_star(tiny15, star=MethodConfig.from_name("star", budget=58))
    ids, px = _inputs(tok, model, proc, images["coffee"])
    log = Log()
    with hooks(model, observer=log):
        greedy(model, ids, px, n=3)
    assert "vision_scores" in log.phases and "decoder_scores" in log.phases
    assert len(log.records) == 1 and log.records[0] is model.star_record
    greedy(model, ids, px, n=1)  # outside the block: no longer observed
    assert len(log.records) == 1


def test_selector_seam_decides_what_is_kept(tiny15, images):
    """A selector that keeps the first k candidates: the record shows exactly those cells."""
    def first_k(sel):
        return torch.arange(sel.k)

    tok, model, proc = load_star(tiny15, star=MethodConfig.from_name("star", budget=29))
    ids, px = _inputs(tok, model, proc, images["chelsea"])
    with hooks(model, selector=first_k):
        greedy(model, ids, px, n=1)
    rec = model.star_record[0]
    assert rec.stage1_kept.tolist() == list(range(504))
    assert rec.stage2_kept.tolist() == list(range(29))
    recorded = Recorded()
    with hooks(model, selector=recorded):
        greedy(model, ids, px, n=1)
    assert set(k[0] for k in recorded.choices) == {"vision", "decoder"}


def test_positions_policy(tiny15, images):
    """FastV keeps original positions by default; --positions reindex changes the answer path,
    and cached generation still equals the uncached recompute under either policy."""
    outs = {}
    for positions in ("original", "reindex"):
        tok, model, proc = load_star(tiny15, star=MethodConfig.from_name("fastv", budget=29, positions=positions))
        assert model.star_plan.positions == positions
        ids, px = _inputs(tok, model, proc, images["rocket"])
        with torch.no_grad():
            logits = model(ids, images=px, use_cache=False).logits[0, -1]
        outs[positions] = logits
        cached = new_tokens(greedy(model, ids, px, n=5)[0], tok.bos_token_id)
        assert cached == uncached_greedy(model, ids, px, len(cached))
    assert not torch.allclose(outs["original"], outs["reindex"])
    assert MethodConfig.from_name("pdrop").plan(8).positions == "reindex"
    assert MethodConfig.from_name("sparsevlm", budget=64).plan(8).positions == "reindex"
    assert MethodConfig.from_name("star").plan(8).positions == "original"


@pytest.mark.parametrize("name,budget", [("pdrop", 29), ("sparsevlm", 64), ("visionzip", 64), ("random", 58)])
def test_changed_methods_batch_equals_single(tiny15, images, name, budget):
    tok, model, proc = load_star(tiny15, star=MethodConfig.from_name(name, budget=budget))
    pics = [images["astronaut"], images["coffee"]]
    questions = [Q, "Describe the colours you can see in this picture, briefly."]
    singles = []
    for pic, q in zip(pics, questions):
        ids, px = _inputs(tok, model, proc, pic, q)
        out = new_tokens(greedy(model, ids, px, n=4)[0], tok.bos_token_id)
        rec = model.star_record[0]
        singles.append((out, rec.stage1_kept.tolist(), [d.tolist() for d in rec.decoder_kept], rec.merged,
                        rec.tokens_per_layer))
    model.config.tokenizer_padding_side = "left"
    ids, mask, px = batch_inputs(tok, proc, model, pics, questions)
    out = greedy(model, ids, px, attention_mask=mask, n=4)
    batch = [(new_tokens(o, tok.bos_token_id), r.stage1_kept.tolist(), [d.tolist() for d in r.decoder_kept],
              r.merged, r.tokens_per_layer) for o, r in zip(out, model.star_record)]
    assert batch == singles


def test_visionzip_layout_and_cached_generation(tiny15, images):
    tok, model, proc = load_star(tiny15, star=MethodConfig.from_name("visionzip", budget=64))
    ids, px = _inputs(tok, model, proc, images["chelsea"])
    cached = new_tokens(greedy(model, ids, px, n=5)[0], tok.bos_token_id)
    rec = model.star_record[0]
    assert rec.stage1_kept.numel() == 53 and rec.merged == [10]  # 54 dominant incl. CLS, 10 contextual
    assert rec.tokens_per_layer == [64] * 8
    assert cached == uncached_greedy(model, ids, px, len(cached))
    assert MethodConfig.from_name("visionzip", budget=128).plan(8).vision.merge == 20
    assert MethodConfig.from_name("visionzip", budget=192).plan(8).vision.keep == 161


def test_random_control_differs_per_image_and_follows_the_seed(tiny15, images):
    kept = {}
    for seed in (0, 1):
        tok, model, proc = load_star(tiny15, star=MethodConfig.from_name("random", budget=58, seed=seed))
        for name in ("astronaut", "coffee"):
            ids, px = _inputs(tok, model, proc, images[name])
            greedy(model, ids, px, n=1)
            kept[seed, name] = model.star_record[0].stage1_kept.tolist()
    assert kept[0, "astronaut"] != kept[0, "coffee"]
    assert kept[0, "astronaut"] != kept[1, "astronaut"]


@pytest.mark.parametrize("call,message", [
    (lambda: MethodConfig.from_name("pdrop", budget=577).plan(32), "pdrop: --budget 577 exceeds the 576"),
    (lambda: MethodConfig.from_name("pdrop", budget=1000000).plan(32), "exceeds the 576 visual tokens"),
    (lambda: MethodConfig.from_name("pdrop", layers=(2, 2), ratios=(0.5, 0.25)), "pdrop: layers must increase"),
    (lambda: MethodConfig.from_name("sparsevlm", budget=64, positions="original"), "recycled tokens need"),
    (lambda: MethodConfig.from_name("fastv", positions="sideways"), "positions must be one of"),
    (lambda: MethodConfig.from_name("visionzip", budget=64, dominant=1, contextual=10), "dominant must be >= 2"),
])
def test_bad_new_knobs_fail_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_pdrop_budget_above_the_image_is_refused_at_attach(tiny15):
    with pytest.raises(ValueError, match="pdrop: --budget 577 exceeds the 576 visual tokens"):
        load_star(tiny15, star=MethodConfig.from_name("pdrop", budget=577))


def _parse(argv):
    from llava_star.cli import add_method_args, method_from_args

    p = argparse.ArgumentParser()
    add_method_args(p)
    return method_from_args(p.parse_args(argv))


def test_cli_flags_come_from_the_registry():
    from llava_star.methods import METHODS, knobs_of

    cfg = _parse(["--method", "sparsevlm", "--budget", "64", "--no-sparsevlm-recycle", "--positions", "original"])
    assert cfg.knobs == {"recycle": False, "positions": "original"}
    cfg = _parse(["--method", "visionzip", "--visionzip-dominant", "40", "--visionzip-contextual", "8"])
    assert cfg.plan(8).vision.keep == 39 and cfg.plan(8).vision.merge == 8
    with pytest.raises(SystemExit, match="--visionzip-dominant does not apply to --method star"):
        _parse(["--method", "star", "--visionzip-dominant", "40"])
    with pytest.raises(SystemExit, match="--budget and --visionzip-dominant both set"):
        _parse(["--method", "visionzip", "--budget", "64", "--visionzip-dominant", "40"])
    with pytest.raises(SystemExit, match="--pdrop-layers 2,2|pdrop: layers must increase"):
        _parse(["--method", "pdrop", "--pdrop-layers", "2,2"])
    help_text = _help()
    for name in METHODS:
        for knob in knobs_of(name):
            if knob.flag:
                assert knob.flag in help_text, knob.flag


def _help() -> str:
    from llava_star.cli import add_method_args

    p = argparse.ArgumentParser()
    add_method_args(p)
    return p.format_help()


def test_methods_table_in_docs_is_the_registry():
    """docs/methods.md carries the table `python -m llava_star.methods` prints, unchanged."""
    from pathlib import Path

    from llava_star.methods.table import markdown

    doc = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    assert markdown() in doc


def test_layers_checked_before_the_weights_load(tiny15, monkeypatch):
    """fastv k=40 on an 8-layer checkpoint: refused from config.json, llava's builder never runs."""
    import llava.model.builder as builder

    def never(*a, **k):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(builder, "load_pretrained_model", never)
    from llava_star import load_pretrained_model

    with pytest.raises(ValueError, match="decoder stage layer 40 is outside 1..7"):
        load_pretrained_model(tiny15, star=MethodConfig.from_name("fastv", budget=58, k=40), device="cpu")


def test_default_device_is_what_is_there(tiny15):
    from llava_star import load_pretrained_model

    _, model, _, _ = load_pretrained_model(tiny15)  # no GPU here: CPU, fp32
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert model.dtype == torch.float32
        with pytest.raises(ValueError, match="device='cuda': CUDA is not available here"):
            load_pretrained_model(tiny15, device="cuda")


def test_visionzip_refused_on_next(tiny_dir):
    with pytest.raises(ValueError, match="visionzip needs one crop per image"):
        load_star(tiny_dir("llava-next"), star=MethodConfig.from_name("visionzip", budget=64))
