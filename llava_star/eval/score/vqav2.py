"""VQAv2: the EvalAI test-dev submission file, or local VQA accuracy on an annotated val split.

Submission follows LLaVA's convert_vqav2_for_submission: one entry for every question of the
full test2015 split (the server wants all of them); questions not answered (everything outside
test-dev when only test-dev was run) get "" and are counted.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

from .common import (InputError, add_period_flag, emit_json, index_by, pct, preview, print_scored, print_table,
                     read_answers,
                     read_json, read_jsonl, require_keys, write_json)
from .vqa_normalize import normalize_vqa_answer, vqa_accuracy


def _qid(x: Any, source: str = "--test-split") -> int:
    """VQAv2 question ids are integers; accept "123" too, refuse anything else."""
    try:
        return int(x)
    except (TypeError, ValueError):
        raise InputError(f"{source}: question_id {x!r} is not an integer (VQAv2 ids are)") from None


def _answers_by_id(answers: List[Dict[str, Any]], source: str) -> Dict[int, Dict[str, Any]]:
    return index_by(answers, "question_id", source, keyfunc=lambda x: _qid(x, source))


def make_vqav2_submission(answers: List[Dict[str, Any]], split: List[Dict[str, Any]],
                          source: str = "--answers-file", strip_all_periods: bool = False) -> Dict[str, Any]:
    """``split`` is llava_vqav2_mscoco_test2015.jsonl's lines. Returns the upload list and counts."""
    by_id = _answers_by_id(answers, source)
    split_ids = [_qid(q["question_id"]) for q in split]
    split_set = set(split_ids)
    extra = [k for k in by_id if k not in split_set]
    if extra:
        raise InputError(f"{source}: {len(extra)} answers have a question_id not in --test-split: {preview(extra)}")
    upload, missing = [], 0
    for qid in split_ids:
        if qid in by_id:
            upload.append({"question_id": qid, "answer": normalize_vqa_answer(by_id[qid]["text"], strip_all_periods)})
        else:
            upload.append({"question_id": qid, "answer": ""})
            missing += 1
    return {"upload": upload, "answered": len(split_ids) - missing, "missing": missing, "questions": len(split_ids)}


def score_vqav2(answers: List[Dict[str, Any]], annotations: List[Dict[str, Any]],
                split: Optional[List[Dict[str, Any]]] = None, allow_missing: bool = False,
                source: str = "--answers-file", strip_all_periods: bool = False) -> Dict[str, Any]:
    """Local VQA accuracy against ``annotations`` (the 'annotations' list of the VQAv2 json).

    The questions scored are those of ``split`` if given, else every answered question.
    """
    by_id = _answers_by_id(answers, source)
    anns = {}
    for a in annotations:
        if "question_id" not in a or "answers" not in a:
            raise InputError("--annotation-file: an annotation lacks question_id or answers")
        anns[_qid(a["question_id"], "--annotation-file")] = a
    qids = [_qid(q["question_id"]) for q in split] if split is not None else list(by_id)
    if split is not None:
        qid_set = set(qids)
        extra = [k for k in by_id if k not in qid_set]
        if extra:
            raise InputError(f"{source}: {len(extra)} answers have a question_id not in --test-split: {preview(extra)}")
    no_ann = [k for k in qids if k not in anns]
    if no_ann:
        raise InputError(f"--annotation-file: {len(no_ann)} questions have no annotation: {preview(no_ann)}")
    missing = [k for k in qids if k not in by_id]
    if missing and not allow_missing:
        raise InputError(f"{source}: {len(missing)} of {len(qids)} questions have no answer: {preview(missing)} "
                         f"(pass --allow-missing to count them as wrong)")
    if not qids:
        raise InputError(f"{source}: no answers to score")
    total = 0.0
    per_type: Dict[str, List[float]] = {}
    for k in qids:
        ann = anns[k]
        gts = [g.get("answer") if isinstance(g, dict) else g for g in ann["answers"]] \
            if isinstance(ann["answers"], list) else None
        if not gts or not all(isinstance(g, str) for g in gts):
            raise InputError(f"--annotation-file: question {k}: 'answers' is not a non-empty list of "
                             f"answers ({{answer: str}} or str)")
        s = vqa_accuracy(by_id[k]["text"], gts, strip_all_periods) if k in by_id else 0.0
        total += s
        t = ann.get("answer_type")
        if t:
            per_type.setdefault(t, [0.0, 0])
            per_type[t][0] += s
            per_type[t][1] += 1
    return {"accuracy": pct(total, len(qids)), "questions": len(qids), "missing": len(missing),
            "answered": len(qids) - len(missing), "total": len(qids),
            "by_answer_type": {t: pct(s, n) for t, (s, n) in sorted(per_type.items())}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl")
    p.add_argument("--test-split", help="llava_vqav2_mscoco_test2015.jsonl: the questions the upload must cover "
                                        "(with --annotation-file: restricts scoring to these questions)")
    p.add_argument("--dst", help="write the EvalAI upload ([{question_id, answer}]) here; needs --test-split")
    p.add_argument("--annotation-file", help="v2_mscoco_val2014_annotations.json: compute local VQA accuracy instead")
    p.add_argument("--allow-missing", action="store_true",
                   help="with --annotation-file: count unanswered questions as wrong instead of refusing")
    add_period_flag(p)


def run(args: argparse.Namespace) -> None:
    if not args.dst and not args.annotation_file:
        raise InputError("vqav2: give --dst (with --test-split) to write a submission, "
                         "or --annotation-file for local accuracy")
    if args.dst and not args.test_split:
        raise InputError("--dst needs --test-split (the submission must cover every test question)")
    answers = read_answers(args.answers_file)
    source = f"--answers-file {args.answers_file}"
    split = None
    if args.test_split:
        split = read_jsonl(args.test_split, "--test-split")
        require_keys(split, ("question_id",), args.test_split, "--test-split")
    out: Dict[str, Any] = {"benchmark": "vqav2"}
    if args.dst:
        sub = make_vqav2_submission(answers, split, source=source, strip_all_periods=args.strip_all_periods)
        write_json(args.dst, sub["upload"], "--dst")
        print_table(["VQAv2 upload", "questions", "answered", "missing (\"\")"],
                    [[args.dst, sub["questions"], sub["answered"], sub["missing"]]],
                    title="=== VQAv2 EvalAI submission ===")
        print_scored(sub["answered"], sub["questions"])
        out.update({"dst": args.dst, "questions": sub["questions"], "answered": sub["answered"],
                    "missing": sub["missing"], "total": sub["questions"]})
    if args.annotation_file:
        ann = read_json(args.annotation_file, "--annotation-file")
        if not isinstance(ann, dict) or not isinstance(ann.get("annotations"), list):
            raise InputError(f"--annotation-file: {args.annotation_file} has no 'annotations' list")
        r = score_vqav2(answers, ann["annotations"], split=split, allow_missing=args.allow_missing, source=source,
                        strip_all_periods=args.strip_all_periods)
        rows = [["all", r["accuracy"], r["questions"]]] + [[f"  {t}", a, ""] for t, a in r["by_answer_type"].items()]
        print_table(["VQAv2", "accuracy", "questions"], rows, title="=== VQAv2 local VQA accuracy (percent) ===")
        print(f"Missing answers: {r['missing']}")
        print_scored(r["answered"], r["total"])
        out.update({"accuracy": round(r["accuracy"], 4), "scored": r["questions"], "unanswered": r["missing"],
                    "answered": r["answered"], "total": r["total"],
                    "by_answer_type": {t: round(a, 4) for t, a in r["by_answer_type"].items()}})
    emit_json(out)
