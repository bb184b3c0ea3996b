"""ScienceQA (test split), as llava/eval/eval_science_qa.py.

The paper's SQA number is IMG-accuracy: accuracy over the questions that come with an image.

LLaVA quirk kept by default (the numbers are LLaVA's): "IMG from the prompt": eval_science_qa
decides whether a question has an image by looking for "<image>" in the answer's prompt, and
a problem without an answer gets the prompt "Unknown", so with --allow-missing the unanswered
image questions drop out of IMG-accuracy's denominator instead of counting as wrong.
--img-from-problems reads the image from problems.json (the ground truth) instead.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import Any, Dict, List, Optional

from .common import (InputError, check_dir, emit_json, index_by, pct, preview, print_scored, print_table,
                     read_answers, read_json, write_json)

OPTIONS = ["A", "B", "C", "D", "E"]
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_sqa_letter(text: str) -> str:
    """The chosen letter, or 'FAILED'. Accepts "B", "B. text" and "... The answer is B."."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else "FAILED"  # zero or several: no single answer


def has_image(problem: Dict[str, Any], pred: Optional[Dict[str, Any]], from_problems: bool) -> bool:
    if from_problems:
        return bool(problem.get("image"))
    return pred is not None and "<image>" in pred.get("prompt", "")  # LLaVA: "Unknown" when missing


def score_sqa(predictions: List[Dict[str, Any]], problems: Dict[str, Dict[str, Any]],
              split_ids: List[str], allow_missing: bool = False,
              source: str = "--result-file", img_from_problems: bool = False) -> Dict[str, Any]:
    preds = index_by(predictions, "question_id", source, keyfunc=str)
    split_set = set(split_ids)
    extra = [k for k in preds if k not in split_set]
    if extra:
        raise InputError(f"{source}: {len(extra)} predictions are not problems of the split: {preview(extra)}")
    if not isinstance(problems, dict):
        raise InputError("--base-dir: problems.json is not a JSON object (problem id -> problem)")
    absent = [k for k in split_ids if k not in problems]
    if absent:
        raise InputError(f"--base-dir: {len(absent)} split ids are not in problems.json: {preview(absent)}")
    for k in split_ids:
        prob = problems[k]
        if not (isinstance(prob, dict) and isinstance(prob.get("choices"), list)
                and isinstance(prob.get("answer"), int) and 0 <= prob["answer"] < min(len(prob["choices"]), len(OPTIONS))):
            raise InputError(f"--base-dir: problems.json, problem {k!r}: expected 'choices' (a list) and "
                             f"'answer' (the index of the right choice)")
    missing = [k for k in split_ids if k not in preds]
    if missing and not allow_missing:
        raise InputError(f"{source}: {len(missing)} of {len(split_ids)} problems have no prediction: "
                         f"{preview(missing)} (pass --allow-missing to count them as wrong)")

    correct, incorrect = [], []
    results, outputs = {}, {}
    n_img = n_img_correct = n_failed = 0
    for pid in split_ids:
        prob = problems[pid]
        pred = preds.get(pid)
        text = pred["text"] if pred is not None else "FAILED"
        letter = parse_sqa_letter(text)
        n_failed += letter == "FAILED"
        # A letter beyond the problem's choices is as wrong as no letter.
        idx = OPTIONS.index(letter) if letter in OPTIONS[: len(prob["choices"])] else -1
        ok = idx == prob["answer"]
        image = has_image(prob, pred, img_from_problems)
        n_img += image
        n_img_correct += image and ok
        results[pid] = idx
        outputs[pid] = text
        (correct if ok else incorrect).append({
            "question_id": pid, "parsed_ans": letter, "ground_truth": OPTIONS[prob["answer"]],
            "question": pred.get("prompt", "Unknown") if pred is not None else "Unknown",
            "pred": text, "is_multimodal": image})
    total = len(split_ids)
    return {"accuracy": pct(len(correct), total), "img_accuracy": pct(n_img_correct, n_img),
            "correct": len(correct), "count": total, "img_correct": n_img_correct, "img_count": n_img,
            "failed_parse": n_failed, "missing": len(missing), "answered": total - len(missing), "total": total,
            "details": {"correct": correct, "incorrect": incorrect},
            "results": results, "outputs": outputs}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-dir", required=True, help="ScienceQA data dir with problems.json and pid_splits.json")
    p.add_argument("--result-file", required=True, help="LLaVA answers .jsonl (question_id = problem id)")
    p.add_argument("--output-file", help="write per-question analysis ({correct: [...], incorrect: [...]}) here")
    p.add_argument("--output-result", help="write {acc, correct, count, results, outputs} here")
    p.add_argument("--split", default="test", help="split name in pid_splits.json (default: test)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score even if some problems have no prediction (they count as wrong)")
    p.add_argument("--img-from-problems", action="store_true",
                   help="corrected value: decide which problems have an image from problems.json, so "
                        "unanswered image problems count as wrong in IMG-accuracy (default: LLaVA's rule, "
                        "\"<image>\" in the answer's prompt)")


def run(args: argparse.Namespace) -> None:
    check_dir(args.base_dir, "--base-dir")
    splits = read_json(os.path.join(args.base_dir, "pid_splits.json"), "--base-dir")
    problems = read_json(os.path.join(args.base_dir, "problems.json"), "--base-dir")
    if not isinstance(splits, dict) or args.split not in splits:
        raise InputError(f"--split: {args.split!r} is not a split in {args.base_dir}/pid_splits.json")
    if not isinstance(splits[args.split], list):
        raise InputError(f"--base-dir: pid_splits.json: split {args.split!r} is not a list of problem ids")
    predictions = read_answers(args.result_file, "--result-file")
    r = score_sqa(predictions, problems, [str(x) for x in splits[args.split]],
                  allow_missing=args.allow_missing, source=f"--result-file {args.result_file}",
                  img_from_problems=args.img_from_problems)
    if args.output_file:
        write_json(args.output_file, r["details"], "--output-file", indent=2)
    if args.output_result:
        write_json(args.output_result, {"acc": r["accuracy"], "correct": r["correct"], "count": r["count"],
                                        "results": r["results"], "outputs": r["outputs"]},
                   "--output-result", indent=2)
    print_table(["ScienceQA", "accuracy", "correct", "count"],
                [["all", r["accuracy"], r["correct"], r["count"]],
                 ["IMG", r["img_accuracy"], r["img_correct"], r["img_count"]]],
                title=f"=== ScienceQA {args.split} (percent; the paper reports IMG) ===")
    print(f"Unparsed answers: {r['failed_parse']}  Missing predictions: {r['missing']}")
    print_scored(r["answered"], r["total"])
    emit_json({"benchmark": "sqa", "img_accuracy": round(r["img_accuracy"], 4),
               "accuracy": round(r["accuracy"], 4), "count": r["count"], "img_count": r["img_count"],
               "failed_parse": r["failed_parse"], "missing": r["missing"], "answered": r["answered"],
               "total": r["total"]})
