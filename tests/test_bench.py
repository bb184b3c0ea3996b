"""Smoke test of the benchmark on the tiny geometry (random weights, 1 repeat)."""
import csv
import json
import re

import pytest

from llava_star import bench
from llava_star.geometry import get_geometry


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = bench.main(["--geometry", "tiny", "--random-weights", "--device", "cpu", "--methods", "star,fastv",
                       "--budgets", "58", "--repeats", "1", "--warmup", "0", "--new-tokens", "3",
                       "--text-before", "35", "--text-after", "30", "--out-dir", str(out), "--quiet"])
    assert code == 0
    with open(out / "bench.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    return out, rows


def test_outputs_written(run):
    out, rows = run
    assert set(rows) == {"stock", "none", "star@58", "fastv@58"}
    md = (out / "bench.md").read_text()
    assert "| Method |" in md and "star" in md and "Prefill ms" in md
    meta = json.loads((out / "bench.json").read_text())["meta"]
    assert meta["new_tokens"] == 3 and meta["repeats"] == 1


def test_numbers_positive(run):
    _, rows = run
    for r in rows.values():
        for key in ("prefill_ms", "decode_ms_per_token", "e2e_ms", "tokens_per_s", "peak_mem_mib",
                    "kv_cache_bytes", "tflops", "flops_ratio", "t_eq"):
            assert float(r[key]) > 0, (r["label"], key)
        assert float(r["e2e_ms"]) >= float(r["prefill_ms"])
    assert float(rows["star@58"]["scoring_pct"]) > 0
    assert float(rows["stock"]["flops_ratio"]) == 1.0
    assert float(rows["star@58"]["flops_ratio"]) < float(rows["none"]["flops_ratio"]) < 1.0


def test_kv_cache_shrinks_in_proportion(run):
    """KV bytes after prefill = sum over layers of (text + visual tokens cached) x 2 (K, V)
    x hidden x 4 bytes (fp32), from the per-layer counts the engine recorded."""
    _, rows = run
    g = get_geometry("tiny")
    text = 65
    for label, r in rows.items():
        per_layer = [int(x) for x in r["tokens_per_layer"].split()]
        assert len(per_layer) == g.layers
        expected = sum(text + v for v in per_layer) * 2 * g.hidden * 4
        assert int(r["kv_cache_bytes"]) == expected, label
    assert rows["star@58"]["tokens_per_layer"].split() == ["504"] * 4 + ["58"] * 4
    ratio = int(rows["star@58"]["kv_cache_bytes"]) / int(rows["none"]["kv_cache_bytes"])
    assert ratio == pytest.approx((4 * (65 + 504) + 4 * (65 + 58)) / (8 * (65 + 576)))
    assert rows["stock"]["kv_cache_bytes"] == rows["none"]["kv_cache_bytes"]


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--geometry", "--random-weights", "--model-path", "--methods", "--budgets", "--repeats",
                 "--warmup", "--new-tokens", "--out-dir", "--dtype", "--device"):
        assert flag in out


def test_bad_arguments():
    with pytest.raises(SystemExit):
        bench.main(["--geometry", "tiny", "--repeats", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--geometry", "tiny", "--methods", "nosuch", "--quiet", "--repeats", "1"])



@pytest.mark.parametrize("argv,msg", [
    (["--model-path", "/nonexistent/llava-x"], "--model-path /nonexistent/llava-x: no such directory"),
    (["--geometry", "tiny", "--batch", "0"], "--batch must be >= 1"),
    (["--geometry", "tiny", "--threads", "-1"], "--threads must be >= 1"),
    (["--geometry", "tiny", "--text-before", "-1"], "--text-before must be >= 0"),
    (["--geometry", "tiny", "--profile", "star@7"], "--profile star@7: no such row"),
    (["--geometry", "tiny", "--out-dir", "/proc/llava_star_nope"], "--out-dir /proc/llava_star_nope: not writable"),
])
def test_bad_arguments_are_named_before_running(argv, msg):
    """Clear errors naming the flag, raised before any timed run (no traceback)."""
    with pytest.raises(SystemExit, match=re.escape(msg)):
        bench.main(argv + ["--quiet", "--repeats", "1"])


def test_next_checkpoint(tiny_dir, tmp_path):
    """A LLaVA-NeXT checkpoint runs with real anyres crops; its FLOPs are counted on a real
    prefill, and the KV cache shrinks in proportion to the recorded per-layer counts."""
    import json

    from llava_star import bench

    out = tmp_path / "next"
    code = bench.main(["--model-path", tiny_dir("llava-next"), "--device", "cpu", "--methods", "star",
                       "--budgets", "58", "--repeats", "1", "--warmup", "0", "--new-tokens", "2",
                       "--no-scoring", "--ab-pairs", "0", "--image-size", "672x448", "--out-dir", str(out),
                       "--quiet"])
    assert code == 0
    rows = {r["label"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    stock, star = rows["stock"], rows["star@58"]
    assert stock["t_eq"] > 576  # base + grid crops + newlines
    assert 0 < star["flops_ratio"] < 1 and 0 < star["decoder_flops_ratio"] < 1
    text = 35 + 30  # prompt ids before and after the image placeholder (bench defaults)
    per_layer = {k: [int(n) for n in r["tokens_per_layer"].split()] for k, r in (("star", star), ("stock", stock))}
    expect = sum(text + n for n in per_layer["star"]) / sum(text + n for n in per_layer["stock"])
    assert star["kv_cache_bytes"] / stock["kv_cache_bytes"] == pytest.approx(expect, rel=1e-6)


def test_next_fixed_grid_and_whole_image_budget(tiny_dir, tmp_path):
    """--fixed-grid 672 gives every image base + 2x2 crops (2880 patches, no unpad for a
    square image, plus one newline per grid row); a whole-image budget may exceed 576."""
    import json

    from llava_star import bench

    out = tmp_path / "grid"
    assert bench.main(["--model-path", tiny_dir("llava-next"), "--device", "cpu", "--methods", "fastervlm",
                       "--budgets", "700", "--fixed-grid", "672", "--image-size", "672x672", "--repeats", "1",
                       "--warmup", "0", "--new-tokens", "1", "--no-scoring", "--ab-pairs", "0",
                       "--out-dir", str(out), "--quiet"]) == 0
    rows = {r["label"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    newlines = 2 * 24
    assert rows["stock"]["t_eq"] == 5 * 576 + newlines
    assert rows["fastervlm@700"]["t_eq"] == 700 + newlines  # 140 patches in each of the 5 crops
    with pytest.raises(SystemExit, match="--fixed-grid and --budget-unit are for LLaVA-NeXT"):
        bench.main(["--geometry", "tiny", "--fixed-grid", "672"])
    # refused before any run, in one line: VisionZip's merge needs one crop per image
    with pytest.raises(SystemExit, match="^error: --methods visionzip: visionzip needs one crop per image"):
        bench.main(["--model-path", tiny_dir("llava-next"), "--device", "cpu", "--methods", "visionzip",
                    "--budgets", "58", "--out-dir", str(out), "--quiet"])


def _row(label, times_ms):
    import statistics
    q = statistics.quantiles(sorted(times_ms), n=4, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 3
    return {"label": label, "prefill_ms": statistics.median(times_ms), "prefill_ms_min": min(times_ms),
            "prefill_ms_max": max(times_ms), "prefill_ms_q1": q[0], "prefill_ms_q3": q[2], "repeats": len(times_ms)}


def test_spread_warning_names_noisy_rows_and_says_how_to_rerun():
    """The FastV spread seen on a busy machine (358-2278 ms) is flagged; a tight row is not."""
    rows = [_row("stock", [1000, 1010, 1005, 998, 1003]), _row("fastv@58", [358, 2278, 900, 410, 1500])]
    lines = bench.spread_warnings(rows, {"loadavg_before": (3.5, 2.0, 1.0), "device": "cpu"})
    assert len(lines) == 2 and lines[0].startswith("fastv@58: prefill 358.0-2278.0 ms over 5 repeats")
    assert "--repeats" in lines[1] and "load average was 3.5" in lines[1]
    assert bench.spread_warnings(rows[:1], {"device": "cpu"}) == []
    # two repeats: judged on the range
    assert bench.spread_warnings([_row("star@58", [100, 130])], {"device": "cuda"})[0].startswith("star@58")


def test_spread_verdict_recorded(run):
    out, _ = run
    meta = json.loads((out / "bench.json").read_text())["meta"]
    assert isinstance(meta["spread_warnings"], list)
