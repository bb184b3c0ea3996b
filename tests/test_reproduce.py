"""The Table 1 driver: fills every cell once, reruns nothing finished, reruns a deleted cell."""
import csv
import json
import sys

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
