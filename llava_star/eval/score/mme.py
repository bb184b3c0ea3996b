"""MME: yes/no perception and cognition subtasks, scored like the official MME eval tool.

Ground truth is the official ``MME_Benchmark_release_version/`` directory. Per subtask the
score is acc + acc+ (both in percent, max 200): acc over questions, acc+ over images whose
questions are all right. Perception and Cognition are sums of their subtask scores.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Tuple

from .common import (InputError, check_dir, decode_utf8, emit_json, pct, preview, print_scored, print_table,
                     read_answers, require_keys, strip_llava_suffix)

PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR"]
COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]
CATEGORIES = PERCEPTION + COGNITION
# These five keep images in <cat>/images/ and ground truth in <cat>/questions_answers_YN/;
# the other nine keep <stem>.txt beside the image in <cat>/.
SUBDIR_CATEGORIES = {"artwork", "celebrity", "landmark", "posters", "scene"}
YN_DIR = "questions_answers_YN"

# Key of one GT question: (category, image stem, normalized question).
GTKey = Tuple[str, str, str]


def normalize_question(q: str) -> str:
    """Question text as both the GT files and LLaVA prompts can be reduced to.

    The GT says "... ? Please answer yes or no." (sometimes with two spaces); LLaVA's MME
    question file replaces that with "\\nAnswer the question using a single word or phrase.".
    """
    q = strip_llava_suffix(q).replace("Please answer yes or no.", "")
    return " ".join(q.split())


def parse_yes_no(answer: str) -> str:
    """Official MME rule: exact yes/no, else look for yes/no in the first 4 characters."""
    a = answer.lower().strip()
    if a in ("yes", "no"):
        return a
    head = a[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def _category_dirs(gt_dir: str) -> Dict[str, str]:
    """Official category name -> its directory (matched case-insensitively)."""
    present = {name.lower(): name for name in os.listdir(gt_dir)
               if os.path.isdir(os.path.join(gt_dir, name))}
    out = {}
    for cat in CATEGORIES:
        if cat.lower() not in present:
            raise InputError(f"--gt-dir: category directory {cat!r} not found in {gt_dir} "
                             f"(expected the MME_Benchmark_release_version/ layout)")
        out[cat] = os.path.join(gt_dir, present[cat.lower()])
    return out


def load_mme_gt(gt_dir: str) -> Dict[str, Dict[str, List[Tuple[str, str]]]]:
    """Read the official layout: {category: {image stem: [(question, 'yes'|'no'), ...]}}."""
    check_dir(gt_dir, "--gt-dir")
    gt: Dict[str, Dict[str, List[Tuple[str, str]]]] = {}
    for cat, cat_dir in _category_dirs(gt_dir).items():
        txt_dir = os.path.join(cat_dir, YN_DIR) if cat in SUBDIR_CATEGORIES else cat_dir
        if not os.path.isdir(txt_dir):
            raise InputError(f"--gt-dir: {txt_dir} not found (category {cat!r})")
        images: Dict[str, List[Tuple[str, str]]] = {}
        for name in sorted(os.listdir(txt_dir)):
            if not name.endswith(".txt"):
                continue
            path = os.path.join(txt_dir, name)
            pairs = []
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    line = decode_utf8(raw, path, "--gt-dir", lineno).rstrip("\r\n")
                    if not line.strip():
                        continue
                    fields = line.split("\t")
                    if len(fields) != 2 or fields[1].strip().lower() not in ("yes", "no"):
                        raise InputError(f"--gt-dir: {path}, line {lineno}: expected "
                                         f"'question<TAB>Yes|No', got {line!r}")
                    pairs.append((fields[0], fields[1].strip().lower()))
            if pairs:
                images[name[: -len(".txt")]] = pairs
        if not images:
            raise InputError(f"--gt-dir: no ground-truth .txt files in {txt_dir}")
        gt[cat] = images
    return gt


def _answer_key(ans: Dict[str, Any], cat_lookup: Dict[str, str], source: str) -> GTKey:
    qid = str(ans["question_id"])
    where = f"{source}, line {ans.get('__line__', '?')}"
    parts = qid.replace("\\", "/").split("/")
    # question_id is "<category>/<image>" or "<category>/images/<image>".
    if len(parts) < 2 or parts[0].lower() not in cat_lookup:
        raise InputError(f"{where}: question_id {qid!r} does not start with an MME category "
                         f"({', '.join(CATEGORIES)})")
    stem = os.path.splitext(parts[-1])[0]
    return cat_lookup[parts[0].lower()], stem, normalize_question(ans["prompt"])


def score_mme(answers: List[Dict[str, Any]], gt: Dict[str, Dict[str, List[Tuple[str, str]]]],
              allow_missing: bool = False, source: str = "--answers-file") -> Dict[str, Any]:
    """Score LLaVA answers (dicts with question_id, prompt, text) against :func:`load_mme_gt`."""
    cat_lookup = {c.lower(): c for c in gt}
    truth: Dict[GTKey, str] = {}
    for cat, images in gt.items():
        for stem, pairs in images.items():
            for q, label in pairs:
                key = (cat, stem, normalize_question(q))
                if key in truth:
                    raise InputError(f"--gt-dir: {cat}/{stem}.txt has the question {q!r} twice")
                truth[key] = label

    preds: Dict[GTKey, str] = {}
    unmatched = []
    for ans in answers:
        key = _answer_key(ans, cat_lookup, source)
        if key not in truth:
            unmatched.append(f"{ans['question_id']}: {key[2]!r} (line {ans.get('__line__', '?')})")
            continue
        if key in preds:
            raise InputError(f"{source}: two answers to the same question {ans['question_id']}: "
                             f"{key[2]!r} (line {ans.get('__line__', '?')})")
        preds[key] = parse_yes_no(ans["text"])
    if unmatched:
        raise InputError(f"{source}: {len(unmatched)} answers match no ground-truth question "
                         f"in --gt-dir: {preview(unmatched, 3)}")

    missing = [k for k in truth if k not in preds]
    if missing and not allow_missing:
        raise InputError(
                         f"{source}: {len(missing)} of {len(truth)} ground-truth questions have no answer, e.g. "
                         f"{preview([f'{c}/{s}: {q!r}' for c, s, q in missing], 3)} "
                         f"(pass --allow-missing to count them as wrong)")

    subtasks: Dict[str, Dict[str, Any]] = {}
    for cat, images in gt.items():
        n_q = n_right = n_img_right = n_other = n_missing = 0
        for stem, pairs in images.items():
            all_right = True
            for q, label in pairs:
                key = (cat, stem, normalize_question(q))
                pred = preds.get(key)
                if pred is None:
                    n_missing += 1
                    pred = "missing"  # never equals a label: counted wrong
                elif pred == "other":
                    n_other += 1
                n_q += 1
                if pred == label:
                    n_right += 1
                else:
                    all_right = False
            n_img_right += all_right
        acc, acc_plus = pct(n_right, n_q), pct(n_img_right, len(images))
        subtasks[cat] = {"score": acc + acc_plus, "acc": acc, "acc_plus": acc_plus,
                         "questions": n_q, "images": len(images), "other": n_other,
                         "missing": n_missing}

    perception = sum(subtasks[c]["score"] for c in PERCEPTION)
    cognition = sum(subtasks[c]["score"] for c in COGNITION)
    return {"perception": perception, "cognition": cognition, "total": perception + cognition,
            "subtasks": subtasks, "answers": len(answers), "missing": len(missing),
            "answered": len(preds), "total": len(truth)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers-file", required=True, help="LLaVA answers .jsonl for llava_mme.jsonl")
    p.add_argument("--gt-dir", required=True,
                   help="the official MME_Benchmark_release_version/ directory (ground-truth .txt files)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score even if some ground-truth questions have no answer (they count as wrong)")


def run(args: argparse.Namespace) -> None:
    answers = read_answers(args.answers_file)
    require_keys(answers, ("prompt",), args.answers_file, "--answers-file")
    gt = load_mme_gt(args.gt_dir)
    r = score_mme(answers, gt, allow_missing=args.allow_missing, source=f"--answers-file {args.answers_file}")
    for group, cats in (("Perception", PERCEPTION), ("Cognition", COGNITION)):
        rows = [[c, r["subtasks"][c]["score"], r["subtasks"][c]["acc"], r["subtasks"][c]["acc_plus"],
                 r["subtasks"][c]["questions"], r["subtasks"][c]["other"], r["subtasks"][c]["missing"]]
                for c in cats]
        total = r["perception"] if group == "Perception" else r["cognition"]
        print_table(["subtask", "score", "acc", "acc+", "questions", "other", "missing"], rows,
                    title=f"=== MME {group}: {total:.2f} ===")
    print(f"Perception: {r['perception']:.2f}  Cognition: {r['cognition']:.2f}  "
          f"Total: {r['total']:.2f}  (answers: {r['answers']}, missing: {r['missing']})")
    print(f"Paper style (1 dp): Perception {r['perception']:.1f}  Cognition {r['cognition']:.1f}")
    print_scored(r["answered"], r["total"])
    emit_json({"benchmark": "mme", "perception": round(r["perception"], 4),
               "cognition": round(r["cognition"], 4), "total": round(r["total"], 4),
               "answers": r["answers"], "missing": r["missing"], "answered": r["answered"], "total": r["total"],
               "subtasks": {c: round(r["subtasks"][c]["score"], 4) for c in CATEGORIES}})
