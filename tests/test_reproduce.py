"""The Table 1 driver: fills every cell once, reruns nothing finished, reruns a deleted cell."""
import csv
import json
import sys

import numpy as np
import pytest

from fixtures_eval import build_mme, build_pope, env_without_cuda


def _run(monkeypatch, capsys, argv):
    from llava_star import reproduce

    rc = reproduce.main(argv)
    return rc, capsys.readouterr().out


def test_driver_fills_table_and_resumes_cell_by_cell(tmp_path, tiny15, images, monkeypatch, capsys):
    eval_dir, out = tmp_path / "eval", tmp_path / "results"
    build_mme(eval_dir, images)
    build_pope(eval_dir, images)
    for k, v in env_without_cuda({"PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    argv = ["--model-path", tiny15, "--benchmarks", "mme,pope", "--methods", "star,fastv",
            "--budgets", "58,29", "--no-baseline", "--allow-missing", "--eval-dir", str(eval_dir), "--out-dir", str(out),
            "--", "--device", "cpu", "--max_new_tokens", "2"]
    rc, text = _run(monkeypatch, capsys, argv)
    assert rc == 0 and "8 cells, 8 run now" in text and "4 partial (marked, no score)" in text
    cells = json.loads((out / "cells.json").read_text())
    assert len(cells) == 8
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["tokens"]) for r in rows} == {("star", "58"), ("star", "29"), ("fastv", "58"), ("fastv", "29")}
    for c in cells:  # the table holds the measured numbers from each cell's scores file
        row = next(r for r in rows if r["method"] == c["method"] and r["tokens"] == str(c["budget"]))
        if c["bench"] == "mme":  # the fixture asks 4 of MME's 28 ground-truth questions: partial
            assert c["partial"] and c["score"] is None and (c["answered"], c["total"]) == (4, 28)
            assert row["MME"] == "" and row["MME (answered)"] == "4/28"
            continue
        measured = json.loads(open(c["scores_file"]).read().strip().splitlines()[-1])["mean_f1"]
        assert not c["partial"] and c["score"] == pytest.approx(measured)
        assert float(row["POPE"]) == pytest.approx(measured, abs=1e-4) and row["POPE (answered)"] == "4/4"
    md = (out / "table.md").read_text()
    assert md.count("| star |") == 2 and md.count("partial 4/28") == 4
    png = (out / "scores.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # t_eq: the mean of the runner's per-question records; TFLOPs: flops' theory on the
    # checkpoint's own geometry (read from its config.json)
    from llava_star import flops
    from llava_star.reproduce import geometry_for

    g, _ = geometry_for(tiny15)
    for c in cells:
        lines = [json.loads(l) for l in open(c["scores_file"].replace("_scores.json", ".jsonl"))]
        assert c["t_eq"] == pytest.approx(sum(l["metadata"]["t_eq"] for l in lines) / len(lines))
        want = flops.theory(g, flops.method_plan(c["method"], c["budget"], g), 64).total / 1e12
        assert c["tflops"] == pytest.approx(want)
    star58 = next(r for r in rows if (r["method"], r["tokens"]) == ("star", "58"))
    assert float(star58["t_eq"]) == pytest.approx(281.0) and float(star58["tflops"]) > 0  # 504 x4, 58 x4
    assert "| star | 58 | 281.0 |" in md

    stamps = {c["scores_file"]: open(c["scores_file"], "rb").read() for c in cells}
    rc, text = _run(monkeypatch, capsys, argv)
    assert "8 cells, 0 run now, 8 already finished" in text
    assert {p: open(p, "rb").read() for p in stamps} == stamps

    victim = next(c for c in cells if c["bench"] == "pope" and c["method"] == "fastv" and c["budget"] == 29)
    import os
    os.remove(victim["scores_file"])
    rc, text = _run(monkeypatch, capsys, argv)
    assert "8 cells, 1 run now, 7 already finished" in text
    assert os.path.exists(victim["scores_file"])


def test_driver_rejects_bad_flags(tmp_path, capsys):
    from llava_star import reproduce

    for argv, msg in ((["--model-path", "m", "--benchmarks", "mme,foo"], "unknown benchmark 'foo'"),
                      (["--model-path", "m", "--methods", "star,fastw"], "unknown pruning method 'fastw'"),
                      (["--model-path", "m", "--budgets", "58,x"], "--budgets must be integers"),
                      (["--model-path", "m", "--budgets", "58,0"], "--budgets must be positive"),
                      (["--model-path", "m", "--out-dir", str(tmp_path / "f" / "x")], "--out-dir ")):
        if "--out-dir" in argv:
            (tmp_path / "f").write_text("")  # a file where the folder should go
        with pytest.raises(SystemExit, match=msg):
            reproduce.main(argv)
    bad = tmp_path / "paper.json"
    for text in ("[1, 2]", '{"m": {"star": {"abc": {"mme": 1}}}}', '{"m": {"star": {"58": {"mme": "x"}}}}'):
        bad.write_text(text)
        with pytest.raises(SystemExit, match="--paper-numbers .*expected JSON"):
            reproduce.main(["--model-path", "m", "--paper-numbers", str(bad), "--out-dir", str(tmp_path / "o")])


def test_sparsevlm_without_a_published_schedule_is_announced(tmp_path, capsys):
    from llava_star import reproduce

    with pytest.raises(SystemExit):  # the cell then fails: there is no data in this eval dir
        reproduce.main(["--model-path", "m", "--benchmarks", "pope", "--methods", "sparsevlm",
                        "--budgets", "64,58", "--no-baseline", "--eval-dir", str(tmp_path / "none"),
                        "--out-dir", str(tmp_path / "o")])
    assert "no sparsevlm cells for budgets [58]" in capsys.readouterr().err


def test_cell_name_carries_the_runner_flags():
    from llava_star.reproduce import cell_name

    assert cell_name("/ckpt/llava-v1.5-7b/", "star", 58) == "llava-v1.5-7b_star-b58"
    crop = cell_name("llava-v1.5-7b", "star", 58, ["--budget-unit", "crop"])
    assert crop.startswith("llava-v1.5-7b_star-b58-x") and crop != cell_name("llava-v1.5-7b", "star", 58)
    assert crop == cell_name("llava-v1.5-7b", "star", 58, ["--budget-unit", "crop"])
    assert crop != cell_name("llava-v1.5-7b", "star", 58, ["--budget-unit", "image"])


def test_limit_cells_are_partial_and_named_apart(tmp_path, tiny15, images, monkeypatch, capsys):
    eval_dir, out = tmp_path / "eval", tmp_path / "results"
    build_pope(eval_dir, images)
    for k, v in env_without_cuda({"PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    argv = ["--model-path", tiny15, "--benchmarks", "pope", "--methods", "star", "--budgets", "58",
            "--no-baseline", "--limit", "2", "--eval-dir", str(eval_dir), "--out-dir", str(out),
            "--", "--device", "cpu", "--max_new_tokens", "2"]
    rc, text = _run(monkeypatch, capsys, argv)
    assert rc == 0 and "1 partial" in text
    limited = tmp_path / "results-limit2"
    assert not out.exists() and (limited / "table.md").exists()
    (cell,) = json.loads((limited / "cells.json").read_text())
    assert cell["ckpt"].endswith("-limit2") and cell["scores_file"].endswith("-limit2_scores.json")
    assert cell["partial"] and cell["score"] is None and (cell["answered"], cell["total"]) == (2, 4)
    assert "partial 2/4" in (limited / "table.md").read_text()


def _cells(partial_gqa=True):
    """Scored cells as `reproduce` collects them, with the x values set (no model needed)."""
    out = []
    for bench, base in (("mme", 1500.0), ("pope", 85.0), ("gqa", 60.0), ("vizwiz", None)):
        out.append(dict(bench=bench, method="none", budget=None, score=base, partial=False, answered=9, total=9,
                        tflops=9.0, t_eq=576.0, t_eq_plot=576.0))
        for method, slope in (("star", 1.0), ("fastv", 3.0), ("pdrop", 2.0)):
            for budget in (288, 58):
                partial = partial_gqa and bench == "gqa"
                score = None if base is None or partial else base - slope * 100 / budget
                out.append(dict(bench=bench, method=method, budget=budget, score=score, partial=partial,
                                answered=4 if partial else 9, total=9, tflops=budget / 50 + slope,
                                t_eq=budget * (1 + slope / 4), t_eq_plot=budget * (1 + slope / 4)))
    return out


def test_plot_is_score_against_tflops_and_t_eq_one_line_per_method(tmp_path):
    pytest.importorskip("matplotlib")
    from llava_star.reproduce import plot

    fig = plot(tmp_path / "s.png", _cells(), ["mme", "pope", "gqa", "vizwiz"], "llava-v1.5-7b")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    ax = {a.get_label(): a for a in fig.axes}
    assert set(ax) == {f"{row}_{b}" for row in ("tflops", "teq") for b in ("mme", "pope", "gqa", "vizwiz")}
    for b, metric in (("mme", "perception score"), ("pope", "F1")):
        assert "TFLOPs" in ax[f"tflops_{b}"].get_xlabel() and "t_eq" in ax[f"teq_{b}"].get_xlabel()
        assert metric in ax[f"tflops_{b}"].get_ylabel()
        for row, key in (("tflops", "tflops"), ("teq", "t_eq_plot")):  # x in TFLOPs (>= 0.1 here)
            lines = {l.get_label(): l for l in ax[f"{row}_{b}"].get_lines() if not l.get_label().startswith("_")}
            assert set(lines) == {"star", "fastv", "pdrop", "no pruning"}  # one line per method
            for m in ("star", "fastv", "pdrop"):
                want = sorted((c[key], c["score"]) for c in _cells() if c["bench"] == b and c["method"] == m)
                np.testing.assert_allclose(np.c_[lines[m].get_xdata(), lines[m].get_ydata()], np.array(want))
    assert ax["teq_mme"].get_xscale() == "log"
    tiny = plot(tmp_path / "t.png", [dict(c, tflops=c["tflops"] / 1e4) for c in _cells()], ["mme"])
    assert "GFLOPs" in {a.get_label(): a for a in tiny.axes}["tflops_mme"].get_xlabel()  # not "0.00 TFLOPs"
    # GQA: only the baseline has a score; the partial cells are left out and named under the axis
    gqa = ax["tflops_gqa"]
    assert [l.get_label() for l in gqa.get_lines() if not l.get_label().startswith("_")] == ["no pruning"]
    notes = " ".join(t.get_text() for t in gqa.texts)
    assert "not drawn (partial, no score)" in notes and "star@288 4/9" in notes
    # VizWiz has no local score: the panel says why instead of an empty axis
    assert "official server" in " ".join(t.get_text() for t in ax["tflops_vizwiz"].texts)
    assert not ax["tflops_vizwiz"].get_lines()
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"no pruning", "star", "fastv", "pdrop"}


def test_plot_says_why_a_panel_is_empty(tmp_path):
    pytest.importorskip("matplotlib")
    from llava_star.reproduce import plot

    cells = [c for c in _cells() if c["bench"] == "gqa" and c["method"] != "none"]  # all partial
    no_geometry = [dict(c, tflops=None) for c in _cells(partial_gqa=False) if c["bench"] == "pope"]
    fig = plot(tmp_path / "s.png", cells + no_geometry, ["gqa", "pope", "mme"])
    ax = {a.get_label(): a for a in fig.axes}
    text = lambda a: " ".join(t.get_text() for t in a.texts)  # noqa: E731
    assert "all 6 cells are partial" in text(ax["tflops_gqa"]) and not ax["tflops_gqa"].get_lines()
    assert "pass --geometry" in text(ax["tflops_pope"]) and ax["teq_pope"].get_lines()
    assert "no cells" in text(ax["tflops_mme"])


def test_table_has_t_eq_and_tflops_and_marks_partial_cells(tmp_path):
    pytest.importorskip("matplotlib")
    from llava_star.reproduce import write_outputs

    cells = [dict(c, t_eq_theory=c["t_eq"], scores_file="") for c in _cells()]
    cells[1]["t_eq"] = None  # star@288 on MME without answers metadata: the table falls back to theory
    write_outputs(tmp_path, "llava-v1.5-7b", cells, ["mme", "gqa"], {}, "llava-v1.5-7b", 64)
    md = (tmp_path / "table.md").read_text()
    assert "| Method | Tokens | t_eq | TFLOPs | MME | GQA |" in md
    assert "| star | 288 | 360.0 | 6.76 | 1499.7 | partial 4/9 |" in md  # TFLOPs to 3 significant digits  # t_eq: GQA's measured 360
    assert "| fastv | 58 | 101.5 | 4.16 | 1494.8 | partial 4/9 |" in md
    with open(tmp_path / "table.csv") as f:
        rows = list(csv.DictReader(f))
    star = next(r for r in rows if (r["method"], r["tokens"]) == ("star", "288"))
    assert star["GQA"] == "" and star["GQA (answered)"] == "4/9" and star["tflops"] == "6.76"


def test_geometry_from_the_checkpoint_or_its_name(tiny15, tmp_path):
    from llava_star.reproduce import geometry_for

    g, where = geometry_for(tiny15)
    assert (g.layers, g.hidden, g.intermediate, g.vision.hidden, g.vision.layers, g.crops) == (8, 128, 256, 64, 4, 1)
    assert where.endswith("config.json")
    assert geometry_for("liuhaotian/llava-v1.5-13b")[0].layers == 40
    assert geometry_for("liuhaotian/llava-v1.6-vicuna-7b")[0].crops == 5
    assert geometry_for("someone/other-model")[0] is None
    assert geometry_for("someone/other-model", "llava-v1.5-7b")[0].hidden == 4096
    with pytest.raises(SystemExit, match="--geometry"):
        geometry_for("m", "nope")


def test_measured_t_eq_reads_the_answers_metadata(tmp_path):
    from llava_star.reproduce import measured_t_eq

    scores = tmp_path / "m_star-b58_scores.json"
    assert measured_t_eq(scores) is None
    (tmp_path / "m_star-b58.jsonl").write_text("".join(json.dumps({"metadata": {"t_eq": v}}) + "\n"
                                                      for v in (281.0, 283.0)) + "not json\n")
    assert measured_t_eq(scores) == pytest.approx(282.0)
