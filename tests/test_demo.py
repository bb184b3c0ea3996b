"""The README's first command: `python -m llava_star.demo`, on the tiny checkpoints."""
import pytest

from llava_star import demo


@pytest.mark.parametrize("variant,method", [("llava-v1.5", ["--budget", "58"]),
                                            ("llava-next", ["--method", "fastv", "--budget", "700"])])
def test_demo_prints_baseline_and_pruned_runs(tiny_dir, tmp_path, capsys, variant, method):
    from conftest import photos

    image = tmp_path / "chelsea.png"
    photos()["chelsea"].save(image)
    assert demo.main(["--model-path", tiny_dir(variant), "--image", str(image), "--device", "cpu",
                      "--max_new_tokens", "3", *method]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    base = lines["baseline"].split()
    pruned = next(v for k, v in lines.items() if k.endswith(("@58", "@700"))).split()
    patches = int(base[3])
    if variant == "llava-v1.5":
        assert patches == 576 and pruned[1:5] == ["576", "504", "->", "58"]  # STAR: 504 after CLIP, 58 at K
    else:  # NeXT: base + grid crops (after llava's unpad); a whole-image budget above one crop's 576
        assert patches > 700 and pruned[1:5] == [str(patches), str(patches), "->", "700"]
    assert "visual tokens per decoder layer" in out


def test_demo_refuses_method_none(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--method", "none"])
    assert "--method none" in capsys.readouterr().err
