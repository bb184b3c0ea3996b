"""Reading the files the runners and scorers take, strictly. A bad file is an `InputError`
(a SystemExit with status 2 whose text names the flag, the file and the line) rather than a
traceback hours in or a silently wrong number."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Sequence


class InputError(SystemExit):
    """A bad flag or input file: the CLI prints the message and exits with status 2."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def check_file(path: str, flag: str) -> None:
    if not path:
        raise InputError(f"{flag}: no file given")
    if not os.path.exists(path):
        raise InputError(f"{flag}: no such file: {path}")
    if os.path.isdir(path):
        raise InputError(f"{flag}: expected a file but got a directory: {path}")


def check_dir(path: str, flag: str) -> None:
    if not path or not os.path.isdir(path):
        raise InputError(f"{flag}: directory not found: {path}")


def read_jsonl(path: str, flag: str) -> List[Dict[str, Any]]:
    """One JSON object per line; blank lines are skipped, anything else is an error."""
    check_file(path, flag)
    records = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{flag}: {path}, line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{flag}: {path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
            obj["__line__"] = lineno  # kept so later errors can point at the line
            records.append(obj)
    return records


def read_json(path: str, flag: str) -> Any:
    check_file(path, flag)
    with open(path, "r", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f"{flag}: {path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def require_keys(records: Iterable[Dict[str, Any]], keys: Sequence[str], path: str, flag: str) -> None:
    for rec in records:
        for k in keys:
            if k not in rec:
                where = f", line {rec['__line__']}" if "__line__" in rec else ""
                raise InputError(f"{flag}: {path}{where}: missing key {k!r}")
