"""TextVQA val: VQA soft accuracy with the EvalAI normalizer (as llava/eval/eval_textvqa.py).

Answers are matched to annotations by TextVQA ``question_id``. LLaVA's own question file
(llava_textvqa_val_v051_ocr.jsonl) instead puts the *image id* in ``question_id``; for such
answers the question text is read from the prompt and matched on (image_id, question), which is
what LLaVA's eval_textvqa does.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Dict, List, Tuple

from .common import InputError, emit_json, pct, preview, print_table, read_answers, read_json
from .vqa_normalize import normalize_vqa_answer, vqa_answer_scores


def question_from_prompt(prompt: str) -> str:
    """The question inside a LLaVA TextVQA prompt (with or without the OCR-token line)."""
    if prompt.startswith("OCR tokens: "):
        m = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if m:
            return m.group(1).lower()
    lines = prompt.split("\n")
    if "Reference OCR token: " in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith("Reference OCR token:") else lines[0]).lower()
    if len(lines) == 2:
        return lines[0].lower()
    raise ValueError(f"cannot find the question in prompt {prompt!r}")


def score_textvqa(answers: List[Dict[str, Any]], annotations: List[Dict[str, Any]],
                  source: str = "--answers-file", allow_missing: bool = False) -> Dict[str, Any]:
    """``annotations`` is the ``data`` list of TextVQA_0.5.1_val.json."""
    by_qid: Dict[Any, Dict[str, Any]] = {}
    # (image_id, question) can repeat in TextVQA; keep every candidate, in file order.
    by_img_q: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for a in annotations:
        for k in ("question_id", "answers"):
            if not isinstance(a, dict) or k not in a:
                raise InputError(f"--annotation-file: an entry has no {k!r}: {preview([a], 1)}")
        if not isinstance(a["answers"], list) or not all(isinstance(x, str) for x in a["answers"]):
            raise InputError(f"--annotation-file: question {a['question_id']!r}: 'answers' is not a "
                                  f"list of strings")
        by_qid[a["question_id"]] = a
        if "image_id" in a and "question" in a:
            by_img_q.setdefault((a["image_id"], a["question"].lower()), []).append(a)

    matched: Dict[Any, Tuple[Dict[str, Any], Dict[str, Any]]] = {}
    unmatched = []
    for ans in answers:
        qid = ans["question_id"]
        ann = by_qid.get(qid)
        if ann is None and isinstance(qid, str) and qid.isdigit():
            ann = by_qid.get(int(qid))
        if ann is None and "prompt" in ans:
            try:
                candidates = by_img_q.get((qid, question_from_prompt(ans["prompt"])), [])
            except ValueError:
                candidates = []
            # A repeated (image, question) takes the next annotation not yet answered.
            free = [c for c in candidates if c["question_id"] not in matched]
            ann = free[0] if free else (candidates[0] if candidates else None)
        if ann is None:
            unmatched.append(f"{qid} (line {ans.get('__line__', '?')})")
            continue
        if ann["question_id"] in matched:
            raise InputError(f"{source}: two answers for TextVQA question {ann['question_id']} "
                                  f"(line {ans.get('__line__', '?')})")
        matched[ann["question_id"]] = (ans, ann)
    if unmatched:
        raise InputError(f"{source}: {len(unmatched)} answers match no question in --annotation-file: "
                              f"{preview(unmatched, 3)}")
    missing = [k for k in by_qid if k not in matched]
    if missing and not allow_missing:
        raise InputError(f"{source}: {len(missing)} of {len(by_qid)} annotated questions have no answer: "
                              f"{preview(missing)} (pass --allow-missing to score only the answered ones)")
    if not matched:
        raise InputError(f"{source}: no answers to score")

    total = 0.0
    for ans, ann in matched.values():
        if not ann["answers"]:
            raise InputError(f"--annotation-file: question {ann['question_id']} has no human answers")
        total += vqa_answer_scores(ann["answers"]).get(normalize_vqa_answer(ans["text"]), 0.0)
    return {"accuracy": pct(total, len(matched)), "samples": len(matched), "missing": len(missing)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl")
    p.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only the answered questions when some annotated ones have no answer")


def run(args: argparse.Namespace) -> None:
    answers = read_answers(args.answers_file)
    ann = read_json(args.annotation_file, "--annotation-file")
    if not isinstance(ann, dict) or not isinstance(ann.get("data"), list):
        raise InputError(f"--annotation-file: {args.annotation_file} has no 'data' list")
    r = score_textvqa(answers, ann["data"], source=f"--answers-file {args.answers_file}",
                      allow_missing=args.allow_missing)
    print_table(["TextVQA", "accuracy", "samples", "unanswered"],
                [["val", r["accuracy"], r["samples"], r["missing"]]], title="=== TextVQA (VQA accuracy, percent) ===")
    emit_json({"benchmark": "textvqa", "accuracy": round(r["accuracy"], 4), "samples": r["samples"],
               "missing": r["missing"]})
