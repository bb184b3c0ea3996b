"""Shared helpers for the offline scorers: strict file reading, tables, output.

Every scorer refuses bad input with :class:`InputError` (the runners' error type: a
``SystemExit`` whose exit status is 2) rather than scoring a file that does not line up with
its ground truth: a silently wrong benchmark number is worse than no number.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ..inputs import InputError, check_dir, check_file, decode_utf8, read_json, read_jsonl, require_keys  # noqa: F401

# LLaVA-1.5 appends this to every short-answer question (MME, POPE, GQA, ...).
LLAVA_SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."


def read_answers(path: str, flag: str = "--answers-file") -> List[Dict[str, Any]]:
    """Read a LLaVA answers file (question_id, prompt, text, answer_id, model_id, metadata)."""
    answers = read_jsonl(path, flag)
    if not answers:
        raise InputError(f"{flag}: {path} has no answers (empty file)")
    require_keys(answers, ("question_id", "text"), path, flag)
    for a in answers:
        if not isinstance(a["text"], str):
            raise InputError(f"{flag}: {path}, line {a['__line__']}: 'text' is not a string")
    return answers


def index_by(records: Iterable[Dict[str, Any]], key: str, source: str,
             keyfunc: Optional[Callable[[Any], Any]] = None) -> Dict[Any, Dict[str, Any]]:
    """Map key -> record, refusing duplicates (a duplicate would silently drop an answer)."""
    out: Dict[Any, Dict[str, Any]] = {}
    for rec in records:
        k = rec[key] if keyfunc is None else keyfunc(rec[key])
        if k in out:
            line = rec.get("__line__")
            where = f" (line {line})" if line else ""
            raise InputError(f"{source}: duplicate {key} {rec[key]!r}{where}")
        out[k] = rec
    return out


def strip_llava_suffix(text: str) -> str:
    if text.endswith(LLAVA_SHORT_ANSWER_SUFFIX):
        text = text[: -len(LLAVA_SHORT_ANSWER_SUFFIX)]
    return text.strip()


def preview(items: Iterable[Any], n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: Optional[str] = None,
                digits: int = 2) -> None:
    """Plain fixed-width table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[fmt(c, digits) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    if title:
        print(title)
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))
    print()


def add_period_flag(p) -> None:
    p.add_argument("--strip-all-periods", action="store_true",
                   help="corrected value: strip every period from answers (default: LLaVA's normalizer, "
                        "which strips at most 32, see eval/README.md)")


def print_scored(answered: int, total: int) -> None:
    """Every scorer says how much of the benchmark its number covers."""
    note = "" if answered == total else " (PARTIAL: not a benchmark score)"
    print(f"Scored {answered} of {total} questions{note}")


def emit_json(obj: Dict[str, Any]) -> None:
    """The machine-readable headline numbers: always the last line of stdout."""
    print(json.dumps(obj, sort_keys=False), flush=True)


def write_json(path: str, obj: Any, flag: str, indent: Optional[int] = None) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)
    except OSError as e:
        raise InputError(f"{flag}: cannot write {path}: {e.strerror}") from None


def pct(num: float, den: float) -> float:
    return 100.0 * num / den if den else 0.0
