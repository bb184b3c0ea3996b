"""Our scorers equal LLaVA's official tools on their edge cases (eval/README.md, "LLaVA's
quirks"): each quirk is compared against llava's own code run on the same files, and the
clearly named option gives the corrected value."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llava_star.eval.score.__main__ import main
from llava_star.eval.score.sqa import score_sqa
from llava_star.eval.score.textvqa import score_textvqa
from llava_star.eval.score.vizwiz import make_vizwiz_submission
from llava_star.eval.score.vqa_normalize import normalize_vqa_answer
from llava_star.eval.score.vqav2 import make_vqav2_submission

LLAVA_EVAL = Path(__import__("importlib").util.find_spec("llava").submodule_search_locations[0]) / "eval"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- 32 periods

MANY_PERIODS = "a. " * 20 + "b.c. " * 10 + "end."  # 41 periods, none before a digit


def test_normalizer_strips_at_most_32_periods_like_llava():
    from llava.eval.m4c_evaluator import EvalAIAnswerProcessor

    official = EvalAIAnswerProcessor()(MANY_PERIODS)
    assert official.count(".") == 41 - 32
    assert normalize_vqa_answer(MANY_PERIODS) == official
    corrected = normalize_vqa_answer(MANY_PERIODS, strip_all_periods=True)
    assert "." not in corrected and corrected == official.replace(".", "")
    assert normalize_vqa_answer("pi is 3.14. " * 40, strip_all_periods=True).count("3.14") == 40


def test_submissions_keep_llava_periods_unless_asked(tmp_path):
    split = [{"question_id": 1, "image": "a.jpg", "text": "q"}]
    answers = [{"question_id": 1, "prompt": "q", "text": MANY_PERIODS}]
    official = normalize_vqa_answer(MANY_PERIODS)
    assert make_vqav2_submission(answers, split)["upload"][0]["answer"] == official
    assert make_vizwiz_submission(answers, split)["upload"][0]["answer"] == official
    assert "." not in make_vizwiz_submission(answers, split, strip_all_periods=True)["upload"][0]["answer"]


# ----------------------------------------------------------------------------- TextVQA repeated pair

def textvqa_files(tmp_path):
    """An (image, question) pair asked twice with different human answers, plus one plain
    question; the answers file in LLaVA's format (question_id = image id)."""
    q = "what does the sign say?"
    data = [{"question_id": 1, "image_id": "img1", "question": q, "answers": ["stop"] * 10},
            {"question_id": 2, "image_id": "img2", "question": "what brand?", "answers": ["sony"] * 6 + ["x"] * 4},
            {"question_id": 3, "image_id": "img1", "question": q, "answers": ["go"] * 10}]
    ann = tmp_path / "TextVQA_0.5.1_val.json"
    ann.write_text(json.dumps({"data": data}))
    suffix = "\nReference OCR token: stop\nAnswer the question using a single word or phrase."
    answers = [{"question_id": "img1", "prompt": q + suffix, "text": "stop"},
               {"question_id": "img2", "prompt": "what brand?" + suffix, "text": "Sony"},
               {"question_id": "img1", "prompt": q + suffix, "text": "go"}]
    return ann, write_jsonl(tmp_path / "answers.jsonl", answers), data, answers


def llava_textvqa_accuracy(ann: Path, result: Path) -> float:
    """LLaVA's eval_textvqa on the files: its printed accuracy (two decimals)."""
    out = subprocess.run([sys.executable, str(LLAVA_EVAL / "eval_textvqa.py"), "--annotation-file", str(ann),
                          "--result-file", str(result)], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Accuracy: ([\d.]+)%", out).group(1))


def test_textvqa_repeated_pair_scored_like_llava(tmp_path, capsys):
    ann, result, data, answers = textvqa_files(tmp_path)
    official = llava_textvqa_accuracy(ann, result)
    # LLaVA scores both answers to img1 against the pair's last annotation ("go" x10):
    # stop -> 0, Sony -> 1, go -> 1: 66.67 %
    assert official == 66.67
    rc = main(["textvqa", "--answers-file", str(result), "--annotation-file", str(ann)])
    out = capsys.readouterr().out
    payload = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and round(payload["accuracy"], 2) == official
    assert payload["answered"] == payload["total"] == 3 and "Scored 3 of 3 questions" in out
    # corrected: the k-th answer against the k-th annotation of the pair: 100 %
    assert score_textvqa(answers, data, repeats_in_order=True)["accuracy"] == pytest.approx(100.0)
    rc = main(["textvqa", "--answers-file", str(result), "--annotation-file", str(ann), "--repeats-in-order"])
    assert rc == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == 100.0


# ----------------------------------------------------------------------------- SQA IMG with missing

def sqa_files(tmp_path):
    """14 problems, 7 with an image; 3 image problems unanswered (as a partial run leaves them)."""
    problems, preds = {}, []
    for i in range(14):
        pid = str(100 + i)
        image = i % 2 == 0
        problems[pid] = {"question": f"q{i}", "choices": ["a", "b"], "answer": i % 3 % 2,
                         "image": "image.png" if image else None, "split": "test"}
        if image and i in (0, 2, 4):
            continue
        right = "AB"[problems[pid]["answer"]]
        preds.append({"question_id": pid, "prompt": ("<image>\n" if image else "") + f"q{i}",
                      "text": right if i % 4 < 3 else "AB".replace(right, "")})
    base = tmp_path / "scienceqa"
    base.mkdir()
    (base / "problems.json").write_text(json.dumps(problems))
    (base / "pid_splits.json").write_text(json.dumps({"test": sorted(problems)}))
    return base, write_jsonl(tmp_path / "answers.jsonl", preds), problems, preds


def llava_sqa(base: Path, result: Path, tmp_path: Path):
    """LLaVA's eval_science_qa on the files: (accuracy, IMG-accuracy) as it prints them."""
    out = subprocess.run([sys.executable, str(LLAVA_EVAL / "eval_science_qa.py"), "--base-dir", str(base),
                          "--result-file", str(result), "--output-file", str(tmp_path / "o.json"),
                          "--output-result", str(tmp_path / "r.json")],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Accuracy: ([\d.]+)%, IMG-Accuracy: ([\d.]+)%", out)
    return float(m.group(1)), float(m.group(2))


def test_sqa_img_accuracy_with_missing_like_llava(tmp_path, capsys):
    base, result, problems, preds = sqa_files(tmp_path)
    acc, img = llava_sqa(base, result, tmp_path)
    rc = main(["sqa", "--base-dir", str(base), "--result-file", str(result), "--allow-missing"])
    out = capsys.readouterr().out
    payload = json.loads(out.strip().splitlines()[-1])
    assert rc == 0
    assert (round(payload["accuracy"], 2), round(payload["img_accuracy"], 2)) == (acc, img)
    assert payload["img_count"] == 4  # LLaVA: the 3 unanswered image problems leave the denominator
    assert (payload["answered"], payload["total"]) == (11, 14) and "Scored 11 of 14 questions (PARTIAL" in out
    fixed = score_sqa(preds, problems, sorted(problems), allow_missing=True, img_from_problems=True)
    assert fixed["img_count"] == 7 and fixed["img_correct"] == 4 and payload["img_accuracy"] == 100.0
    assert fixed["accuracy"] == pytest.approx(payload["accuracy"])  # all-question accuracy is the same
