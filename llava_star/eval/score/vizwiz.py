"""VizWiz-VQA test: the EvalAI submission file (as LLaVA's convert_vizwiz_for_submission).

The server needs an answer for every test image, so a missing answer is an error here (as in
LLaVA's converter); --allow-missing (smoke runs) uploads "" for it instead.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List

from .common import (InputError, add_period_flag, emit_json, index_by, preview, print_scored, print_table,
                     read_answers, read_jsonl, require_keys, write_json)
from .vqa_normalize import normalize_vqa_answer


def make_vizwiz_submission(answers: List[Dict[str, Any]], split: List[Dict[str, Any]],
                           source: str = "--answers-file", allow_missing: bool = False,
                           strip_all_periods: bool = False) -> Dict[str, Any]:
    """``split`` is llava_test.jsonl's lines (question_id, image, text)."""
    by_id = index_by(answers, "question_id", source, keyfunc=str)
    split_by_id = index_by(split, "question_id", "--test-split", keyfunc=str)
    extra = [k for k in by_id if k not in split_by_id]
    if extra:
        raise InputError(f"{source}: {len(extra)} answers have a question_id not in --test-split: {preview(extra)}")
    missing = [k for k in split_by_id if k not in by_id]
    if missing and not allow_missing:
        raise InputError(f"{source}: {len(missing)} of {len(split_by_id)} test questions have no answer: "
                         f"{preview(missing)} (pass --allow-missing to upload \"\" for them)")
    upload = [{"image": q["image"],
               "answer": normalize_vqa_answer(by_id[k]["text"], strip_all_periods) if k in by_id else ""}
              for k, q in split_by_id.items()]
    n_unanswerable = sum(u["answer"] == "unanswerable" for u in upload)
    return {"upload": upload, "questions": len(upload), "unanswerable": n_unanswerable,
            "answered": len(upload) - len(missing), "total": len(upload)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl")
    p.add_argument("--test-split", required=True, help="llava_test.jsonl (VizWiz test questions with image names)")
    p.add_argument("--dst", required=True, help="write the EvalAI upload ([{image, answer}]) here")
    p.add_argument("--allow-missing", action="store_true",
                   help="upload \"\" for unanswered questions instead of refusing (a partial run)")
    add_period_flag(p)


def run(args: argparse.Namespace) -> None:
    answers = read_answers(args.answers_file)
    split = read_jsonl(args.test_split, "--test-split")
    require_keys(split, ("question_id", "image"), args.test_split, "--test-split")
    sub = make_vizwiz_submission(answers, split, source=f"--answers-file {args.answers_file}",
                                 allow_missing=args.allow_missing, strip_all_periods=args.strip_all_periods)
    write_json(args.dst, sub["upload"], "--dst")
    print_table(["VizWiz upload", "questions", "'unanswerable'"],
                [[args.dst, sub["questions"], sub["unanswerable"]]], title="=== VizWiz EvalAI submission ===")
    print_scored(sub["answered"], sub["total"])
    emit_json({"benchmark": "vizwiz", "dst": args.dst, "questions": sub["questions"],
               "unanswerable": sub["unanswerable"], "answered": sub["answered"], "total": sub["total"]})
