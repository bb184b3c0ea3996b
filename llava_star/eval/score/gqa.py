"""GQA testdev-balanced: convert LLaVA answers to GQA predictions and score exact match.

The conversion is LLaVA's convert_gqa_for_eval (trailing periods stripped, lowercased); the
accuracy is the official GQA eval's headline: exact string match over balanced questions.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List

from .common import (InputError, emit_json, index_by, pct, preview, print_scored, print_table, read_answers,
                     read_json, write_json)


def gqa_prediction(text: str) -> str:
    return text.rstrip(".").lower()


def convert_gqa_predictions(answers: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    # GQA question ids are strings in the questions json; the official eval looks them up as such.
    return [{"questionId": str(a["question_id"]), "prediction": gqa_prediction(a["text"])} for a in answers]


def score_gqa(answers: List[Dict[str, Any]], questions: Dict[str, Dict[str, Any]],
              allow_missing: bool = False, source: str = "--answers-file") -> Dict[str, Any]:
    """``questions`` is the GQA json (question id -> {question, answer, isBalanced, types, ...})."""
    if not isinstance(questions, dict):
        raise InputError("--questions: expected a JSON object mapping question id -> question")
    preds = {k: gqa_prediction(a["text"])
             for k, a in index_by(answers, "question_id", source, keyfunc=str).items()}
    extra = [k for k in preds if k not in questions]
    if extra:
        raise InputError(f"{source}: {len(extra)} answers have a question_id not in --questions: {preview(extra)}")
    # Like the official eval, only balanced questions count (all of testdev_balanced are).
    scored = {k: q for k, q in questions.items() if q.get("isBalanced", True)}
    missing = [k for k in scored if k not in preds]
    if missing and not allow_missing:
        raise InputError(f"{source}: {len(missing)} of {len(scored)} questions have no answer: "
                         f"{preview(missing)} (pass --allow-missing to count them as wrong)")
    correct = 0
    by_type: Dict[str, List[int]] = {}
    for k, q in scored.items():
        if "answer" not in q:
            raise InputError(f"--questions: question {k!r} has no 'answer'")
        ok = int(preds.get(k) == q["answer"])
        correct += ok
        t = (q.get("types") or {}).get("structural")
        if t:
            by_type.setdefault(t, [0, 0])
            by_type[t][0] += ok
            by_type[t][1] += 1
    return {"accuracy": pct(correct, len(scored)), "correct": correct, "questions": len(scored),
            "missing": len(missing), "answered": len(scored) - len(missing), "total": len(scored),
            "by_structural_type": {t: pct(c, n) for t, (c, n) in sorted(by_type.items())}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl")
    p.add_argument("--questions", required=True, help="GQA testdev_balanced_questions.json")
    p.add_argument("--predictions-out", help="write GQA predictions json ([{questionId, prediction}]) here")
    p.add_argument("--allow-missing", action="store_true",
                   help="score even if some questions have no answer (they count as wrong)")


def run(args: argparse.Namespace) -> None:
    answers = read_answers(args.answers_file)
    questions = read_json(args.questions, "--questions")
    r = score_gqa(answers, questions, allow_missing=args.allow_missing,
                  source=f"--answers-file {args.answers_file}")
    if args.predictions_out:
        write_json(args.predictions_out, convert_gqa_predictions(answers), "--predictions-out")
        print(f"Wrote {len(answers)} predictions to {args.predictions_out}")
    rows = [["all", r["accuracy"], r["correct"], r["questions"]]]
    rows += [[f"  {t}", acc, "", ""] for t, acc in r["by_structural_type"].items()]
    print_table(["GQA", "accuracy", "correct", "questions"], rows, title="=== GQA (exact match, percent) ===")
    print(f"Missing answers: {r['missing']}")
    print_scored(r["answered"], r["total"])
    emit_json({"benchmark": "gqa", "accuracy": round(r["accuracy"], 4), "correct": r["correct"],
               "questions": r["questions"], "missing": r["missing"], "answered": r["answered"], "total": r["total"]})
