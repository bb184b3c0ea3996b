"""POPE (COCO adversarial/popular/random): yes/no object hallucination, as LLaVA's eval_pope.

LLaVA pairs answers with annotation lines *by position*, so a question file that does not line
up with the annotation files would silently produce a wrong number. Here every split of the
question file is checked against its ``coco_pope_<split>.json`` line by line first.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List

from .common import (InputError, check_dir, emit_json, index_by, pct, preview, print_scored, print_table,
                     read_answers, read_jsonl, require_keys, strip_llava_suffix)

def parse_pope_answer(text: str) -> str:
    """LLaVA's rule: first sentence, commas dropped; a 'No'/'not'/'no' word means no."""
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def check_alignment(split: str, questions: List[Dict[str, Any]], annotations: List[Dict[str, Any]],
                    ann_source: str) -> None:
    """Refuse if the annotation lines are not the question-file lines of this split, in order.

    Image and question text must be equal (the question file's text carries LLaVA's suffix).
    Ids must differ by one constant per split: LLaVA's question file numbers split k as
    k * 10**7 + the annotation id.
    """
    if len(questions) != len(annotations):
        raise InputError(f"{ann_source}: {len(annotations)} annotations but the question file has "
                         f"{len(questions)} questions of category {split!r}")
    offset = None
    for q, a in zip(questions, annotations):
        where = f"{ann_source}, line {a.get('__line__', '?')} vs --question-file line {q.get('__line__', '?')}"
        if q["image"] != a["image"]:
            raise InputError(f"{where}: image {a['image']!r} != {q['image']!r} (misaligned POPE split {split!r})")
        if strip_llava_suffix(q["text"]) != a["text"].strip():
            raise InputError(f"{where}: question {a['text']!r} != {strip_llava_suffix(q['text'])!r} "
                             f"(misaligned POPE split {split!r})")
        try:
            diff = int(q["question_id"]) - int(a["question_id"])
        except (TypeError, ValueError):
            raise InputError(f"{where}: non-integer question_id") from None
        if offset is None:
            offset = diff
        elif diff != offset:
            raise InputError(f"{where}: question_id {a['question_id']} does not line up with "
                             f"{q['question_id']} (misaligned POPE split {split!r})")


def binary_metrics(preds: List[str], labels: List[str]) -> Dict[str, Any]:
    tp = sum(p == "yes" and l == "yes" for p, l in zip(preds, labels))
    fp = sum(p == "yes" and l == "no" for p, l in zip(preds, labels))
    tn = sum(p == "no" and l == "no" for p, l in zip(preds, labels))
    fn = sum(p == "no" and l == "yes" for p, l in zip(preds, labels))
    precision, recall = pct(tp, tp + fp), pct(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(preds), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "accuracy": pct(tp + tn, len(preds)), "precision": precision, "recall": recall,
            "f1": f1, "yes_ratio": pct(preds.count("yes"), len(preds))}


def score_pope(answers: List[Dict[str, Any]], questions: List[Dict[str, Any]],
               annotations: Dict[str, List[Dict[str, Any]]], source: str = "--answers-file",
               ann_sources: Dict[str, str] = None, allow_missing: bool = False) -> Dict[str, Any]:
    """Metrics (in percent) per split and the mean F1.

    ``questions`` are question-file lines (question_id, image, text, category); ``annotations``
    maps split -> its annotation lines (question_id, image, text, label) in file order.
    """
    ann_sources = ann_sources or {s: f"annotations[{s!r}]" for s in annotations}
    by_split: Dict[str, List[Dict[str, Any]]] = {}
    for q in questions:
        by_split.setdefault(q["category"], []).append(q)
    for split in by_split:
        if split not in annotations:
            raise InputError(f"--annotation-dir: no coco_pope_{split}.json for question category {split!r}")
    for split in annotations:
        if split not in by_split:
            raise InputError(f"--question-file: no questions of category {split!r}, "
                             f"but {ann_sources[split]} exists")
        check_alignment(split, by_split[split], annotations[split], ann_sources[split])

    qids = index_by(questions, "question_id", "--question-file")
    ans = index_by(answers, "question_id", source)
    extra = [k for k in ans if k not in qids]
    if extra:
        raise InputError(f"{source}: {len(extra)} answers have a question_id not in --question-file: {preview(extra)}")
    missing = [k for k in qids if k not in ans]
    if missing and not allow_missing:
        raise InputError(f"{source}: {len(missing)} questions of --question-file have no answer: {preview(missing)} "
                         f"(pass --allow-missing to score the answered ones only)")
    # LLaVA's runner writes the question text as the answer's prompt: an answers file made
    # from another question file with the same ids would otherwise be scored silently.
    for k, a in ans.items():
        if "prompt" in a and a["prompt"] != qids[k]["text"]:
            raise InputError(f"{source}, line {a.get('__line__', '?')}: the prompt of question {k!r} is "
                             f"{a['prompt']!r} but --question-file asks {qids[k]['text']!r} "
                             f"(answers made from a different question file?)")

    splits = {}
    for split in sorted(annotations):
        labels = _labels(annotations[split], ann_sources[split])
        # the question file and the annotations line up (checked above): pair them by position
        pairs = [(parse_pope_answer(ans[q["question_id"]]["text"]), label)
                 for q, label in zip(by_split[split], labels) if q["question_id"] in ans]
        if pairs:
            splits[split] = binary_metrics([p for p, _ in pairs], [l for _, l in pairs])
    mean_f1 = sum(m["f1"] for m in splits.values()) / len(splits) if splits else 0.0
    return {"splits": splits, "mean_f1": mean_f1, "answers": len(answers), "answered": len(ans),
            "total": len(qids)}


def _labels(annotations: List[Dict[str, Any]], source: str) -> List[str]:
    labels = []
    for a in annotations:
        label = str(a["label"]).strip().lower()
        if label not in ("yes", "no"):
            raise InputError(f"{source}, line {a.get('__line__', '?')}: label {a['label']!r} is not yes/no")
        labels.append(label)
    return labels


def load_annotations(annotation_dir: str) -> Dict[str, Any]:
    check_dir(annotation_dir, "--annotation-dir")
    anns, sources = {}, {}
    for name in sorted(os.listdir(annotation_dir)):
        if name.startswith("coco_pope_") and name.endswith(".json"):
            split = name[len("coco_pope_"): -len(".json")]
            path = os.path.join(annotation_dir, name)
            sources[split] = f"--annotation-dir {path}"
            anns[split] = read_jsonl(path, "--annotation-dir")
            require_keys(anns[split], ("question_id", "image", "text", "label"), path, "--annotation-dir")
    if not anns:
        raise InputError(f"--annotation-dir: no coco_pope_<split>.json files in {annotation_dir}")
    return {"annotations": anns, "sources": sources}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl")
    p.add_argument("--question-file", required=True, help="llava_pope_test.jsonl (category = split)")
    p.add_argument("--annotation-dir", required=True, help="directory with coco_pope_<split>.json files")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only the answered questions (a partial run; its F1 is not POPE's)")


def run(args: argparse.Namespace) -> None:
    answers = read_answers(args.answers_file)
    questions = read_jsonl(args.question_file, "--question-file")
    require_keys(questions, ("question_id", "image", "text", "category"), args.question_file, "--question-file")
    loaded = load_annotations(args.annotation_dir)
    r = score_pope(answers, questions, loaded["annotations"], source=f"--answers-file {args.answers_file}",
                   ann_sources=loaded["sources"], allow_missing=args.allow_missing)
    rows = [[s, m["n"], m["f1"], m["accuracy"], m["precision"], m["recall"], m["yes_ratio"],
             m["tp"], m["fp"], m["tn"], m["fn"]] for s, m in r["splits"].items()]
    print_table(["split", "n", "F1", "acc", "prec", "recall", "yes%", "TP", "FP", "TN", "FN"], rows,
                title="=== POPE (percent) ===")
    # Papers quote one decimal; print it from the unrounded value (85.947 -> 85.9, not 86.0).
    print("F1 (1 dp): " + "  ".join(f"{s} {m['f1']:.1f}" for s, m in r["splits"].items())
          + f"  mean {r['mean_f1']:.1f}")
    print(f"Mean F1: {r['mean_f1']:.2f}")
    print_scored(r["answered"], r["total"])
    out = {"benchmark": "pope", "mean_f1": round(r["mean_f1"], 4), "answered": r["answered"], "total": r["total"]}
    for s, m in r["splits"].items():
        out[s] = {"f1": round(m["f1"], 4), "accuracy": round(m["accuracy"], 4),
                  "precision": round(m["precision"], 4), "recall": round(m["recall"], 4),
                  "yes_ratio": round(m["yes_ratio"], 4), "n": m["n"]}
    emit_json(out)
