"""FLOPs: theory against counts through the real code path, a hand-checked geometry, the CLI."""
import json

import pytest

from llava_star import flop_count, flops
from llava_star.engine.plan import DecoderStage, Plan, VisionStage
from llava_star.geometry import Geometry, VisionGeometry, get_geometry

G7 = get_geometry("llava-v1.5-7b")
CASES = [(m, b) for m in ("star", "fastv", "fastervlm", "random", "pdrop") for b in (288, 115, 58, 29)]
CASES += [("sparsevlm", b) for b in (192, 128, 64)]
PARTS = ("decoder", "vision", "projector", "lm_head", "scoring")


def _close(measured, theory, total, tol=0.02):
    """Relative agreement; parts that are ~0 (no scoring) are judged against the total."""
    return abs(measured - theory) <= tol * max(theory, 1e-6 * total)


@pytest.mark.parametrize("method,budget", CASES)
def test_theory_matches_meta_count_7b(method, budget):
    """FlopCounterMode on a meta-device LLaVA-1.5-7B (no weights) through llava's merge and
    our engine agrees with the formulas within 2%, part by part, with the same token counts."""
    plan = flops.method_plan(method, budget, G7)
    t = flops.theory(G7, plan, text_tokens=64)
    m = flop_count.measure(G7, plan, text_tokens=64)
    assert m["tokens_per_layer"] == t.tokens_per_layer
    assert m["t_eq"] == pytest.approx(t.t_eq)
    assert _close(m["total"], t.total, t.total)
    for part, value in [("decoder", t.decoder), ("vision", t.vision), ("projector", t.projector),
                        ("lm_head", t.lm_head), ("scoring", t.scoring)]:
        assert _close(m[part], value, t.total), (part, m[part], value)


def test_baseline_and_engine_without_pruning_7b():
    stock = flops.theory(G7, None, 64)
    m = flop_count.measure(G7, None, 64)
    for part, value in [("decoder", stock.decoder), ("vision", stock.vision), ("projector", stock.projector)]:
        assert _close(m[part], value, stock.total)
    assert _close(m["total"], stock.total, stock.total)
    none = flops.theory(G7, Plan("none"), 64)
    mn = flop_count.measure(G7, Plan("none"), 64)
    assert _close(mn["total"], none.total, none.total)
    # our tower stops at the select layer: 23 of CLIP's 24 layers
    layer = flops.clip_layer_macs(G7) * 2
    assert stock.vision - none.vision == layer
    assert none.decoder == stock.decoder


# A geometry small enough to check by hand: 4 patches (28 px / 14), CLIP 3 layers (2 run).
HAND = Geometry("hand", layers=4, hidden=8, intermediate=16, heads=2, vocab=10,
                vision=VisionGeometry(image_size=28, patch_size=14, hidden=4, intermediate=8, layers=3, heads=2))
HAND_PLAN = Plan("star", VisionStage("attention_received", 3), (DecoderStage(2, "text_mean", 2),))


def test_theory_by_hand():
    t = flops.theory(HAND, HAND_PLAN, text_tokens=5, text_before=2)  # 3 text tokens after the image
    assert t.tokens_per_layer == [3, 3, 2, 2]
    assert t.t_eq == 2.5
    # decoder layer MACs over n tokens, d=8, m=16, kv=d:  n(2d^2 + 2d^2) + 2n^2 d + 3ndm = 640n + 16n^2
    # n = 3+5 = 8 at layers 0-1: 5120 + 1024 = 6144;  n = 7 at layers 2-3: 4480 + 784 = 5264
    assert t.decoder == 2 * (2 * 6144 + 2 * 5264) == 45632
    # FastV's 4nd^2 + 2n^2d + 2ndm: n=8: 2048 + 1024 + 2048; n=7: 1792 + 784 + 1792
    assert t.fastv_decoder == 2 * 5120 + 2 * 4368 == 18976
    # CLIP layer over T=5 tokens, dv=4, mv=8: 4*5*16 + 2*25*4 + 2*5*4*8 = 840 MACs;
    # patch conv 4 patches * 4 channels * 3*14*14 = 9408; our tower runs 2 layers
    assert t.vision == 2 * (9408 + 2 * 840) == 22176
    # mlp2x_gelu on 3 kept patches: 3 * (4*8 + 8*8)
    assert t.projector == 2 * 288 == 576
    # stage 1: q and k over 5 tokens (2*5*16) + q k^T (25*4);  stage 2: 3 rows: q (3*64) +
    # logits against the 8 tokens layer 1 cached (3*8*8)
    assert t.scoring_vision == 2 * 260 == 520
    assert t.scoring_decoder == 2 * 384 == 768
    assert t.lm_head == 2 * 80 == 160
    assert t.total == 45632 + 22176 + 576 + 520 + 768 + 160 == 69832
    stock = flops.theory(HAND, None, text_tokens=5, text_before=2)
    # n = 4 + 5 = 9 everywhere: 640*9 + 16*81 = 7056 per layer; CLIP all 3 layers; 4 patches projected
    assert stock.decoder == 2 * 4 * 7056 == 56448
    assert stock.total == 56448 + 2 * (9408 + 3 * 840) + 2 * 384 + 160 == 81232


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_hand_geometry_counted(device):
    """The same numbers counted by FlopCounterMode, on meta and on a real CPU model (the CPU
    run also checks that the meta bookkeeping does not change what is counted)."""
    t = flops.theory(HAND, HAND_PLAN, text_tokens=5, text_before=2)
    m = flop_count.measure(HAND, HAND_PLAN, text_tokens=5, text_before=2, device=device)
    assert m["tokens_per_layer"] == [3, 3, 2, 2]
    assert (m["decoder"], m["vision"], m["projector"], m["scoring"], m["lm_head"], m["total"]) == \
        (45632, 22176, 576, 1288, 160, 69832)
    ms = flop_count.measure(HAND, None, text_tokens=5, text_before=2, device=device)
    assert ms["total"] == flops.theory(HAND, None, 5, 2).total == 81232


@pytest.mark.parametrize("method,budget", [("star", 58), ("fastv", 29), ("sparsevlm", 64), ("random", 115)])
def test_meta_count_equals_real_cpu_count_tiny(method, budget):
    g = get_geometry("tiny")
    plan = flops.method_plan(method, budget, g)
    real = flop_count.measure(g, plan, 64, device="cpu")
    meta = flop_count.measure(g, plan, 64)
    assert real == meta
    assert real["total"] == flops.theory(g, plan, 64).total


def test_star_58_cuts_llava7b_flops_by_46_percent():
    """The STAR paper: at 58 tokens STAR cuts LLaVA-1.5-7B's FLOPs by ~46% (our defaults K=16,
    504 patches after stage 1; a 64-token prompt)."""
    r = flops.report(G7, flops.method_plan("star", 58, G7), 64)
    assert 0.45 <= 1 - r["ratio"] <= 0.47
    assert 0.45 <= 1 - r["fastv_ratio"] <= 0.47
    assert r["t_eq"] == 281.0


def test_next_geometry_counts_crops():
    g = get_geometry("llava-next-7b")
    assert g.visual_tokens == 2880
    t = flops.theory(g, flops.method_plan("star", 58, g, unit="crop"), 64)
    assert t.tokens_per_layer == [5 * 504] * 16 + [5 * 58] * 16
    # the engine's default unit "image": an int budget is for the whole image; an int vision
    # budget is spread over the crops, rounded up per crop (llava.py _crop_keep_counts)
    t = flops.theory(g, flops.method_plan("star", 58, g), 64)
    assert t.tokens_per_layer == [5 * 504] * 16 + [58] * 16
    assert flops.theory(g, flops.method_plan("fastervlm", 64, g), 64).tokens_per_layer == [5 * 13] * 32
    assert flops.theory(g, flops.method_plan("fastervlm", 64, g, unit="crop"), 64).tokens_per_layer == [5 * 64] * 32
    stock = flops.theory(g, None, 64)
    assert stock.decoder == 2 * 32 * flops.decoder_layer_macs(2880 + 64, g)
    assert stock.vision == 2 * 5 * (flops.patch_embed_macs(g) + 24 * flops.clip_layer_macs(g))


def test_cli_json(capsys):
    assert flops.main(["--geometry", "llava-v1.5-7b", "--method", "star", "--budget", "58",
                       "--text-tokens", "64", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip())
    for key in ("decoder_flops", "baseline_decoder_flops", "total_flops", "baseline_total_flops", "ratio",
                "t_eq", "tokens_per_layer", "fastv_ratio"):
        assert key in r
    assert r["tokens_per_layer"] == [504] * 16 + [58] * 16
    assert r["ratio"] == pytest.approx(r["decoder_flops"] / r["baseline_decoder_flops"])


def test_cli_measured_json(capsys):
    assert flops.main(["--method", "fastv", "--budget", "58", "--measured", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip())
    assert abs(r["measured_rel_err"]["total"]) < 0.02
    assert r["measured"]["tokens_per_layer"] == r["tokens_per_layer"]


def test_cli_all_methods_table(capsys):
    assert flops.main(["--geometry", "llava-v1.5-7b", "--method", "all", "--budget", "58"]) == 0
    out = capsys.readouterr().out
    for name in ("none", "star", "fastv", "fastervlm", "sparsevlm", "pdrop", "random", "stock llava"):
        assert name in out
    assert "sparsevlm@64" in out  # nearest published schedule
    assert "t_eq" in out and "504x16, 58x16" in out


def test_cli_errors_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        flops.main(["--help"])
    assert e.value.code == 0
    assert "--measured" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        flops.main(["--method", "sparsevlm", "--budget", "58"])
    with pytest.raises(SystemExit):
        flops.main(["--method", "all", "--star-keep", "10"])


def test_cli_next_budget_unit(capsys):
    rows = {}
    for unit in ("image", "crop"):
        assert flops.main(["--geometry", "llava-next-7b", "--method", "star", "--budget", "58",
                           "--budget-unit", unit, "--json"]) == 0
        rows[unit] = json.loads(capsys.readouterr().out.strip())
    assert rows["image"]["remaining"] == 58 and rows["crop"]["remaining"] == 290
    assert rows["image"]["decoder_flops"] < rows["crop"]["decoder_flops"]


@pytest.mark.parametrize("method,budget,expect", [
    ("star", 58, [504] * 20 + [58] * 20),                                   # K = L/2 = 20 on 40 layers
    ("pdrop", 58, [576] * 10 + [232] * 10 + [116] * 10 + [58] * 10),       # 8/16/24 of 32 -> 10/20/30
    # ranking layers 2/6/15 of 32 -> 3/8/19, whose outputs are pruned (stages at 4/9/20); each
    # stage adds its recycled tokens: 66 + 16, 30 + 2, 17 + 1
    ("sparsevlm", 64, [576] * 4 + [82] * 5 + [32] * 11 + [18] * 20),
])
def test_13b_depth_scales_the_stage_layers(capsys, method, budget, expect):
    assert flops.main(["--geometry", "llava-v1.5-13b", "--method", method, "--budget", str(budget),
                       "--text-tokens", "64", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip())
    assert r["tokens_per_layer"] == expect


# llava-hf/llava-1.5-7b-hf's config.json (transformers 4.x left out the LlamaConfig defaults)
LLAVA_HF_7B = {"model_type": "llava", "image_token_index": 32000, "vision_feature_layer": -2,
               "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
               "text_config": {"model_type": "llama", "vocab_size": 32064, "architectures": ["LlamaForCausalLM"]},
               "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                                 "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
                                 "patch_size": 14, "projection_dim": 768}}
# liuhaotian/llava-v1.5-7b's (the fields the geometry reads)
LIUHAOTIAN_7B = {"model_type": "llava_llama", "hidden_size": 4096, "intermediate_size": 11008,
                 "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                 "max_position_embeddings": 4096, "mm_vision_tower": "openai/clip-vit-large-patch14-336",
                 "mm_vision_select_layer": -2, "mm_projector_type": "mlp2x_gelu", "image_aspect_ratio": "pad"}


@pytest.mark.parametrize("config, vocab", [(LLAVA_HF_7B, 32064), (LIUHAOTIAN_7B, 32000)])
def test_model_path_reads_either_layout_as_the_7b_geometry(tmp_path, capsys, config, vocab):
    (tmp_path / "config.json").write_text(json.dumps(config))
    flops.main(["--model-path", str(tmp_path), "--method", "star", "--budget", "58", "--json"])
    flops.main(["--geometry", "llava-v1.5-7b", "--method", "star", "--budget", "58", "--json"])
    got, want = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    for key in ("tokens_per_layer", "decoder_flops", "vision_flops", "projector_flops", "scoring_flops"):
        assert got[key] == want[key], key
    assert got["lm_head_flops"] == 2 * 4096 * vocab


def test_model_path_geometry_is_the_loaded_models(tiny15):
    from llava_star.geometry import geometry_of, geometry_of_config
    from llava_star.loader import load_pretrained_model

    _, model, _, _ = load_pretrained_model(tiny15, None, None, device="cpu")
    assert geometry_of_config(tiny15, "t") == geometry_of(model, "t")


def test_model_path_errors_name_the_flag(tmp_path):
    with pytest.raises(SystemExit, match="^error: --model-path .*: no readable config.json"):
        flops.main(["--model-path", str(tmp_path)])
    (tmp_path / "config.json").write_text(json.dumps(LIUHAOTIAN_7B))
    with pytest.raises(SystemExit, match="^error: --model-path reads the geometry .*; drop --geometry"):
        flops.main(["--model-path", str(tmp_path), "--geometry", "tiny"])
    (tmp_path / "config.json").write_text(json.dumps({**LIUHAOTIAN_7B, "mm_vision_tower": "some/tower"}))
    with pytest.raises(SystemExit, match=r"^error: --model-path .*: mm_vision_tower 'some/tower'"):
        flops.main(["--model-path", str(tmp_path)])
