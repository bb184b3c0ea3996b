"""TextVQA val: VQA soft accuracy with the EvalAI normalizer (as llava/eval/eval_textvqa.py).

Answers are matched to annotations by TextVQA ``question_id``. LLaVA's own question file
(llava_textvqa_val_v051_ocr.jsonl) instead puts the *image id* in ``question_id``; for such
answers the question text is read from the prompt and matched on (image_id, question), which is
what LLaVA's eval_textvqa does.

LLaVA quirks kept by default (the numbers are LLaVA's):
- "repeated pair": eval_textvqa keys annotations by (image_id, question) in a dict, so when a
  pair repeats, every answer to it is scored against the *last* annotation of the pair.
  --repeats-in-order scores the k-th answer against the k-th annotation instead.
- "32 periods" of the normalizer (vqa_normalize); --strip-all-periods.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Dict, List, Tuple

from .common import (InputError, add_period_flag, emit_json, pct, preview, print_scored, print_table,
                     read_answers, read_json)
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


def _match(ans, by_qid, by_img_q, matched, repeats_in_order: bool):
    """(the annotation this answer stands for, the one it is scored against): the same, except
    for a repeated (image, question) pair, which LLaVA scores against the pair's last one."""
    qid = ans["question_id"]
    ann = by_qid.get(qid)
    if ann is None and isinstance(qid, str) and qid.isdigit():
        ann = by_qid.get(int(qid))
    if ann is not None or "prompt" not in ans:
        return ann, ann
    try:
        candidates = by_img_q.get((qid, question_from_prompt(ans["prompt"])), [])
    except ValueError:
        candidates = []
    if not candidates:
        return None, None
    # A repeated (image, question) stands for the next annotation not yet answered.
    free = [c for c in candidates if c["question_id"] not in matched]
    ann = free[0] if free else candidates[0]
    return ann, ann if repeats_in_order else candidates[-1]


def score_textvqa(answers: List[Dict[str, Any]], annotations: List[Dict[str, Any]],
                  source: str = "--answers-file", allow_missing: bool = False,
                  repeats_in_order: bool = False, strip_all_periods: bool = False) -> Dict[str, Any]:
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
        ann, scored_against = _match(ans, by_qid, by_img_q, matched, repeats_in_order)
        if ann is None:
            unmatched.append(f"{ans['question_id']} (line {ans.get('__line__', '?')})")
            continue
        if ann["question_id"] in matched:
            raise InputError(f"{source}: two answers for TextVQA question {ann['question_id']} "
                             f"(line {ans.get('__line__', '?')})")
        matched[ann["question_id"]] = (ans, scored_against)
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
        scores = vqa_answer_scores(ann["answers"], strip_all_periods)
        total += scores.get(normalize_vqa_answer(ans["text"], strip_all_periods), 0.0)
    return {"accuracy": pct(total, len(matched)), "samples": len(matched), "missing": len(missing),
            "answered": len(matched), "total": len(by_qid)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl")
    p.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only the answered questions when some annotated ones have no answer")
    p.add_argument("--repeats-in-order", action="store_true",
                   help="corrected value: score the k-th answer to a repeated (image, question) against the "
                        "k-th annotation (default: LLaVA's eval_textvqa, which uses the last one for all)")
    add_period_flag(p)


def run(args: argparse.Namespace) -> None:
    answers = read_answers(args.answers_file)
    ann = read_json(args.annotation_file, "--annotation-file")
    if not isinstance(ann, dict) or not isinstance(ann.get("data"), list):
        raise InputError(f"--annotation-file: {args.annotation_file} has no 'data' list")
    r = score_textvqa(answers, ann["data"], source=f"--answers-file {args.answers_file}",
                      allow_missing=args.allow_missing, repeats_in_order=args.repeats_in_order,
                      strip_all_periods=args.strip_all_periods)
    print_table(["TextVQA", "accuracy", "samples", "unanswered"],
                [["val", r["accuracy"], r["samples"], r["missing"]]], title="=== TextVQA (VQA accuracy, percent) ===")
    print_scored(r["answered"], r["total"])
    emit_json({"benchmark": "textvqa", "accuracy": round(r["accuracy"], 4), "samples": r["samples"],
               "missing": r["missing"], "answered": r["answered"], "total": r["total"]})
