"""llava_star.visualize: the pure drawing helpers, the stage panels from a record, and the
figures (single run, side-by-side, LLaVA-NeXT) on the tiny checkpoints."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from llava_star import visualize as V  # noqa: E402
from llava_star.visualize import (ABSENT, DPI, DROPPED, EARLIER, GONE, KEPT, PADDING,  # noqa: E402
                                  main, model_view, overlay, paint, render, scores_to_grid)


def test_overlay_uint8_exact():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(48, 72, 3), dtype=np.uint8)  # 24x24 grid of 2x3 cells
    kept = [0, 5, 24, 300, 575]
    out = overlay(img, kept, grid=24, dim=0.7)
    assert out.shape == img.shape and out.dtype == np.uint8
    m = np.zeros(576, dtype=bool)
    m[kept] = True
    mask = np.kron(m.reshape(24, 24), np.ones((2, 3), dtype=bool))
    assert np.array_equal(out[mask], img[mask])
    expected = np.round(img.astype(np.float64) * (1 - 0.7)).astype(np.uint8)  # documented formula
    assert np.array_equal(out[~mask], expected[~mask])
    assert np.array_equal(out[0:2, 15:18], img[0:2, 15:18])  # cell 5 kept, cell 6 next to it dropped
    assert np.array_equal(out[0:2, 18:21], expected[0:2, 18:21])
    assert img.sum() > 0 and not np.shares_memory(out, img)


def test_overlay_float_and_edges():
    img = np.full((10, 10), 0.5)
    out = overlay(img, [0, 3], grid=4, dim=0.25)  # cell edges at 0, 2 (2.5 rounds to even), 5, 8, 10
    assert out[0, 0] == 0.5 and out[0, 9] == 0.5
    assert out[0, 2] == pytest.approx(0.375) and out[9, 9] == pytest.approx(0.375)
    assert np.array_equal(overlay(img, np.arange(16), grid=4), img)
    assert np.allclose(overlay(img, [], grid=4, dim=1.0), 0.0)
    with pytest.raises(ValueError, match="0..15"):
        overlay(img, [16], grid=4)
    with pytest.raises(ValueError, match="dim"):
        overlay(img, [0], grid=4, dim=1.5)


def test_scores_to_grid():
    g = scores_to_grid(torch.tensor([1.0, 2.0, float("inf")]), torch.tensor([3, 10, 575]))
    assert g.shape == (24, 24) and g[0, 3] == 1.0 and g[0, 10] == 2.0
    assert np.isnan(g[23, 23]) and np.isnan(g).sum() == 576 - 2
    with pytest.raises(ValueError):
        scores_to_grid([1.0], [1, 2])


def test_paint_blends_scores_and_marks_each_state():
    """The documented formula per cell state, on a 2x2 grid of 3x3-pixel cells."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    cells = np.array([[10, 11], [12, 13]])  # global ids of a tile's grid positions
    state = np.full(14, GONE)
    state[[10, 11, 12, 13]] = [KEPT, DROPPED, GONE, PADDING]
    colours = np.full((14, 3), np.nan)
    colours[10], colours[11] = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    out = paint(img, cells, state, colours, alpha=0.4, dim=0.7).astype(float) / 255
    f = img.astype(float) / 255
    np.testing.assert_allclose(out[:3, :3], 0.6 * f[:3, :3] + 0.4 * np.array([1.0, 0, 0]), atol=0.5 / 255)
    np.testing.assert_allclose(out[:3, 3:], (0.6 * f[:3, 3:] + 0.4 * np.array([0, 0, 1.0])) * 0.3, atol=0.5 / 255)
    grey = f[3:, :3] @ np.array([0.299, 0.587, 0.114]) * EARLIER
    np.testing.assert_allclose(out[3:, :3], np.repeat(grey[..., None], 3, -1), atol=0.5 / 255)
    np.testing.assert_allclose(out[3:, 3:], ABSENT, atol=0.5 / 255)
    # no colour: kept cells are the image itself
    plain = paint(img, cells, state, None)
    assert np.array_equal(plain[:3, :3], img[:3, :3])


def _record(**kw):
    from llava_star import PruneRecord

    base = dict(num_patches=16, stage1_kept=torch.arange(16), final_kept=torch.arange(16),
                tokens_per_layer=[16] * 4, image_span=(5, 16))
    return PruneRecord(**{**base, **kw})


def _canvas(total=16):
    img = np.zeros((8, 8, 3), np.uint8)
    return V.Canvas([V.Tile(img, np.arange(total).reshape(4, 4), (0, 8, 8, 0))], np.arange(total), total)


def test_stages_follow_the_plan_and_the_record():
    from llava_star import DecoderStage, Plan, VisionStage

    plan = Plan("x", VisionStage("attention_received", 12),
                (DecoderStage(2, "text_mean", 6), DecoderStage(3, "last_token", 3, ranks="own")))
    s1 = torch.arange(16, dtype=torch.float)
    k1 = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 12, 15])
    d0, d1 = torch.tensor([1, 3, 5, 8, 9, 15]), torch.tensor([3, 9, 15])
    rec = _record(stage1_kept=k1, final_kept=d1, stage1_scores=s1, decoder_kept=[d0, d1],
                  stage2_scores=[torch.rand(12), torch.rand(6)], merged=[0, 0, 0])
    panels = V.stages(plan, rec, _canvas())
    assert [p.column for p in panels] == ["vision", "decoder 0", "decoder 1"]
    vis, dec0, dec1 = panels
    assert np.array_equal(vis.candidates, np.arange(16)) and np.array_equal(vis.kept, k1.numpy())
    assert np.array_equal(dec0.candidates, k1.numpy()) and np.array_equal(dec0.kept, d0.numpy())
    assert np.array_equal(dec1.candidates, d0.numpy()) and np.array_equal(dec1.kept, d1.numpy())
    assert "CLIP layer -2" in vis.score_label
    assert dec0.score_label.endswith("layer 1") and "text after the image" in dec0.score_label  # ranks with K-1
    assert dec1.score_label.endswith("layer 3")  # ranks="own": layer K itself
    assert "from layer 2" in dec0.title and "from layer 3" in dec1.title
    # a decoder-only plan has no vision panel; a random stage no scores
    fastv = Plan("fastv", None, (DecoderStage(2, "random", 4),))
    (only,) = V.stages(fastv, _record(decoder_kept=[d1], stage2_scores=[torch.zeros(16)]), _canvas())
    assert only.column == "decoder 0" and only.scores is None and only.score_label is None
    assert V.stages(None, None, _canvas()) == []
    with pytest.raises(ValueError, match="decoder stage 1: 5 scores for 12"):
        V.stages(plan, _record(stage1_kept=k1, stage1_scores=s1, decoder_kept=[d0, d1],
                               stage2_scores=[torch.rand(5), torch.rand(6)]), _canvas())


def test_model_view_matches_process_images(tiny15, images):
    """The drawn image is the padded square the processor normalised, pixel for pixel."""
    from llava.mm_utils import process_images
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor.from_pretrained(f"{tiny15}/vision_tower")
    cfg = SimpleNamespace(image_aspect_ratio="pad")
    for name in ("chelsea", "rocket"):  # wide and tall
        view = model_view(images[name], proc, cfg)
        assert view.shape == (336, 336, 3) and view.dtype == np.uint8
        px = process_images([images[name]], proc, cfg)[0].numpy()
        seen = (px * np.array(proc.image_std)[:, None, None] + np.array(proc.image_mean)[:, None, None]) * 255
        assert np.abs(seen.transpose(1, 2, 0) - view).max() < 0.51
    assert tuple(model_view(images["chelsea"], proc, cfg)[0, 0]) == tuple(int(x * 255) for x in proc.image_mean)


def _axes(fig):
    """Every axes by label, the colour bars (inset axes of their panel) included."""
    return {a.get_label(): a for ax in fig.axes for a in [ax] + list(ax.child_axes)}


def _texts(fig):
    out = [t.get_text() for t in fig.texts] + [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in _axes(fig).values():
        out += [ax.get_title(), ax.get_xlabel()] + [t.get_text() for t in ax.texts]
    return " ".join(out)


@pytest.fixture(scope="module")
def compare15(tiny15, images):
    from conftest import load_star
    from llava_star import MethodConfig

    tok, model, proc = load_star(tiny15, MethodConfig.from_name("star", budget=58))
    methods = [MethodConfig.from_name(n, b) for n, b in
               (("none", None), ("star", 58), ("fastv", 58), ("pdrop", 58), ("random", 58))]
    fig = V.compare(model, tok, proc, images["chelsea"], "What animal is this?", methods, max_new_tokens=3,
                    note=V.tiny_note(tiny15))
    return fig, model, V.canvas_for(model, tok, proc, images["chelsea"])


def test_compare_rows_are_methods_columns_are_stages(compare15):
    fig, model, canvas = compare15
    runs = fig.llava_star_runs
    assert [r.label for r in runs] == ["none", "star@58", "fastv@58", "pdrop@58", "random@58"]
    ax = _axes(fig)
    assert {f"info{r}" for r in range(5)} <= set(ax)
    panels = {k for k in ax if "_run" in k and not k.startswith("colorbar")}
    assert panels == {"input_run0", "vision_run1", "decoder 0_run1", "decoder 0_run2",
                      "decoder 0_run3", "decoder 1_run3", "decoder 2_run3", "vision_run4"}
    # one column per stage: every decoder-stage-1 panel sits in one column, right of the vision column
    x = {k: ax[k].get_position().x0 for k in panels}
    assert x["decoder 0_run1"] == pytest.approx(x["decoder 0_run2"]) == pytest.approx(x["decoder 0_run3"])
    assert x["vision_run1"] == pytest.approx(x["vision_run4"])
    assert x["vision_run1"] < x["decoder 0_run1"] < x["decoder 1_run3"]
    y = {k: ax[k].get_position().y0 for k in panels}
    assert y["vision_run1"] == pytest.approx(y["decoder 0_run1"])
    assert y["vision_run1"] > y["decoder 0_run2"] > y["decoder 0_run3"]
    assert model.star_plan.name == "star"  # compare gives the model its own plan back
    assert "input" not in ax  # the stock row shows the plain input already
    assert "answers are gibberish" in _texts(fig)


def test_compare_titles_colour_bars_and_pixels(compare15):
    """Every scored stage has a labelled colour bar; titles give stage, layer and the record's
    kept count; each panel's pixels are `paint` of the record's sets; the random control has
    no colour bar; kept cells are brighter than dropped ones."""
    fig, model, canvas = compare15
    ax = _axes(fig)
    runs = fig.llava_star_runs
    for r, run in enumerate(runs[1:], start=1):
        for p in V.stages(run.plan, run.record, canvas):
            panel = ax[f"{p.column}_run{r}"]
            assert f"kept {p.kept.size} / {p.candidates.size}" in panel.get_title()
            assert ("CLIP layer -2" if p.column == "vision" else "from layer") in panel.get_title()
            cbar = ax[f"colorbar_{p.column}_run{r}"]
            if run.label.startswith("random"):
                assert cbar.get_xlabel() == "" and "no scores" in " ".join(t.get_text() for t in cbar.texts)
                continue
            label = cbar.get_xlabel().replace("\n", " ")
            assert ("CLIP layer -2" if p.column == "vision" else "layer ") in label and "attention" in label
            rgb, _, _ = V._colours(p, canvas, __import__("matplotlib").colormaps[V.CMAP])
            want = paint(canvas.tiles[0].image, canvas.tiles[0].cells, V._state(p, canvas), rgb)
            shown = np.asarray(panel.get_images()[0].get_array())
            assert np.array_equal(shown, want)
        final = run.record.final_kept.numpy()
        assert V.stages(run.plan, run.record, canvas)[-1].kept.tolist() == final.tolist()
    star = runs[1].record
    assert star.stage1_kept.numel() == 504 and star.final_kept.numel() == 58
    dec = np.asarray(ax["decoder 0_run1"].get_images()[0].get_array()).astype(float)
    view = canvas.tiles[0].image.astype(float)
    cell = lambda a, i: a[i // 24 * 14:(i // 24 + 1) * 14, i % 24 * 14:(i % 24 + 1) * 14].mean()  # noqa: E731
    bright = [cell(dec, i) / max(cell(view, i), 1) for i in star.final_kept.tolist() if cell(view, i) > 60]
    dark = [cell(dec, i) / max(cell(view, i), 1) for i in sorted(set(range(576)) - set(star.final_kept.tolist()))
            if cell(view, i) > 60]
    assert min(bright) > 0.45 and max(dark) < 0.4


def test_saved_png_shows_the_painted_panel(compare15, tmp_path):
    """In the saved PNG, the final STAR panel's cell centres carry the painted colours."""
    from PIL import Image

    fig, _, canvas = compare15
    path = tmp_path / "cmp.png"
    fig.savefig(path, dpi=DPI)
    with Image.open(path) as im:
        png = np.asarray(im.convert("RGB")).astype(float)
        assert im.size == (round(fig.get_figwidth() * DPI), round(fig.get_figheight() * DPI))
    fig.canvas.draw()
    panel = _axes(fig)["decoder 0_run1"]
    want = np.asarray(panel.get_images()[0].get_array()).astype(float)
    bb = panel.get_window_extent()
    errs = []
    for i in range(0, 576, 7):
        r, c = divmod(i, 24)
        x, y = int(bb.x0 + (c + 0.5) / 24 * bb.width), int(png.shape[0] - (bb.y1 - (r + 0.5) / 24 * bb.height))
        errs.append(np.abs(png[y - 1:y + 2, x - 1:x + 2].mean((0, 1)) - want[r * 14 + 5:r * 14 + 9,
                                                                              c * 14 + 5:c * 14 + 9].mean((0, 1))).max())
    assert np.median(errs) < 12 and len(errs) > 80


def test_render_single_run_keeps_answer_and_record(tiny15, images):
    from conftest import load_star
    from llava_star import MethodConfig

    tok, model, proc = load_star(tiny15, MethodConfig.from_name("fastervlm", budget=29))
    fig = render(model, tok, proc, images["coffee"], "What is this?", max_new_tokens=2)
    rec = fig.llava_star_record
    assert rec.final_kept.numel() == 29 and isinstance(fig.llava_star_answer, str)
    ax = _axes(fig)
    assert {"legend", "input", "info0", "vision_run0", "colorbar_vision_run0"} <= set(ax)
    assert not any(k.startswith("decoder") for k in ax)
    assert "CLS attention" in ax["colorbar_vision_run0"].get_xlabel()
    assert "kept 29 / 576" in ax["vision_run0"].get_title()
    assert "final kept: 29 / 576" in _texts(fig) and f"t_eq: {rec.t_eq:.1f}" in _texts(fig)


def test_next_draws_base_and_crops_and_only_the_stages_a_method_has(tiny_dir, images):
    """LLaVA-NeXT: each panel holds the base image and the grid crops tiled back; FastV and
    PDrop (no vision stage) get no vision panel and no 'not scored' panel anywhere; llava's
    unpad padding is drawn as padding, and the kept cells are the record's."""
    from conftest import load_star
    from llava_star import MethodConfig

    path = tiny_dir("llava-next")
    tok, model, proc = load_star(path, MethodConfig.from_name("star", budget=200))
    methods = [MethodConfig.from_name(n, 200) for n in ("star", "fastv", "pdrop")]
    image = images["chelsea"]  # 451x300: 2x1 crops with unpad padding
    fig = V.compare(model, tok, proc, image, "What is this?", methods, max_new_tokens=2)
    canvas = V.canvas_for(model, tok, proc, image)
    ax = _axes(fig)
    assert "not scored" not in _texts(fig)
    panels = sorted(k for k in ax if "_run" in k and not k.startswith("colorbar"))
    assert panels == ["decoder 0_run0", "decoder 0_run1", "decoder 0_run2", "decoder 1_run2",
                      "decoder 2_run2", "vision_run0"]
    total = canvas.total
    assert total == 3 * 576 and 0 < canvas.alive.size < total  # base + 2 crops; unpad removed some
    runs = fig.llava_star_runs
    assert runs[0].record.num_patches == canvas.alive.size
    for r, run in enumerate(runs):
        last = V.stages(run.plan, run.record, canvas)[-1]
        images_drawn = ax[f"{last.column}_run{r}"].get_images()
        assert len(images_drawn) == 2  # base, then the tiled crops
        state = V._state(last, canvas)
        assert (state == KEPT).sum() == run.record.final_kept.numel() == 200
        assert set(np.nonzero(state == PADDING)[0]) == set(range(total)) - set(canvas.alive.tolist())
        mosaic = np.asarray(images_drawn[1].get_array()).astype(float)
        tile = canvas.tiles[1]
        pad_cells = np.argwhere(np.isin(tile.cells, np.nonzero(state == PADDING)[0]))
        assert pad_cells.size
        r0, c0 = pad_cells[0]
        assert mosaic[r0 * 14:(r0 + 1) * 14, c0 * 14:(c0 + 1) * 14].mean() == pytest.approx(ABSENT * 255, abs=1)
    # the tiles are llava's crops: the mosaic's top-left crop is crop 1 as process_images made it
    views = V.crop_views(image, proc, model.config)
    assert np.array_equal(canvas.tiles[1].image[:336, :336], views[1])
    assert np.array_equal(canvas.tiles[0].image, views[0])


def test_cli_errors_name_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--compare" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--image .*no such file"):
        main(["--image", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "a.png")])
    from skimage import data
    from PIL import Image
    Image.fromarray(data.coffee()).save(tmp_path / "c.png")
    with pytest.raises(SystemExit, match="--model-path .*no such directory"):
        main(["--model-path", str(tmp_path / "nope"), "--image", str(tmp_path / "c.png"),
              "--out", str(tmp_path / "a.png")])
    with pytest.raises(SystemExit, match="--out .*is a directory"):
        main(["--model-path", str(tmp_path / "nope"), "--out", str(tmp_path)])
    for name in ("fig", "fig.xyz"):
        with pytest.raises(SystemExit, match="--out .*unknown image format"):
            main(["--model-path", str(tmp_path / "nope"), "--out", str(tmp_path / name)])
    for argv, msg in ((["--compare", "star,fastw"], "--compare: unknown method 'fastw'"),
                      (["--compare", "star@x"], "--compare star@x: the budget after @ must be an integer"),
                      (["--compare", "sparsevlm@58"], "--compare sparsevlm@58: sparsevlm has published"),
                      (["--compare", ","], "--compare needs at least one method"),
                      (["--compare", "star", "--method", "fastv"], "--compare takes the methods itself"),
                      (["--compare", "star", "--fastv-k", "3"], "--compare takes the methods itself")):
        with pytest.raises(SystemExit, match=msg):
            main(argv + ["--out", str(tmp_path / "a.png")])


def test_cli_compare_writes_png(tiny15, images, tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "chelsea.png"
    images["chelsea"].save(img)
    out = tmp_path / "fig.png"
    assert main(["--model-path", tiny15, "--image", str(img), "--question", "What animal is this?",
                 "--compare", "star,fastv@29,none", "--budget", "58", "--max-new-tokens", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "star@58: stage 1 kept 504, final kept 58" in printed
    assert "fastv@29: stage 1 kept 576, final kept 29" in printed and "none: no pruning, 576" in printed
    assert "note: random-weight tiny checkpoint" in printed and f"wrote {out}" in printed
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[1] > 3 * png.size[0] // 4  # three rows
