"""MM-Vet: the results file the MM-Vet GPT-4 grader takes, {"v1_<n>": answer}.

Scoring itself needs the GPT-4 judge (online), so this only converts, checking the ids.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Dict, List, Optional

from .common import (InputError, emit_json, preview, print_scored, print_table, read_answers, read_jsonl,
                     require_keys, write_json)

_KEY = re.compile(r"^v1_\d+$")


def mmvet_key(question_id: Any) -> str:
    """LLaVA's MM-Vet question ids are the n of the grader's "v1_<n>" (either form accepted)."""
    s = str(question_id)
    if s.isdigit():
        return f"v1_{int(s)}"
    if _KEY.match(s):
        return s
    raise ValueError(s)


def make_mmvet_results(answers: List[Dict[str, Any]], questions: Optional[List[Dict[str, Any]]] = None,
                       source: str = "--answers-file", allow_missing: bool = False) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for a in answers:
        try:
            key = mmvet_key(a["question_id"])
        except ValueError:
            raise InputError(f"{source}, line {a.get('__line__', '?')}: question_id {a['question_id']!r} "
                             f"is neither a number nor 'v1_<n>'") from None
        if key in out:
            raise InputError(f"{source}, line {a.get('__line__', '?')}: duplicate question_id {a['question_id']!r}")
        out[key] = a["text"]
    if questions is not None:
        try:
            expected = {mmvet_key(q["question_id"]) for q in questions}
        except ValueError as e:
            raise InputError(f"--question-file: question_id {str(e)!r} is neither a number nor 'v1_<n>'") from None
        extra = sorted(set(out) - expected)
        missing = sorted(expected - set(out))
        if extra:
            raise InputError(f"{source}: {len(extra)} answers are not in --question-file: {preview(extra)}")
        if missing and not allow_missing:
            raise InputError(f"{source}: {len(missing)} of {len(expected)} questions have no answer: {preview(missing)}")
    # Sort by n so the file reads in question order.
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][3:])))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl for llava-mm-vet.jsonl")
    p.add_argument("--dst", required=True, help="write the grader's results json ({\"v1_<n>\": answer}) here")
    p.add_argument("--question-file", help="llava-mm-vet.jsonl: if given, every question must be answered")
    p.add_argument("--allow-missing", action="store_true",
                   help="with --question-file: write the answered questions only (a partial run)")


def run(args: argparse.Namespace) -> None:
    answers = read_answers(args.answers_file)
    questions = None
    if args.question_file:
        questions = read_jsonl(args.question_file, "--question-file")
        require_keys(questions, ("question_id",), args.question_file, "--question-file")
    results = make_mmvet_results(answers, questions, source=f"--answers-file {args.answers_file}",
                                 allow_missing=args.allow_missing)
    total = len(questions) if questions is not None else len(results)
    write_json(args.dst, results, "--dst", indent=2)
    empty = sum(not v.strip() for v in results.values())
    print_table(["MM-Vet results", "answers", "empty"], [[args.dst, len(results), empty]],
                title="=== MM-Vet (grade with the MM-Vet GPT-4 evaluator) ===")
    print_scored(len(results), total)
    emit_json({"benchmark": "mmvet", "dst": args.dst, "answers": len(results), "empty": empty,
               "answered": len(results), "total": total})
