"""The questions a runner asks: reading llava's question files strictly, duplicate ids,
llava's chunking, `--limit`, and image files checked before the model loads."""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .inputs import InputError, read_json, read_jsonl, require_keys


@dataclass
class Item:
    """One question, as the runner will ask it."""
    qid: Any                 # question_id written to the answers file
    prompt: str              # the answers file's "prompt" (llava's cur_prompt)
    query: str               # the user turn without the image token
    image: Optional[str]     # path relative to --image-folder, or None (text-only)
    line: int                # where it sits in the question file (1-based line or list index)
    convert_rgb: bool = True

    @property
    def key(self) -> Tuple[str, str]:
        return answer_key(self.qid, self.prompt)


def answer_key(qid: Any, prompt: str) -> Tuple[str, str]:
    """What identifies an answer: the question id (with its JSON type) and the prompt."""
    return json.dumps(qid, sort_keys=True), prompt


def image_field(question: Dict[str, Any], path: str, where: str, optional: bool) -> Optional[str]:
    """A question's "image": the name of a file under --image-folder. Text-only questions
    leave the key out, where llava's format has them (ScienceQA); `null`, a number or "" are
    refused rather than asked without an image."""
    if optional and "image" not in question:
        return None
    value = question["image"]
    if isinstance(value, str) and value.strip():
        return value
    raise InputError(f"--question-file {path}, {where}: \"image\" is {json.dumps(value)}, expected the "
                     f"name of an image file under --image-folder")


def read_jsonl_questions(path: str, required: Sequence[str]) -> List[Tuple[int, Dict[str, Any]]]:
    """(line number, object) for every non-blank line; refuses anything else."""
    path = os.path.expanduser(path)
    records = read_jsonl(path, "--question-file")
    require_keys(records, required, path, "--question-file")
    if not records:
        raise InputError(f"--question-file {path} has no questions (empty file)")
    return [(r.pop("__line__"), r) for r in records]


def read_json_questions(path: str) -> List[Any]:
    path = os.path.expanduser(path)
    data = read_json(path, "--question-file")
    if not isinstance(data, list):
        raise InputError(f"--question-file {path}: expected a JSON list of questions")
    if not data:
        raise InputError(f"--question-file {path} has no questions (empty list)")
    return data


def check_unique(items: Sequence[Item], path: str, allow_duplicate_ids: bool) -> None:
    """Duplicate ids are refused (an answer could not be told apart); with
    --allow-duplicate-ids an id may repeat with a different question text, never with the same."""
    seen_key: Dict[Tuple[str, str], Item] = {}
    seen_id: Dict[str, Item] = {}
    for it in items:
        k = it.key
        if k in seen_key:
            raise InputError(
                f"--question-file {path}: question {it.qid!r} appears twice with the same text "
                f"(entries {seen_key[k].line} and {it.line})")
        seen_key[k] = it
        if not allow_duplicate_ids and k[0] in seen_id:
            first = seen_id[k[0]]
            raise InputError(
                f"--question-file {path}: duplicate question_id {it.qid!r} (entries {first.line} and "
                f"{it.line}). LLaVA's MME and TextVQA files repeat ids with different questions: pass "
                f"--allow-duplicate-ids for those (answers are then matched on id and question text)")
        seen_id.setdefault(k[0], it)


def first_questions(items: Sequence[Item], limit: Optional[int]) -> List[Item]:
    """--limit N: the first N questions of the file (before chunking, so every chunk of a
    limited run splits the same N questions)."""
    return list(items if limit is None else items[:limit])


def split_list(lst: Sequence[Any], n: int) -> List[Sequence[Any]]:
    """llava's chunking: chunks of ceil(len / n), so there can be fewer than n of them."""
    size = math.ceil(len(lst) / n)
    return [lst[i:i + size] for i in range(0, len(lst), size)]


def get_chunk(items: Sequence[Item], n: int, k: int, path: str) -> List[Item]:
    if n > len(items):
        raise InputError(f"--num-chunks {n} is more than the {len(items)} questions in {path}; "
                         f"use at most {len(items)} chunks (GPUs)")
    chunks = split_list(items, n)
    if k >= len(chunks):
        # llava's ceil split leaves the last chunk(s) empty for some sizes (e.g. 5 questions
        # in 4 chunks of 2); llava would crash, we write an empty answers file.
        warnings.warn(f"chunk {k} of {n} is empty ({len(items)} questions split in chunks of "
                      f"{math.ceil(len(items) / n)}, as llava splits them)")
        return []
    return list(chunks[k])


def check_images(items: Sequence[Item], folder: str) -> List[Tuple[Item, str]]:
    """(item, reason) for every image file that does not exist. A cheap stat per image."""
    bad = []
    for it in items:
        if it.image is None:
            continue
        path = os.path.join(folder, it.image)
        if not os.path.isfile(path):
            bad.append((it, f"image file not found: {path}"))
    return bad
