"""The README's first command: `python -m llava_star.demo`, on the tiny checkpoints (the
fast `--help` of every tool is tests/test_eval_help.py)."""
import numpy as np
import pytest

from llava_star import demo


@pytest.mark.parametrize("variant,method", [("llava-v1.5", ["--budget", "58"]),
                                            ("llava-next", ["--method", "fastv", "--budget", "700"])])
def test_demo_prints_baseline_and_pruned_runs_and_writes_the_picture(tiny_dir, tmp_path, capsys, variant, method):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from conftest import photos

    image = tmp_path / "chelsea.png"
    photos()["chelsea"].save(image)
    fig = tmp_path / "kept.png"
    assert demo.main(["--model-path", tiny_dir(variant), "--image", str(image), "--device", "cpu",
                      "--max_new_tokens", "3", "--figure", str(fig), *method]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    base = lines["baseline"].split()
    pruned = next(v for k, v in lines.items() if k.endswith(("@58", "@700"))).split()
    patches = int(base[3])
    if variant == "llava-v1.5":
        assert patches == 576 and pruned[1:5] == ["576", "504", "->", "58"]  # STAR: 504 after CLIP, 58 at K
        assert base[7] == "576.0"
    else:  # NeXT: base + grid crops (after llava's unpad); a whole-image budget above one crop's 576
        assert patches > 700 and pruned[1:5] == [str(patches), str(patches), "->", "700"]
        assert float(base[7]) > patches  # t_eq counts the image_newline rows every layer sees
    assert "visual tokens per decoder layer" in out
    assert "note: random-weight tiny checkpoint: answers are gibberish" in out
    assert f"picture of what each run kept: {fig}" in out
    with Image.open(fig) as png:
        assert png.format == "PNG"
        pixels = np.asarray(png.convert("L"))
    assert pixels.std() > 20  # a picture, not a blank page


def test_demo_figure_rows_are_the_two_runs(tiny15, images):
    """What the demo draws: a stock row (the plain input) and the method's row of stages."""
    pytest.importorskip("matplotlib")
    from conftest import load_star
    from llava_star import MethodConfig
    from llava_star import visualize as V

    tok, model, proc = load_star(tiny15, MethodConfig.from_name("star", budget=58))
    answer, _, rec = demo.run(model, tok, proc, images["coffee"], "What is this?", "vicuna_v1", 2, repeats=1)
    runs = [V.Run("baseline", None, None, "x", 576), V.Run("star@58", model.star_plan, rec[0], answer)]
    fig = V.figure(V.canvas_for(model, tok, proc, images["coffee"]), runs, "What is this?")
    labels = {ax.get_label() for ax in fig.axes}
    assert {"input_run0", "vision_run1", "decoder 0_run1"} <= labels and "input" not in labels


def test_demo_refuses_method_none(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--method", "none"])
    assert "--method none" in capsys.readouterr().err


def test_demo_checks_the_figure_path_before_running(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit, match="--figure .*is a directory"):
        demo.main(["--figure", str(tmp_path), "--model-path", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="--figure .*unknown image format"):
        demo.main(["--figure", str(tmp_path / "x.nope"), "--model-path", str(tmp_path / "nope")])
