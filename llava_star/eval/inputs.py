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
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = decode_utf8(raw, path, flag, lineno)
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


def decode_utf8(raw: bytes, path: str, flag: str, lineno: int = 0) -> str:
    """`raw` as UTF-8; other bytes are an error naming the line (Latin-1 files are the usual cause)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = (lineno or 1) + raw[:e.start].count(b"\n")
        raise InputError(f"{flag}: {path}, line {line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                         f"save the file as UTF-8") from None


def read_json(path: str, flag: str) -> Any:
    check_file(path, flag)
    with open(path, "rb") as f:
        text = decode_utf8(f.read(), path, flag)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{flag}: {path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def require_keys(records: Iterable[Dict[str, Any]], keys: Sequence[str], path: str, flag: str) -> None:
    for rec in records:
        for k in keys:
            if k not in rec:
                where = f", line {rec['__line__']}" if "__line__" in rec else ""
                raise InputError(f"{flag}: {path}{where}: missing key {k!r}")
