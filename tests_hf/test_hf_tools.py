"""The tools on the hf host (transformers' own LlavaForConditionalGeneration): visualize draws
what the engine recorded, bench --host hf times transformers' unmodified model next to the
engine's rows, flops reads a llava-hf config.json; fast --help, one-line errors."""
import csv
import json

import numpy as np
import pytest
import torch

from conftest import REPO, greedy, load, prompt
from help_probe import run_help
from llava_star import MethodConfig, bench, flops, visualize, visualize_hf
from llava_star.prompting import hf_prompt

Q = "What is shown in this image?"


@pytest.mark.parametrize("module", ["llava_star.visualize", "llava_star.bench", "llava_star.flops"])
def test_help_imports_nothing_heavy(module):
    out, _ = run_help(module, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "--host" in out.stdout or module == "llava_star.flops"
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:"


def engine_record(tiny_hf, image, method="star", budget=58):
    """The record of an independent engine run: the checkpoint's processor on LLaVA-1.5's prompt."""
    proc, model = load(tiny_hf, star=MethodConfig.from_name(method, budget))
    greedy(model, proc(images=image, text=prompt(Q), return_tensors="pt"), n=2)
    return model.star_record[0]


def test_visualize_prompts_with_the_chat_template_and_draws_the_record(tiny_hf, images):
    proc, model = load(tiny_hf, star=MethodConfig.from_name("star", 58))
    assert hf_prompt(proc, Q) == prompt(Q)  # the template gives LLaVA-1.5's prompt
    fig = visualize_hf.render(model, proc, images["chelsea"], Q, max_new_tokens=2, label="star@58")
    rec, ref = fig.llava_star_record, engine_record(tiny_hf, images["chelsea"])
    assert torch.equal(rec.stage1_kept, ref.stage1_kept) and torch.equal(rec.final_kept, ref.final_kept)
    assert rec.final_kept.numel() == 58 and rec.t_eq == ref.t_eq
    titles = {ax.get_label(): ax.get_title() for ax in fig.axes}
    assert titles["vision_run0"].endswith("kept 504 / 576")
    assert titles["decoder 0_run0"].endswith("kept 58 / 504")
    # the panel shows the processor's square (the cat padded with the mean colour): grey top rows
    view = visualize_hf.model_view(images["chelsea"], proc)
    assert view.shape == (336, 336, 3)
    assert abs(view[:5].reshape(-1, 3).mean(0) - 255 * torch.tensor(proc.image_processor.image_mean).numpy()).max() < 2


def test_visualize_cli_compare_writes_the_png_with_the_engine_counts(tiny_hf, images, tmp_path, capsys):
    from PIL import Image

    photo, out = tmp_path / "cat.png", tmp_path / "fig.png"
    images["chelsea"].save(photo)
    code = visualize.main(["--model-path", tiny_hf, "--image", str(photo), "--question", Q, "--compare",
                           "star,fastv,none", "--budget", "58", "--device", "cpu", "--max-new-tokens", "2",
                           "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    ref = engine_record(tiny_hf, images["chelsea"], "fastv")
    assert f"fastv@58: stage 1 kept 576, final kept 58, t_eq {ref.t_eq:.1f}" in printed
    assert "star@58: stage 1 kept 504, final kept 58, t_eq 281.0" in printed
    assert "none: no pruning, 576 visual tokens" in printed
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 800 and png.size[1] > 800


@pytest.mark.parametrize("argv, message", [
    (["--host", "llava"], "--host llava: --model-path {path} is a llava-hf checkpoint"),
    (["--conv-mode", "vicuna_v1"], "--conv-mode is for --host llava"),
    (["--fixed-grid", "672"], "--fixed-grid is for LLaVA-NeXT checkpoints"),  # a LLaVA-1.5 checkpoint
])
def test_visualize_errors_name_the_flag(tiny_hf, tmp_path, argv, message):
    with pytest.raises(SystemExit) as err:
        visualize.main(["--model-path", tiny_hf, "--out", str(tmp_path / "f.png")] + argv)
    text = str(err.value)
    assert text.startswith("error: ") and "\n" not in text and message.format(path=tiny_hf) in text


@pytest.fixture(scope="module")
def bench_rows(tiny_hf, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_hf")
    code = bench.main(["--model-path", tiny_hf, "--device", "cpu", "--methods", "star,fastv", "--budgets", "58",
                       "--repeats", "1", "--warmup", "0", "--new-tokens", "2", "--scoring-repeats", "1",
                       "--ab-pairs", "1", "--out-dir", str(out), "--quiet"])
    assert code == 0
    with open(out / "bench.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    return rows, json.loads((out / "bench.json").read_text())["meta"]


def test_bench_hf_rows_match_the_engine_record(bench_rows, tiny_hf, images):
    rows, meta = bench_rows
    assert list(rows) == ["stock", "none", "star@58", "fastv@58"]
    assert meta["host"] == "hf" and meta["engine_overhead_ab"]["pairs"] == 1
    for label, method in (("star@58", "star"), ("fastv@58", "fastv")):
        ref = engine_record(tiny_hf, images["coffee"], method)
        assert rows[label]["tokens_per_layer"] == " ".join(map(str, ref.tokens_per_layer)), label
        assert rows[label]["remaining"] == "58" and float(rows[label]["t_eq"]) == round(ref.t_eq, 2)
        assert float(rows[label]["scoring_pct"]) > 0
    assert rows["stock"]["tokens_per_layer"] == rows["none"]["tokens_per_layer"] == " ".join(["576"] * 8)
    # KV bytes: (65 text + the visual tokens each layer kept) x K and V x 128 wide x fp32
    for r in rows.values():
        per_layer = [int(x) for x in r["tokens_per_layer"].split()]
        assert int(r["kv_cache_bytes"]) == sum(65 + v for v in per_layer) * 2 * 128 * 4, r["label"]
        assert float(r["prefill_ms"]) > 0 and float(r["e2e_ms"]) >= float(r["prefill_ms"])


def test_bench_hf_random_weights_and_errors(tiny_hf, tmp_path):
    code = bench.main(["--host", "hf", "--geometry", "tiny", "--random-weights", "--device", "cpu", "--methods",
                       "star", "--budgets", "29", "--repeats", "1", "--warmup", "0", "--new-tokens", "1",
                       "--no-scoring", "--ab-pairs", "0", "--out-dir", str(tmp_path), "--quiet"])
    assert code == 0
    with open(tmp_path / "bench.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert rows["star@29"]["tokens_per_layer"] == " ".join(["504"] * 4 + ["29"] * 4)
    meta = json.loads((tmp_path / "bench.json").read_text())["meta"]
    assert meta["host"] == "hf" and "LlavaForConditionalGeneration" in meta["model"]
    with pytest.raises(SystemExit, match=r"^error: --host llava: --model-path .* is a llava-hf checkpoint"):
        bench.main(["--host", "llava", "--model-path", tiny_hf, "--device", "cpu", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^error: --fixed-grid and --budget-unit are for LLaVA-NeXT checkpoints"):
        bench.main(["--model-path", tiny_hf, "--budget-unit", "crop", "--device", "cpu", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^error: --geometry llava-next-7b: .*theory-only"):
        bench.main(["--host", "hf", "--geometry", "llava-next-7b", "--device", "cpu", "--out-dir", str(tmp_path)])


def test_flops_reads_the_llava_hf_config(tiny_hf, capsys):
    """tiny_hf is llava_star.tiny's geometry with one more vocabulary id (the <image> token)."""
    flops.main(["--model-path", tiny_hf, "--method", "star", "--budget", "58", "--json"])
    flops.main(["--geometry", "tiny", "--method", "star", "--budget", "58", "--json"])
    hf, tiny = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    for key in ("tokens_per_layer", "t_eq", "decoder_flops", "vision_flops", "projector_flops", "scoring_flops"):
        assert hf[key] == tiny[key], key
    assert hf["lm_head_flops"] == tiny["lm_head_flops"] * 801 // 800


# --------------------------------------------------------------------------- LLaVA-NeXT
def next_records(path, image, methods, fixed_grid=None):
    """(records, placeholders) of independent engine runs on a NeXT checkpoint, one per method
    name at budget 58: its processor expands <image> into the packed layout's placeholders
    (LLaVA-1.5's prompt, one generated token)."""
    import llava_star.hf

    proc, model = llava_star.hf.load_pretrained(path, device="cpu", fixed_grid=fixed_grid)
    batch = proc(images=image, text=prompt(Q), return_tensors="pt")
    records = []
    for name in methods:
        llava_star.hf.apply(model, MethodConfig.from_name(name, 58))
        greedy(model, batch, n=1)
        records.append(model.star_record[0])
    return records, int((batch["input_ids"] == model.config.image_token_id).sum())


def test_visualize_next_draws_base_and_crops_with_the_engine_counts(tiny_hf_next, images, tmp_path, capsys):
    """The hf host's NeXT figure: the processor's base image and grid crops tiled back (row-major
    over the best resolution), transformers' unpad padding drawn as padding, counts as an
    independent run's."""
    from PIL import Image

    from llava_star.hf import load_pretrained
    from llava_star.visualize import PADDING, _state, stages

    photo, out = tmp_path / "coffee.png", tmp_path / "next.png"
    images["coffee"].save(photo)  # 600x400: base + 2x2 crops of 672x672, unpad removes the top and bottom bars
    assert visualize.main(["--model-path", tiny_hf_next, "--image", str(photo), "--question", Q, "--method",
                           "star", "--budget", "58", "--device", "cpu", "--max-new-tokens", "1",
                           "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (ref,), placeholders = next_records(tiny_hf_next, images["coffee"], ["star"])
    alive = ref.num_patches  # patch rows after unpad (the placeholders less the newline rows)
    assert alive == 576 + 32 * 48 and placeholders == alive + 32
    assert (f"star@58: stage 1 kept {ref.stage1_kept.numel()}, final kept 58, t_eq {ref.t_eq:.1f}"
            in printed)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 1200

    proc, model = load_pretrained(tiny_hf_next, star=MethodConfig.from_name("star", 58), device="cpu")
    canvas = visualize_hf.canvas_for(model, proc, images["coffee"])
    assert canvas.total == 5 * 576 and canvas.alive.size == alive
    pixels = proc.image_processor(images=images["coffee"], return_tensors="np")["pixel_values"][0]
    base, mosaic = canvas.tiles
    assert np.array_equal(base.image, visualize.denormalised(pixels[0], proc.image_processor))
    assert mosaic.image.shape == (672, 672, 3)
    for crop, (r, c) in ((1, (0, 0)), (2, (0, 1)), (3, (1, 0)), (4, (1, 1))):  # row-major
        view = mosaic.image[r * 336:(r + 1) * 336, c * 336:(c + 1) * 336]
        assert np.array_equal(view, visualize.denormalised(pixels[crop], proc.image_processor)), crop
        assert mosaic.cells[r * 24, c * 24] == crop * 576
    # the black bars the processor padded the 672x448 picture with are the cells unpad removed
    state = _state(stages(model.star_plan, ref, canvas)[-1], canvas)
    padding = np.isin(mosaic.cells, np.nonzero(state == PADDING)[0])
    assert padding[:8].all() and padding[40:].all() and not padding[8:40].any()
    assert mosaic.image[:100].max() < 5 < mosaic.image[150:520].max()


def test_bench_next_rows_match_the_engine_record(tiny_hf_next, tmp_path):
    """bench --host hf on a NeXT checkpoint: the --image-size noise image through the processor,
    one placeholder per packed row; --fixed-grid 336 makes it base + one crop, of whose 24 rows
    unpad keeps 4 (a 6:1 image): 576 + 4 x 24 patches + 4 newlines = 676 visual tokens."""
    from llava_star.timing import noise_image

    code = bench.main(["--model-path", tiny_hf_next, "--device", "cpu", "--methods", "star,fastv", "--budgets",
                       "58", "--fixed-grid", "336", "--image-size", "672x112", "--repeats", "1", "--warmup", "0",
                       "--new-tokens", "1", "--no-scoring", "--ab-pairs", "0", "--out-dir", str(tmp_path),
                       "--quiet"])
    assert code == 0
    with open(tmp_path / "bench.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["stock", "none", "star@58", "fastv@58"]
    assert rows["stock"]["tokens_per_layer"] == rows["none"]["tokens_per_layer"] == " ".join(["676"] * 8)
    refs, placeholders = next_records(tiny_hf_next, noise_image("672x112", 0), ["star", "fastv"], fixed_grid=336)
    assert placeholders == 676
    for method, ref in zip(("star", "fastv"), refs):
        row = rows[f"{method}@58"]
        assert row["remaining"] == str(58 + 4)
        assert row["tokens_per_layer"] == " ".join(map(str, ref.tokens_per_layer))
        assert float(row["t_eq"]) == round(ref.t_eq, 2)
        assert 0 < float(row["flops_ratio"]) < 1
    for r in rows.values():  # KV bytes: (65 text + each layer's visual tokens) x K and V x 128 wide x fp32
        assert int(r["kv_cache_bytes"]) == sum(65 + int(v) for v in r["tokens_per_layer"].split()) * 2 * 128 * 4
    with pytest.raises(SystemExit, match=r"^error: --methods visionzip: visionzip needs one crop per image"):
        bench.main(["--model-path", tiny_hf_next, "--device", "cpu", "--methods", "visionzip", "--budgets", "58",
                    "--image-size", "336x336", "--out-dir", str(tmp_path), "--quiet"])
    with pytest.raises(SystemExit, match=r"^error: .*--fixed-grid must be a positive multiple of the crop size 336"):
        bench.main(["--model-path", tiny_hf_next, "--device", "cpu", "--fixed-grid", "500", "--out-dir",
                    str(tmp_path)])
