"""Tests for the offline benchmark scorers (llava_star.eval.score).

Small hand-made fixtures (expected values worked out in the comments) for every benchmark, plus
acceptance tests against the LLaVA-1.5-13B reference answers in shared/ (MME, POPE), skipped
when shared/ is not there.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from llava_star.eval.score.__main__ import BENCHMARKS, main
from llava_star.eval.score.common import LLAVA_SHORT_ANSWER_SUFFIX as SUFFIX
from llava_star.eval.score.common import InputError, read_answers
from llava_star.eval.score.gqa import convert_gqa_predictions, score_gqa
from llava_star.eval.score.mme import (CATEGORIES, SUBDIR_CATEGORIES, load_mme_gt, parse_yes_no,
                                       score_mme)
from llava_star.eval.score.mmvet import make_mmvet_results
from llava_star.eval.score.pope import parse_pope_answer, score_pope
from llava_star.eval.score.sqa import parse_sqa_letter, score_sqa
from llava_star.eval.score.textvqa import score_textvqa
from llava_star.eval.score.vizwiz import make_vizwiz_submission
from llava_star.eval.score.vqa_normalize import normalize_vqa_answer, vqa_accuracy
from llava_star.eval.score.vqav2 import make_vqav2_submission, score_vqav2


def _shared_dir() -> Path:
    env = os.environ.get("LLAVA_STAR_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


SHARED = _shared_dir()
REF = SHARED / "data" / "reference-answers" / "llava-v1.5-13b"


def _need_shared(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"shared data not available: {p} (set LLAVA_STAR_SHARED to the shared/ dir)")


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def ans(qid, text, prompt=""):
    return {"question_id": qid, "prompt": prompt, "text": text, "answer_id": "x", "model_id": "m", "metadata": {}}


def run_cli(argv, capsys):
    """Run the CLI in-process: (exit code, stdout, stderr, parsed last-line JSON or None)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    last = out.strip().splitlines()[-1] if out.strip() else ""
    payload = json.loads(last) if rc == 0 else None
    return rc, out, err, payload


# ----------------------------------------------------------------------------- common / CLI

def test_help_for_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "mme" in capsys.readouterr().out
    for bench in BENCHMARKS:
        with pytest.raises(SystemExit) as e:
            main([bench, "--help"])
        assert e.value.code == 0
        assert "--" in capsys.readouterr().out


def test_bad_json_line_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "answers.jsonl"
    f.write_text(json.dumps(ans(1, "yes")) + "\n{not json\n")
    with pytest.raises(InputError, match=r"answers.jsonl, line 2: not valid JSON"):
        read_answers(str(f))
    rc, out, err, _ = run_cli(["gqa", "--answers-file", f, "--questions", f], capsys)
    assert rc == 2 and "line 2" in err and str(f) in err


def test_missing_file_names_flag(tmp_path, capsys):
    rc, _, err, _ = run_cli(["mmvet", "--answers-file", tmp_path / "nope.jsonl", "--dst", tmp_path / "o.json"], capsys)
    assert rc == 2
    assert "--answers-file" in err and "nope.jsonl" in err


def test_answer_without_text_is_refused(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "prompt": "q"}])
    with pytest.raises(InputError, match="line 1: missing key 'text'"):
        read_answers(str(f))


def test_empty_answers_file_is_refused(tmp_path, capsys):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    with pytest.raises(InputError, match="has no answers"):
        read_answers(str(f))
    rc, _, err, _ = run_cli(["mmvet", "--answers-file", f, "--dst", tmp_path / "o.json"], capsys)
    assert rc == 2 and "empty.jsonl has no answers" in err and not (tmp_path / "o.json").exists()


def test_malformed_ground_truth_is_a_clear_error():
    with pytest.raises(InputError, match="'answers' is not a list of strings"):
        score_textvqa([ans(1, "a")], [{"question_id": 1, "answers": "abc"}])  # was scored per character
    with pytest.raises(InputError, match="'answers' is not a non-empty list"):
        score_vqav2([ans(1, "a")], [{"question_id": 1, "answers": [{"answer": 3}]}])
    with pytest.raises(InputError, match="problem 'p2'"):
        score_sqa([ans("p1", "A")], {"p1": {"choices": ["a", "b"], "answer": 0}, "p2": "bad"}, ["p1", "p2"],
                  allow_missing=True)


# ----------------------------------------------------------------------------- VQA normalizer

@pytest.mark.parametrize("raw, expected", [
    ("Two dogs.", "2 dogs"),          # number word -> digit, final period dropped
    ("The cat's toy", "cat 's toy"),  # article dropped, possessive split off
    ("dont", "don't"),                # contraction restored
    ("Im", "im"),                     # official table's "Im" key never matches lowercase
    ("1,000", "1000"),                # commas removed
    ("black-white", "black white"),   # inner punctuation -> space
    ("black - white", "black white"), # punctuation next to a space -> removed
    ("3.5", "3.5"),                   # decimal point kept
    ("Yes!", "yes"),
    ("  an Apple\n", "apple"),
])
def test_vqa_normalizer(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_vqa_normalizer_matches_llava_reference():
    try:
        from llava.eval.m4c_evaluator import EvalAIAnswerProcessor
    except Exception as e:  # llava not installed or its heavy imports fail
        pytest.skip(f"llava not importable: {e}")
    ref = EvalAIAnswerProcessor()
    samples = ["Two dogs.", "It's 3.5 inches, I think!", "no, it's (not) there", "won't", "a/b", "1,000.5 m",
               "Hello-World? Yes; no.", 'say "cheese"', "ten", "The End.", "wouldnt've", "x @ y", "e.g. this"]
    for s in samples:
        assert normalize_vqa_answer(s) == ref(s), s


def test_vqa_soft_accuracy():
    gts = ["red"] * 3 + ["blue"] * 7
    # red: leaving out one of the 3 reds leaves 2 (2/3), leaving out a blue leaves 3 (1):
    #      (3 * 2/3 + 7 * 1) / 10 = 0.9
    assert vqa_accuracy("Red.", gts) == pytest.approx(0.9)
    assert vqa_accuracy("blue", gts) == pytest.approx(1.0)   # 7 >= 4 matches in every subset
    assert vqa_accuracy("green", gts) == 0.0
    two = ["a dog"] * 2 + ["cat"] * 8                        # "a dog" normalizes to "dog"
    # 2 * (1/3) + 8 * (2/3) = 6 -> 0.6
    assert vqa_accuracy("dog", two) == pytest.approx(0.6)
    # one match: 1 * 0 + 9 * (1/3) = 3 -> 0.3
    assert vqa_accuracy("cat", ["cat"] + ["x"] * 9) == pytest.approx(0.3)


# ----------------------------------------------------------------------------- MME

def make_mme_gt(root: Path, items) -> Path:
    """items: (category, image file name, question, 'Yes'|'No') -> official release layout."""
    for cat, image, question, label in items:
        stem = os.path.splitext(image)[0]
        d = root / cat / "questions_answers_YN" if cat in SUBDIR_CATEGORIES else root / cat
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"{stem}.txt", "a", encoding="utf-8") as f:
            f.write(f"{question}\t{label}\n")
    return root


def mme_qid(cat, image):
    return f"{cat}/images/{image}" if cat in SUBDIR_CATEGORIES else f"{cat}/{image}"


def mme_prompt(question):
    # LLaVA's MME question file: GT question without "Please answer yes or no." plus the suffix.
    return question.replace("Please answer yes or no.", "").strip() + SUFFIX


@pytest.fixture
def mme_fixture(tmp_path):
    # One image per category, questions "Is it X?" (Yes) and "Is it Y?" (No).
    items, answers = [], []
    for cat in CATEGORIES:
        img = "0001.png"
        # One GT line with the double space seen in the official files.
        q_yes, q_no = "Is it X? Please answer yes or no.", "Is it Y?  Please answer yes or no."
        items += [(cat, img, q_yes, "Yes"), (cat, img, q_no, "No")]
        a_yes, a_no = "Yes", "No"
        if cat == "count":
            a_no = "Yes"                  # one wrong: acc 50, acc+ 0 -> 50
        elif cat == "position":
            a_yes = "Maybe"               # 'other' -> wrong: 50
        elif cat == "color":
            a_yes, a_no = "Yes, it is.", "Nope, it isn't"  # both parse right: 200
        elif cat == "code_reasoning":
            a_yes, a_no = "No", "Yes"     # both wrong: 0
        answers += [ans(mme_qid(cat, img), a_yes, mme_prompt(q_yes)),
                    ans(mme_qid(cat, img), a_no, mme_prompt(q_no))]
    return make_mme_gt(tmp_path / "MME_Benchmark_release_version", items), answers


def test_mme_parse_yes_no():
    assert parse_yes_no("Yes") == "yes"
    assert parse_yes_no("No.") == "no"
    assert parse_yes_no("Nope") == "no"      # "no" within the first 4 characters
    assert parse_yes_no("Church") == "other"
    assert parse_yes_no("I think yes") == "other"  # official tool looks only at the first 4 chars


def test_mme_scores_by_hand(mme_fixture):
    gt_dir, answers = mme_fixture
    r = score_mme(answers, load_mme_gt(str(gt_dir)))
    # Perception: 10 subtasks, all 200 except count (50) and position (50) = 8*200 + 100 = 1700.
    assert r["perception"] == pytest.approx(1700.0)
    # Cognition: 4 subtasks, code_reasoning 0 = 3*200 = 600.
    assert r["cognition"] == pytest.approx(600.0)
    assert r["subtasks"]["count"]["acc"] == 50.0 and r["subtasks"]["count"]["acc_plus"] == 0.0
    assert r["subtasks"]["position"]["other"] == 1
    assert r["subtasks"]["color"]["score"] == 200.0


def test_mme_missing_answer_refused_unless_allowed(mme_fixture):
    gt_dir, answers = mme_fixture
    gt = load_mme_gt(str(gt_dir))
    partial = [a for a in answers if not (a["question_id"] == "existence/0001.png" and a["text"] == "No")]
    with pytest.raises(InputError, match=r"1 of 28 ground-truth questions have no answer.*--allow-missing"):
        score_mme(partial, gt)
    r = score_mme(partial, gt, allow_missing=True)
    # existence now acc 50, acc+ 0 -> 50 instead of 200: 1700 - 150.
    assert r["perception"] == pytest.approx(1550.0)
    assert r["missing"] == 1 and r["subtasks"]["existence"]["missing"] == 1


def test_mme_unmatched_and_duplicate_answers_refused(mme_fixture):
    gt_dir, answers = mme_fixture
    gt = load_mme_gt(str(gt_dir))
    with pytest.raises(InputError, match="match no ground-truth question"):
        score_mme(answers + [ans("scene/images/0001.png", "Yes", "Is it Z?" + SUFFIX)], gt)
    with pytest.raises(InputError, match="two answers to the same question"):
        score_mme(answers + [answers[0]], gt)
    with pytest.raises(InputError, match="MME category"):
        score_mme(answers + [ans("nonsense/0001.png", "Yes", "Is it X?" + SUFFIX)], gt)


def test_mme_bad_gt_dir(tmp_path, mme_fixture):
    gt_dir, _ = mme_fixture
    with pytest.raises(InputError, match="--gt-dir: directory not found"):
        load_mme_gt(str(tmp_path / "absent"))
    bad = gt_dir / "OCR" / "0001.txt"
    bad.write_text("a question without a tab\n")
    with pytest.raises(InputError, match=r"OCR/0001.txt, line 1"):
        load_mme_gt(str(gt_dir))
    (bad).unlink()
    (gt_dir / "OCR").rmdir()
    with pytest.raises(InputError, match="category directory 'OCR' not found"):
        load_mme_gt(str(gt_dir))


def test_mme_cli(mme_fixture, tmp_path, capsys):
    gt_dir, answers = mme_fixture
    f = write_jsonl(tmp_path / "mme.jsonl", answers)
    rc, out, _, payload = run_cli(["mme", "--answers-file", f, "--gt-dir", gt_dir], capsys)
    assert rc == 0
    assert "MME Perception: 1700.00" in out
    assert payload["benchmark"] == "mme" and payload["perception"] == 1700.0 and payload["cognition"] == 600.0


# Official directory names; the TSV's category spelling may differ in case or separators.
def _official_category(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    for cat in CATEGORIES:
        if cat.lower() == key:
            return cat
    raise AssertionError(f"unknown MME category in ground_truth.tsv: {name!r}")


def test_mme_acceptance_llava13b(tmp_path, capsys):
    tsv, answers = SHARED / "data" / "mme" / "ground_truth.tsv", REF / "mme.jsonl"
    _need_shared(tsv, answers)
    with open(tsv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    gt_dir = make_mme_gt(tmp_path / "MME_Benchmark_release_version",
                         [(_official_category(r["category"]), r["image"], r["question"], r["answer"]) for r in rows])
    rc, out, err, payload = run_cli(["mme", "--answers-file", answers, "--gt-dir", gt_dir], capsys)
    assert rc == 0, err
    assert "Perception 1531.3" in out
    assert abs(payload["perception"] - 1531.3) < 0.05
    assert abs(payload["cognition"] - 295.4) < 0.05
    assert payload["missing"] == 0 and payload["answers"] == 2374


# ----------------------------------------------------------------------------- POPE

def test_pope_parse_answer():
    assert parse_pope_answer("Yes") == "yes"
    assert parse_pope_answer("No, there is not.") == "no"
    assert parse_pope_answer("There is no dog.") == "no"
    assert parse_pope_answer("Yes. There is no cat.") == "yes"  # only the first sentence counts
    assert parse_pope_answer("Not.") == "yes"                    # LLaVA's rule: 'Not' is not in its list
    assert parse_pope_answer("Yes, no doubt") == "no"            # ...and 'no' anywhere says no


def _pope_files(tmp_path, splits):
    """splits: {split: [(image, question, label, answer_text)]} -> (answers, questions, ann dir).

    Question ids follow LLaVA's file: split k gets k * 10**7 + the annotation id.
    """
    questions, answers, ann_dir = [], [], tmp_path / "coco"
    for k, (split, rows) in enumerate(splits.items()):
        anns = []
        for i, (image, q, label, text) in enumerate(rows, start=1):
            qid = k * 10 ** 7 + i
            anns.append({"question_id": i, "image": image, "text": q, "label": label})
            questions.append({"question_id": qid, "image": image, "text": q + SUFFIX, "category": split})
            answers.append(ans(qid, text, q + SUFFIX))
        write_jsonl(ann_dir / f"coco_pope_{split}.json", anns)
    return answers, questions, ann_dir


POPE_HAND = {
    # labels yes,yes,no,no; preds yes,no,yes,no -> TP1 FN1 FP1 TN1: P=R=F1=acc=50, yes 50
    "adversarial": [("a.jpg", "Is there a dog?", "yes", "Yes"),
                    ("a.jpg", "Is there a cat?", "yes", "No, there is not."),
                    ("b.jpg", "Is there a car?", "no", "Yes."),
                    ("b.jpg", "Is there a bus?", "no", "No")],
    # all right -> F1 100
    "popular": [("c.jpg", "Is there a dog?", "yes", "Yes, there is a dog."),
                ("c.jpg", "Is there a cup?", "no", "There is no cup.")],
    # labels yes,no,yes; preds yes,no,no -> TP1 TN1 FN1: P=100, R=50, F1=66.667
    "random": [("d.jpg", "Is there a bird?", "yes", "yes"),
               ("d.jpg", "Is there a tree?", "no", "not sure"),
               ("e.jpg", "Is there a fork?", "yes", "I see no. Yes")],
}


def test_pope_scores_by_hand(tmp_path):
    answers, questions, ann_dir = _pope_files(tmp_path, POPE_HAND)
    from llava_star.eval.score.pope import load_annotations
    r = score_pope(answers, questions, load_annotations(str(ann_dir))["annotations"])
    adv, pop, rnd = r["splits"]["adversarial"], r["splits"]["popular"], r["splits"]["random"]
    assert (adv["tp"], adv["fp"], adv["tn"], adv["fn"]) == (1, 1, 1, 1)
    assert adv["f1"] == pytest.approx(50.0) and adv["yes_ratio"] == pytest.approx(50.0)
    assert pop["f1"] == pytest.approx(100.0) and pop["accuracy"] == pytest.approx(100.0)
    assert rnd["precision"] == pytest.approx(100.0) and rnd["recall"] == pytest.approx(50.0)
    assert rnd["f1"] == pytest.approx(200 / 3)
    assert r["mean_f1"] == pytest.approx((50 + 100 + 200 / 3) / 3)  # 72.222


def test_pope_refuses_misaligned_annotations(tmp_path, capsys):
    answers, questions, ann_dir = _pope_files(tmp_path, POPE_HAND)
    qf = write_jsonl(tmp_path / "q.jsonl", questions)
    af = write_jsonl(tmp_path / "a.jsonl", answers)
    # Swap two annotation lines of one split: same set, wrong order -> labels would pair wrongly.
    path = ann_dir / "coco_pope_adversarial.json"
    lines = path.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("\n".join(lines) + "\n")
    rc, _, err, _ = run_cli(["pope", "--answers-file", af, "--question-file", qf, "--annotation-dir", ann_dir], capsys)
    assert rc == 2
    assert "coco_pope_adversarial.json, line 2" in err and "misaligned" in err


def test_pope_refuses_missing_answer_and_split(tmp_path):
    answers, questions, ann_dir = _pope_files(tmp_path, POPE_HAND)
    from llava_star.eval.score.pope import load_annotations
    anns = load_annotations(str(ann_dir))["annotations"]
    with pytest.raises(InputError, match="1 questions of --question-file have no answer"):
        score_pope(answers[1:], questions, anns)
    del anns["random"]
    with pytest.raises(InputError, match="no coco_pope_random.json"):
        score_pope(answers, questions, anns)


def test_pope_refuses_answers_to_other_questions(tmp_path):
    answers, questions, ann_dir = _pope_files(tmp_path, POPE_HAND)
    from llava_star.eval.score.pope import load_annotations
    answers[1] = dict(answers[1], prompt=answers[0]["prompt"])  # same ids, another question file
    with pytest.raises(InputError, match="different question file"):
        score_pope(answers, questions, load_annotations(str(ann_dir))["annotations"])


def _pope_real():
    pope = SHARED / "data" / "pope"
    paths = (REF / "pope.jsonl", pope / "llava_pope_test.jsonl", pope / "coco")
    _need_shared(*paths)
    return paths


def test_pope_acceptance_llava13b(capsys):
    answers, qfile, coco = _pope_real()
    rc, out, err, payload = run_cli(["pope", "--answers-file", answers, "--question-file", qfile,
                                     "--annotation-dir", coco], capsys)
    assert rc == 0, err
    f1 = {s: round(payload[s]["f1"], 1) for s in ("adversarial", "popular", "random")}
    assert f1 == {"adversarial": 84.5, "popular": 86.2, "random": 87.1}
    assert round(payload["mean_f1"], 1) == 85.9
    assert "mean 85.9" in out


def test_pope_acceptance_refuses_real_misaligned(tmp_path, capsys):
    answers, qfile, coco = _pope_real()
    bad = tmp_path / "coco"
    bad.mkdir()
    for name in os.listdir(coco):
        lines = (coco / name).read_text().splitlines()
        if name == "coco_pope_popular.json":
            lines = lines[1:] + lines[:1]  # rotated by one line
        (bad / name).write_text("\n".join(lines) + "\n")
    rc, _, err, _ = run_cli(["pope", "--answers-file", answers, "--question-file", qfile,
                             "--annotation-dir", bad], capsys)
    assert rc == 2 and "coco_pope_popular.json, line 1" in err


# ----------------------------------------------------------------------------- GQA

GQA_QUESTIONS = {
    "201": {"question": "Is it sunny?", "answer": "yes", "isBalanced": True, "types": {"structural": "verify"}},
    "202": {"question": "What color?", "answer": "red", "isBalanced": True, "types": {"structural": "query"}},
    "203": {"question": "Which side?", "answer": "left", "isBalanced": True, "types": {"structural": "query"}},
    "204": {"question": "Unbalanced", "answer": "no", "isBalanced": False},
}
GQA_ANSWERS = [ans("201", "Yes."), ans("202", "Red"), ans("203", "Left side.")]


def test_gqa_by_hand(tmp_path, capsys):
    assert convert_gqa_predictions(GQA_ANSWERS) == [
        {"questionId": "201", "prediction": "yes"}, {"questionId": "202", "prediction": "red"},
        {"questionId": "203", "prediction": "left side"}]
    r = score_gqa(GQA_ANSWERS, GQA_QUESTIONS)
    # "yes"==yes, "red"==red, "left side"!="left"; 204 is unbalanced and not scored: 2/3.
    assert r["accuracy"] == pytest.approx(200 / 3) and r["questions"] == 3
    assert r["by_structural_type"] == {"query": 50.0, "verify": 100.0}
    qf = tmp_path / "q.json"
    qf.write_text(json.dumps(GQA_QUESTIONS))
    af = write_jsonl(tmp_path / "a.jsonl", GQA_ANSWERS)
    out_f = tmp_path / "out" / "testdev_balanced_predictions.json"
    rc, out, _, payload = run_cli(["gqa", "--answers-file", af, "--questions", qf, "--predictions-out", out_f], capsys)
    assert rc == 0 and payload["accuracy"] == pytest.approx(66.6667)
    assert json.loads(out_f.read_text())[2] == {"questionId": "203", "prediction": "left side"}


def test_gqa_refusals():
    with pytest.raises(InputError, match="2 of 3 questions have no answer"):
        score_gqa(GQA_ANSWERS[:1], GQA_QUESTIONS)
    r = score_gqa(GQA_ANSWERS[:1], GQA_QUESTIONS, allow_missing=True)
    assert r["accuracy"] == pytest.approx(100 / 3) and r["missing"] == 2
    with pytest.raises(InputError, match="not in --questions"):
        score_gqa(GQA_ANSWERS + [ans("999", "x")], GQA_QUESTIONS)
    with pytest.raises(InputError, match="duplicate question_id"):
        score_gqa(GQA_ANSWERS + [ans(201, "no")], GQA_QUESTIONS)


# ----------------------------------------------------------------------------- TextVQA

TEXTVQA_DATA = [
    {"question_id": 11, "image_id": "img1", "question": "what is the brand?", "answers": ["dakota"] * 7 + ["dakota digital"] * 3},
    {"question_id": 12, "image_id": "img2", "question": "what drink is it?", "answers": ["coke"] * 2 + ["coca cola"] * 8},
    {"question_id": 13, "image_id": "img3", "question": "what soda?", "answers": ["sprite"] * 10},
]


def test_textvqa_by_question_id(tmp_path, capsys):
    answers = [ans(11, "Dakota."), ans(12, "Coke"), ans(13, "pepsi")]
    # 1.0 (7 >= 3 everywhere) + 0.6 (2 of 10, see test_vqa_soft_accuracy) + 0 -> 1.6 / 3 = 53.33 %
    r = score_textvqa(answers, TEXTVQA_DATA)
    assert r["accuracy"] == pytest.approx(160 / 3)
    af = write_jsonl(tmp_path / "a.jsonl", answers)
    ann = tmp_path / "TextVQA_0.5.1_val.json"
    ann.write_text(json.dumps({"dataset_name": "textvqa", "data": TEXTVQA_DATA}))
    rc, _, _, payload = run_cli(["textvqa", "--answers-file", af, "--annotation-file", ann], capsys)
    assert rc == 0 and payload["accuracy"] == pytest.approx(53.3333) and payload["samples"] == 3


def test_textvqa_llava_style_ids_and_refusals():
    # LLaVA's question file puts the image id in question_id; the question comes from the prompt.
    answers = [ans("img1", "dakota", "what is the brand?\nReference OCR token: DAKOTA, DIGITAL" + SUFFIX),
               ans("img2", "coca cola", "What drink is it?" + SUFFIX),
               ans(13, "Sprite")]
    assert score_textvqa(answers, TEXTVQA_DATA)["accuracy"] == pytest.approx(100.0)
    with pytest.raises(InputError, match="1 of 3 annotated questions have no answer"):
        score_textvqa(answers[:2], TEXTVQA_DATA)
    assert score_textvqa(answers[:2], TEXTVQA_DATA, allow_missing=True)["samples"] == 2
    with pytest.raises(InputError, match="match no question"):
        score_textvqa(answers + [ans(99, "x")], TEXTVQA_DATA)
    with pytest.raises(InputError, match="two answers for TextVQA question 13"):
        score_textvqa(answers + [ans(13, "x")], TEXTVQA_DATA)


# ----------------------------------------------------------------------------- ScienceQA

SQA_PROBLEMS = {
    "p1": {"choices": ["a", "b", "c"], "answer": 0, "image": "image.png", "split": "test"},
    "p2": {"choices": ["a", "b", "c"], "answer": 2, "image": "image.png", "split": "test"},
    "p3": {"choices": ["a", "b"], "answer": 1, "image": None, "split": "test"},
    "p4": {"choices": ["a", "b"], "answer": 0, "image": "image.png", "split": "test"},
    "p5": {"choices": ["a", "b"], "answer": 0, "image": None, "split": "test"},
    "t1": {"choices": ["a", "b"], "answer": 0, "image": None, "split": "train"},
}
def sqa_ans(pid, text):
    """An answer as model_vqa_science writes it: "<image>" opens the prompt of image problems."""
    return ans(pid, text, ("<image>\n" if SQA_PROBLEMS[pid]["image"] else "") + f"Question {pid}")


SQA_PREDS = [sqa_ans("p1", "A"), sqa_ans("p2", "Because ... The answer is C."), sqa_ans("p3", "B. the second"),
             sqa_ans("p4", "D"), sqa_ans("p5", "I think A")]


def test_sqa_parse_letter():
    assert parse_sqa_letter("C") == "C"
    assert parse_sqa_letter("B. the second") == "B"
    assert parse_sqa_letter("The answer is E.") == "E"
    assert parse_sqa_letter("The answer is A. The answer is B.") == "FAILED"  # ambiguous
    assert parse_sqa_letter("I think A") == "FAILED"


def test_sqa_by_hand(tmp_path, capsys):
    split = ["p1", "p2", "p3", "p4", "p5"]
    r = score_sqa(SQA_PREDS, SQA_PROBLEMS, split)
    # right: p1, p2, p3; wrong: p4 ("D" is beyond 2 choices), p5 (unparsed) -> 3/5 = 60 %.
    # With an image: p1 right, p2 right, p4 wrong -> IMG 2/3 = 66.67 %.
    assert r["accuracy"] == pytest.approx(60.0)
    assert r["img_accuracy"] == pytest.approx(200 / 3)
    assert r["failed_parse"] == 1 and r["results"]["p4"] == -1
    base = tmp_path / "scienceqa"
    base.mkdir()
    (base / "problems.json").write_text(json.dumps(SQA_PROBLEMS))
    (base / "pid_splits.json").write_text(json.dumps({"test": split, "train": ["t1"]}))
    rf = write_jsonl(tmp_path / "a.jsonl", SQA_PREDS)
    of, orr = tmp_path / "out.json", tmp_path / "result.json"
    rc, _, _, payload = run_cli(["sqa", "--base-dir", base, "--result-file", rf, "--output-file", of,
                                 "--output-result", orr, "--split", "test"], capsys)
    assert rc == 0 and payload["img_accuracy"] == pytest.approx(66.6667) and payload["accuracy"] == 60.0
    assert len(json.loads(of.read_text())["correct"]) == 3
    assert json.loads(orr.read_text())["results"] == {"p1": 0, "p2": 2, "p3": 1, "p4": -1, "p5": -1}
    rc, _, err, _ = run_cli(["sqa", "--base-dir", base, "--result-file", rf, "--split", "val"], capsys)
    assert rc == 2 and "--split" in err


def test_sqa_refusals():
    split = ["p1", "p2", "p3", "p4", "p5"]
    with pytest.raises(InputError, match="1 of 5 problems have no prediction"):
        score_sqa(SQA_PREDS[:4], SQA_PROBLEMS, split)
    assert score_sqa(SQA_PREDS[:4], SQA_PROBLEMS, split, allow_missing=True)["accuracy"] == pytest.approx(60.0)
    with pytest.raises(InputError, match="not problems of the split"):
        score_sqa(SQA_PREDS + [sqa_ans("t1", "A")], SQA_PROBLEMS, split)


# ----------------------------------------------------------------------------- VQAv2

def test_vqav2_submission(tmp_path, capsys):
    split = [{"question_id": 1, "image": "a.jpg", "text": "q"}, {"question_id": 2, "image": "b.jpg", "text": "q"},
             {"question_id": 3, "image": "c.jpg", "text": "q"}]
    answers = [ans(1, "Two."), ans(3, "Yes")]
    sub = make_vqav2_submission(answers, split)
    assert sub["upload"] == [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": ""},
                             {"question_id": 3, "answer": "yes"}]
    assert sub["missing"] == 1
    with pytest.raises(InputError, match="not in --test-split"):
        make_vqav2_submission(answers + [ans(99, "x")], split)
    sf, af, dst = write_jsonl(tmp_path / "s.jsonl", split), write_jsonl(tmp_path / "a.jsonl", answers), tmp_path / "up.json"
    rc, out, _, payload = run_cli(["vqav2", "--answers-file", af, "--test-split", sf, "--dst", dst], capsys)
    assert rc == 0 and payload["missing"] == 1 and payload["questions"] == 3
    assert json.loads(dst.read_text())[0] == {"question_id": 1, "answer": "2"}
    rc, _, err, _ = run_cli(["vqav2", "--answers-file", af, "--dst", dst], capsys)
    assert rc == 2 and "--test-split" in err


def test_vqav2_local_accuracy(tmp_path, capsys):
    anns = [{"question_id": 1, "answer_type": "number", "answers": [{"answer": "2"}] * 10},
            {"question_id": 3, "answer_type": "yes/no", "answers": [{"answer": "yes"}] * 2 + [{"answer": "no"}] * 8}]
    answers = [ans(1, "two"), ans(3, "Yes")]
    # q1: "two" -> "2", 10 matches -> 1.0; q3: 2 of 10 -> 0.6; mean 80 %.
    r = score_vqav2(answers, anns)
    assert r["accuracy"] == pytest.approx(80.0)
    assert r["by_answer_type"] == {"number": 100.0, "yes/no": pytest.approx(60.0)}
    with pytest.raises(InputError, match="no annotation"):
        score_vqav2(answers + [ans(7, "x")], anns)
    af = write_jsonl(tmp_path / "a.jsonl", answers)
    ann = tmp_path / "v2_mscoco_val2014_annotations.json"
    ann.write_text(json.dumps({"annotations": anns}))
    rc, _, _, payload = run_cli(["vqav2", "--answers-file", af, "--annotation-file", ann], capsys)
    assert rc == 0 and payload["accuracy"] == pytest.approx(80.0)


# ----------------------------------------------------------------------------- VizWiz

def test_vizwiz_submission(tmp_path, capsys):
    split = [{"question_id": 0, "image": "VizWiz_test_00000000.jpg", "text": "q"},
             {"question_id": 1, "image": "VizWiz_test_00000001.jpg", "text": "q"}]
    answers = [ans(1, "Unanswerable"), ans(0, "The Red can.")]
    sub = make_vizwiz_submission(answers, split)
    # In test-split order, normalized ("The Red can." -> "red can").
    assert sub["upload"] == [{"image": "VizWiz_test_00000000.jpg", "answer": "red can"},
                             {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"}]
    assert sub["unanswerable"] == 1
    with pytest.raises(InputError, match="1 of 2 test questions have no answer"):
        make_vizwiz_submission(answers[:1], split)
    sf, af, dst = write_jsonl(tmp_path / "s.jsonl", split), write_jsonl(tmp_path / "a.jsonl", answers), tmp_path / "v.json"
    rc, _, _, payload = run_cli(["vizwiz", "--answers-file", af, "--test-split", sf, "--dst", dst], capsys)
    assert rc == 0 and payload["questions"] == 2
    assert json.loads(dst.read_text()) == sub["upload"]


# ----------------------------------------------------------------------------- MM-Vet

def test_mmvet_results(tmp_path, capsys):
    answers = [ans(1, "second"), ans(0, "first"), ans("v1_2", "third")]
    assert make_mmvet_results(answers) == {"v1_0": "first", "v1_1": "second", "v1_2": "third"}
    with pytest.raises(InputError, match="duplicate question_id"):
        make_mmvet_results(answers + [ans("1", "again")])
    with pytest.raises(InputError, match="neither a number"):
        make_mmvet_results([ans("q7", "x")])
    with pytest.raises(InputError, match="1 of 4 questions have no answer"):
        make_mmvet_results(answers, [{"question_id": i} for i in range(4)])
    af, dst = write_jsonl(tmp_path / "a.jsonl", answers), tmp_path / "results" / "mmvet.json"
    rc, _, _, payload = run_cli(["mmvet", "--answers-file", af, "--dst", dst], capsys)
    assert rc == 0 and payload["answers"] == 3
    assert json.loads(dst.read_text()) == {"v1_0": "first", "v1_1": "second", "v1_2": "third"}
