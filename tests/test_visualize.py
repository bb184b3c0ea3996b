"""llava_star.visualize: the pure overlay helper, and the figure on the tiny checkpoint."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from llava_star.visualize import DPI, FIGSIZE, main, model_view, overlay, render, scores_to_grid  # noqa: E402

SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height) of a saved figure


def _cell_mask(kept, grid, cell):
    m = np.zeros(grid * grid, dtype=bool)
    m[np.asarray(kept)] = True
    return np.kron(m.reshape(grid, grid), np.ones((cell, cell), dtype=bool))


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
    # cell (row 0, col 5) = index 5 is kept; index 6 right next to it is dropped
    assert np.array_equal(out[0:2, 15:18], img[0:2, 15:18])
    assert np.array_equal(out[0:2, 18:21], expected[0:2, 18:21])
    assert img.sum() > 0 and not np.shares_memory(out, img)


def test_overlay_float_and_edges():
    img = np.full((10, 10), 0.5)
    out = overlay(img, [0, 3], grid=4, dim=0.25)  # cell edges at 0, 2 (2.5 rounds to even), 5, 8, 10
    assert out[0, 0] == 0.5 and out[0, 9] == 0.5  # cells 0 (row 0, col 0) and 3 (row 0, col 3)
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
    # the padding is the processor's mean colour
    assert tuple(model_view(images["chelsea"], proc, cfg)[0, 0]) == tuple(int(x * 255) for x in proc.image_mean)


def test_render_next_one_column_per_crop(tiny_dir, images):
    """NeXT: per crop a stage-1 and a final panel, each keeping exactly the record's kept cells
    of its crop (undimmed) and dimming the rest, and the two score maps holding the record's
    scores in the right cells (blank where the decoder did not score)."""
    from llava_star import load_pretrained_model, StarConfig
    from llava_star.visualize import crop_views

    tok, model, proc, _ = load_pretrained_model(tiny_dir("llava-next"), None, None, device="cpu",
                                                star=StarConfig(layer=4, keep=200))
    image = images["chelsea"]
    fig = render(model, tok, proc, image, "What is this?", max_new_tokens=2)
    rec = fig.llava_star_record
    views = crop_views(image, proc, model.config)
    panels = {ax.get_label(): ax for ax in fig.axes}
    assert len(panels) == 4 * len(views)
    s1, s2 = rec.stage1_scores.numpy(), np.full(576 * len(views), np.nan)
    s2[rec.stage1_kept.numpy()] = rec.stage2_scores[0].numpy()  # STAR's stage 2 ranks stage 1's patches
    for c, view in enumerate(views):
        for row, kept in (("stage1", rec.stage1_kept), ("stage2", rec.stage2_kept)):
            cells = kept[(kept >= c * 576) & (kept < (c + 1) * 576)] - c * 576
            shown = panels[f"{row}_crop{c}"].get_images()[0].get_array()
            np.testing.assert_array_equal(np.asarray(shown), overlay(view, cells.numpy(), 24))
        for label, want in (("stage1_scores", s1), ("stage2_scores", s2)):
            shown = np.ma.filled(panels[f"{label}_crop{c}"].get_images()[0].get_array().astype(float), np.nan)
            np.testing.assert_allclose(shown.reshape(-1), want[c * 576:(c + 1) * 576], rtol=1e-6)
    assert int(sum(((rec.stage2_kept >= c * 576) & (rec.stage2_kept < (c + 1) * 576)).sum()
                   for c in range(len(views)))) == 200


def test_cli_errors_name_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--budget" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--image .*no such file"):
        main(["--image", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "a.png")])
    from skimage import data
    from PIL import Image
    Image.fromarray(data.coffee()).save(tmp_path / "c.png")
    with pytest.raises(SystemExit, match="--model-path .*no such directory"):
        main(["--model-path", str(tmp_path / "nope"), "--image", str(tmp_path / "c.png"),
              "--out", str(tmp_path / "a.png")])
    # --out is checked before any model runs: a directory, or a name matplotlib cannot write
    with pytest.raises(SystemExit, match="--out .*is a directory"):
        main(["--model-path", str(tmp_path / "nope"), "--out", str(tmp_path)])
    for name in ("fig", "fig.xyz"):
        with pytest.raises(SystemExit, match="--out .*unknown image format"):
            main(["--model-path", str(tmp_path / "nope"), "--out", str(tmp_path / name)])


def test_cli_writes_png(tiny15, images, tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "chelsea.png"
    images["chelsea"].save(img)
    out = tmp_path / "fig.png"
    assert main(["--model-path", tiny15, "--image", str(img), "--question", "What animal is this?",
                 "--method", "star", "--budget", "58", "--max-new-tokens", "4", "--device", "cpu",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stage 1 kept 504, final kept 58" in printed
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == SIZE


@pytest.fixture(scope="module")
def star_figure(tiny15, images):
    from conftest import load_star
    from llava_star import MethodConfig

    tok, model, proc = load_star(tiny15, MethodConfig.from_name("star", budget=58))
    fig = render(model, tok, proc, images["chelsea"], "What animal is this?", max_new_tokens=4)
    return fig, model_view(images["chelsea"], proc, model.config), fig.llava_star_record


def _panel(fig, label):
    (ax,) = [a for a in fig.axes if a.get_label() == label]
    return ax


def test_render_panels(star_figure):
    fig, view, rec = star_figure
    assert rec.stage1_kept.numel() == 504 and rec.stage2_kept.numel() == 58
    assert np.array_equal(_panel(fig, "image").get_images()[0].get_array(), view)
    for label, kept in (("stage1", rec.stage1_kept), ("stage2", rec.stage2_kept)):
        arr = np.asarray(_panel(fig, label).get_images()[0].get_array())
        mask = _cell_mask(kept.numpy(), 24, 14)
        assert np.array_equal(arr[mask], view[mask])
        dimmed = np.round(view.astype(np.float64) * (1 - 0.7)).astype(np.uint8)
        assert np.array_equal(arr[~mask], dimmed[~mask])
    s1 = np.ma.filled(_panel(fig, "stage1_scores").get_images()[0].get_array(), np.nan)
    assert np.allclose(s1.reshape(-1), rec.stage1_scores.numpy())
    s2 = np.ma.filled(_panel(fig, "stage2_scores").get_images()[0].get_array().astype(float), np.nan)
    scored = np.isfinite(s2.reshape(-1))
    assert np.array_equal(np.nonzero(scored)[0], rec.stage1_kept.numpy())  # STAR stage 2 scores stage 1's kept
    assert np.allclose(s2.reshape(-1)[scored], rec.stage2_scores[0].numpy())
    title = fig._suptitle.get_text()
    assert title.startswith("Q: What animal is this?\nA: ") and len(title) > len("Q: What animal is this?\nA: ")
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "stage 1 kept 504" in texts and "final kept 58" in texts and f"t_eq {rec.t_eq:.1f}" in texts


def test_saved_png_stage2_panel_pixels(star_figure, tmp_path):
    """In the saved PNG, kept cells of the final panel show the image, dropped cells ~30% of it."""
    from PIL import Image

    fig, view, rec = star_figure
    path = tmp_path / "fig.png"
    fig.savefig(path, dpi=DPI)
    with Image.open(path) as im:
        assert im.size == SIZE
        png = np.asarray(im.convert("RGB")).astype(np.float64)
    fig.canvas.draw()
    ax = _panel(fig, "stage2")
    bb = ax.get_window_extent()  # display pixels, origin bottom-left; the image fills the axes
    assert bb.width == pytest.approx(bb.height, abs=1.5) and bb.width > 200
    kept = set(rec.stage2_kept.tolist())
    ratios = {True: [], False: []}
    for cell in range(576):
        r, c = divmod(cell, 24)
        orig = view[r * 14 + 5:r * 14 + 9, c * 14 + 5:c * 14 + 9].astype(np.float64).mean()
        if orig < 60:  # too dark to tell dimmed from not
            continue
        x = bb.x0 + (c + 0.5) / 24 * bb.width
        y = SIZE[1] - (bb.y1 - (r + 0.5) / 24 * bb.height)
        xi, yi = int(x), int(y)
        seen = png[yi - 1:yi + 2, xi - 1:xi + 2].mean()
        ratios[cell in kept].append(seen / orig)
    assert len(ratios[True]) >= 20 and len(ratios[False]) >= 200
    kept_r, dropped_r = np.array(ratios[True]), np.array(ratios[False])
    assert np.median(kept_r) == pytest.approx(1.0, abs=0.08)
    assert np.median(dropped_r) == pytest.approx(0.3, abs=0.05)
    assert kept_r.min() > 0.85 and dropped_r.max() < 0.5  # measured: 0.97..1.06 and 0.21..0.39
