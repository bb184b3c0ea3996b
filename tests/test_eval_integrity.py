"""Eval integrity (issue 13): the settings recorded with an answers file, the writer lock,
--limit, and every bad input a one-line error naming it, checked before the model loads
where it can be. Runs the real runners on the tiny checkpoint and real photos."""
from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from fixtures_eval import offline_hub, qdir, read_jsonl, write_jsonl  # noqa: F401 (fixtures)
from llava_star.eval import generation, model_vqa_loader, model_vqa_science
from llava_star.eval.score.__main__ import main as score_main

FAST = ["--temperature", "0", "--max_new_tokens", "2", "--device", "cpu", "--conv-mode", "vicuna_v1"]


def run(capsys, *argv, module=model_vqa_loader):
    rc = module.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def args_for(model, qdir, answers, *extra, questions=None):
    return ["--model-path", model, "--question-file", questions or qdir / "questions.jsonl",
            "--image-folder", qdir / "images", "--answers-file", answers, *FAST, *extra]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the runner gets as far as loading the model."""
    monkeypatch.setattr(generation, "load_model", lambda *a: pytest.fail("the model was loaded"))


def one_line_error(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    line = [l for l in err.splitlines() if "error:" in l][-1]
    for n in needles:
        assert n in line, (n, line)
    return line


# ----------------------------------------------------------------------------- settings record

@pytest.fixture(scope="module")
def limited_run(tiny15, qdir, tmp_path_factory):
    """--limit 2 run (star@58): writes a-limit2.jsonl and its settings record."""
    out = tmp_path_factory.mktemp("lim") / "a.jsonl"
    assert model_vqa_loader.main([str(a) for a in args_for(tiny15, qdir, out, "--method", "star", "--budget", "58",
                                                           "--limit", "2")]) == 0
    return out


def test_limit_writes_its_own_file_and_records_settings(limited_run, tiny15):
    assert not limited_run.exists()
    limited = limited_run.with_name("a-limit2.jsonl")
    assert [r["question_id"] for r in read_jsonl(limited)] == [0, 1]
    settings = json.loads(limited_run.with_name("a-limit2.settings.json").read_text())
    from llava_star import __version__

    assert settings["method"] == {"name": "star", "budget": 58, "knobs": {}}
    assert settings["model_path"] == os.path.abspath(tiny15) and settings["llava_star_version"] == __version__
    assert (settings["conv_mode"], settings["temperature"], settings["max_new_tokens"]) == ("vicuna_v1", 0.0, 2)
    assert len(settings["question_file_sha256"]) == 64 and settings["chunk"] == "0/1"
    assert not limited_run.with_name("a-limit2.lock").exists()  # released at the end


@pytest.mark.parametrize("change, named", [
    (["--method", "fastv", "--budget", "29"], "--method/--budget"),
    (["--method", "star", "--budget", "58", "--star-layer", "1"], "--method/--budget"),
    (["--method", "star", "--budget", "58", "--temperature", "0.7"], "--temperature: recorded 0.0, now 0.7"),
    (["--method", "star", "--budget", "58", "--conv-mode", "llava_v1"], "--conv-mode"),
    (["--method", "star", "--budget", "58", "--max_new_tokens", "3"], "--max_new_tokens"),
    (["--method", "star", "--budget", "58", "--num_beams", "2"], "--num_beams"),
])
def test_resume_with_other_settings_stops_before_the_model_loads(limited_run, tiny15, qdir, change, named,
                                                                 no_model_load, capsys):
    limited = limited_run.with_name("a-limit2.jsonl")
    before = limited.read_bytes()
    rc, err = run(capsys, *args_for(tiny15, qdir, limited_run, "--limit", "2"), *change)
    line = one_line_error(rc, err, "was made with other settings", named, "--no-resume")
    assert "already answered" not in err
    assert limited.read_bytes() == before


def test_resume_with_the_same_settings_and_another_question_file(limited_run, tiny15, qdir, tmp_path, no_model_load,
                                                                 capsys):
    same = args_for(tiny15, qdir, limited_run, "--limit", "2", "--method", "star", "--budget", "58")
    rc, err = run(capsys, *same)
    assert rc == 0 and "2 already answered, 0 to go" in err
    # the same question ids and texts in a file that differs: another question file
    edited = write_jsonl(tmp_path / "q.jsonl", read_jsonl(qdir / "questions.jsonl")[:2] +
                         [dict(read_jsonl(qdir / "questions.jsonl")[2], text="another question")])
    rc, err = run(capsys, *same, "--question-file", edited)
    one_line_error(rc, err, "--question-file (its content)")


def test_answers_without_a_settings_record_are_not_resumed(tiny15, qdir, tmp_path, no_model_load, capsys):
    out = tmp_path / "llava.jsonl"  # e.g. written by llava's own runner
    write_jsonl(out, [{"question_id": 0, "prompt": read_jsonl(qdir / "questions.jsonl")[0]["text"], "text": "x",
                       "answer_id": "a", "model_id": "m", "metadata": {}}])
    rc, err = run(capsys, *args_for(tiny15, qdir, out))
    one_line_error(rc, err, "no settings record", "--no-resume")


def test_a_second_writer_is_refused_while_the_first_runs(tiny15, qdir, tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    first = subprocess.Popen([sys.executable, "-m", "llava_star.eval.model_vqa_loader",
                              *map(str, args_for(tiny15, qdir, out, "--max_new_tokens", "6"))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    lock = tmp_path / "a.lock"
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists(), first.communicate()[1][-2000:]
    rc, err = run(capsys, *args_for(tiny15, qdir, out))
    line = one_line_error(rc, err, "being written by another run", "a.lock")
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-3000:]
    rows = read_jsonl(out)
    assert [r["question_id"] for r in rows] == [0, 1, 2, 3]  # each once, not interleaved
    assert not lock.exists()


# ----------------------------------------------------------------------------- bad inputs

def test_non_utf8_question_and_answers_files(tiny15, qdir, tmp_path, no_model_load, capsys):
    q = tmp_path / "q.jsonl"
    good = (qdir / "questions.jsonl").read_bytes().splitlines(keepends=True)
    q.write_bytes(good[0] + good[1].replace(b"\"text\": \"", b"\"text\": \"\xe4"))
    rc, err = run(capsys, *args_for(tiny15, qdir, tmp_path / "a.jsonl", questions=q))
    one_line_error(rc, err, "--question-file", "line 2: not UTF-8")

    s = tmp_path / "s.json"
    s.write_bytes(b'[{"id": "1", "conversations": [{"value": "caf\xe9"}]}]')
    rc, err = run(capsys, *args_for(tiny15, qdir, tmp_path / "b.jsonl", questions=s), module=model_vqa_science)
    one_line_error(rc, err, "--question-file", "line 1: not UTF-8")

    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(b'{"question_id": 1, "prompt": "p", "text": "caf\xe9"}\n')
    code = score_main(["gqa", "--answers-file", str(answers), "--questions", str(tmp_path / "none.json")])
    one_line_error(code, capsys.readouterr().err, "--answers-file", "line 1: not UTF-8")

    # resuming an answers file that is not UTF-8: named, not a traceback, not "repaired"
    resume = tmp_path / "r.jsonl"
    resume.write_bytes(b'{"question_id": 0, "prompt": "\xff", "text": "x"}\n')
    rc, err = run(capsys, *args_for(tiny15, qdir, resume))
    one_line_error(rc, err, "--answers-file", "line 1: not a complete answer line")


@pytest.mark.parametrize("value", [5, None, ""])
def test_image_that_is_not_a_file_name(tiny15, qdir, tmp_path, value, no_model_load, capsys):
    rows = read_jsonl(qdir / "questions.jsonl")
    rows[1]["image"] = value
    q = write_jsonl(tmp_path / "q.jsonl", rows)
    rc, err = run(capsys, *args_for(tiny15, qdir, tmp_path / "a.jsonl", questions=q))
    one_line_error(rc, err, "line 2", f"\"image\" is {json.dumps(value)}")


def test_answers_file_that_cannot_be_written_is_refused_before_loading(tiny15, qdir, tmp_path, no_model_load,
                                                                       capsys):
    (tmp_path / "plain-file").write_text("")
    rc, err = run(capsys, *args_for(tiny15, qdir, tmp_path / "plain-file" / "sub" / "a.jsonl"))
    one_line_error(rc, err, "--answers-file", "cannot create its folder")
    # a folder nobody may write in (root included): /proc
    rc, err = run(capsys, *args_for(tiny15, qdir, "/proc/llava-star-answers.jsonl"))
    one_line_error(rc, err, "--answers-file", "cannot write in its folder")


def test_full_disk_is_one_line_and_resumable(tiny15, qdir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "a.jsonl"
    real_open = builtins.open

    def disk_full(file, mode="r", *a, **k):  # the answers file lands on a full disk
        if str(file) == str(out) and mode[0] in "aw":
            return real_open("/dev/full", mode, *a, **k)
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", disk_full)
    rc, err = run(capsys, *args_for(tiny15, qdir, out))
    one_line_error(rc, err, "--answers-file", "No space left on device", "run the same command again")
    monkeypatch.setattr(builtins, "open", real_open)
    rc, err = run(capsys, *args_for(tiny15, qdir, out))  # space again: the run completes
    assert rc == 0, err
    assert [r["question_id"] for r in read_jsonl(out)] == [0, 1, 2, 3]


def test_prompt_longer_than_the_context_is_named_or_skipped(tiny15, qdir, tmp_path, capsys):
    rows = read_jsonl(qdir / "questions.jsonl")
    rows[2]["text"] = "describe " * 3000 + rows[2]["text"]
    q = write_jsonl(tmp_path / "q.jsonl", rows)
    rc, err = run(capsys, *args_for(tiny15, qdir, tmp_path / "a.jsonl", questions=q))
    one_line_error(rc, err, "question 2", "does not fit the model's context", "--skip-bad-images")
    assert [r["question_id"] for r in read_jsonl(tmp_path / "a.jsonl")] == [0, 1]  # earlier answers kept

    rc, err = run(capsys, *args_for(tiny15, qdir, tmp_path / "b.jsonl", "--skip-bad-images", "--batch-size", "2",
                                    questions=q))
    assert rc == 0, err
    assert [r["question_id"] for r in read_jsonl(tmp_path / "b.jsonl")] == [0, 1, 3]
    (skipped,) = read_jsonl(tmp_path / "b.skipped.jsonl")
    assert skipped["question_id"] == 2 and "context" in skipped["error"]


def test_16_bit_png_is_scaled_not_clipped(images, tmp_path):
    grey = np.asarray(images["astronaut"].convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "deep.png")  # the same photo in 16 bits
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    opened = np.asarray(generation.open_image(str(tmp_path / "deep.png"), convert_rgb=True), dtype=float)
    assert opened.shape[2] == 3
    assert np.abs(opened[..., 0] - grey).max() <= 1  # PIL's convert("RGB") alone makes it ~white
    clipped = np.asarray(Image.open(tmp_path / "deep.png").convert("RGB"), dtype=float)
    assert clipped.mean() > 200 and clipped.mean() > grey.mean() + 80  # most of it white


def test_tiny_image_is_refused_saying_why(tiny15, qdir, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (1, 1), (120, 30, 200)).save(tmp_path / "images" / "dot.png")
    q = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 0, "image": "dot.png", "text": "What colour?"}])
    rc, err = run(capsys, "--model-path", tiny15, "--question-file", q, "--image-folder", tmp_path / "images",
                  "--answers-file", tmp_path / "a.jsonl", *FAST)
    one_line_error(rc, err, "dot.png is 1x1 pixels: too small", "question 0")
