"""The answers file: llava's format (one JSON line per question, in question order), written
so that no work is lost and no run mixes with another.

- answers are appended and flushed one question at a time; a re-run skips the questions
  already answered (`--resume`, the default); a truncated last line left by a crash is
  dropped with a warning; the finished file is rewritten in question order if it is not;
- `--no-resume` writes `<answers>.tmp` and renames it at the end, so the old file is never
  half overwritten;
- the settings that made the answers are recorded beside them (`run_settings`) and a resume
  with other settings is refused;
- `<answers>.lock` keeps a second run from writing the same file at the same time;
- questions skipped for a bad image or an over-long prompt go to `<answers>.skipped.jsonl`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import run_settings
from .inputs import InputError, decode_utf8
from .questions import Item, answer_key

FLAG = "--answers-file"


def sibling_path(answers_file: str, suffix: str) -> str:
    """`a.jsonl` -> `a<suffix>`: the files that travel with an answers file."""
    base = answers_file[:-len(".jsonl")] if answers_file.endswith(".jsonl") else answers_file
    return base + suffix


def skipped_path(answers_file: str) -> str:
    return sibling_path(answers_file, ".skipped.jsonl")


def settings_path(answers_file: str) -> str:
    return sibling_path(answers_file, ".settings.json")


def limited_path(answers_file: str, limit: Optional[int]) -> str:
    """--limit N writes `<name>-limit<N>.jsonl`, never the full run's file (kept if the name
    already says so, as the eval scripts name their chunk files)."""
    if limit is None:
        return answers_file
    mark = f"-limit{limit}"
    base, ext = (answers_file[:-len(".jsonl")], ".jsonl") if answers_file.endswith(".jsonl") else (answers_file, "")
    return answers_file if base.endswith(mark) else base + mark + ext


def disk_error(path: str, err: OSError, kept: int) -> InputError:
    """A write that failed (full disk, quota, removed folder): one line, and how to go on."""
    return InputError(f"{FLAG} {path}: cannot write: {err.strerror or err}; the {kept} answer(s) written "
                      f"so far are kept: free space and run the same command again to resume")


def read_existing_answers(path: str) -> Tuple[Dict[Tuple[str, str], str], bool]:
    """Answers already in `path`: key -> the JSON line (no newline), and whether the file needs
    rewriting before appending (a truncated last line dropped, or a missing final newline,
    or a repeated answer)."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    ends_clean = lines[-1] == b""
    if ends_clean:
        lines = lines[:-1]
    dirty = not ends_clean
    done: Dict[Tuple[str, str], str] = {}
    for i, raw in enumerate(lines, start=1):
        last = i == len(lines)
        obj = _answer_line(raw, path, i, interrupted_ok=last and not ends_clean)
        if obj is None:
            dirty = True
            continue
        k = answer_key(obj["question_id"], obj["prompt"])
        if k in done:
            warnings.warn(f"{path}: line {i} answers question {obj['question_id']!r} again; keeping the first")
            dirty = True
            continue
        done[k] = json.dumps(obj)
    return done, dirty


def _answer_line(raw: bytes, path: str, i: int, interrupted_ok: bool) -> Optional[Dict[str, Any]]:
    """One parsed answer line, or None for a blank line or an interrupted last append."""
    if not raw.strip():
        return None
    try:
        obj = json.loads(decode_utf8(raw, path, FLAG, i))
        ok = isinstance(obj, dict) and "question_id" in obj and isinstance(obj.get("text"), str) \
            and isinstance(obj.get("prompt"), str)
    except (json.JSONDecodeError, InputError):
        ok = False
    if ok:
        return obj
    # Our writer emits each line and its newline in one write, so only an unterminated last
    # line can be an interrupted append; anything else is not ours.
    if interrupted_ok:
        warnings.warn(f"{path}: line {i} is incomplete (an interrupted run?); dropping it "
                      f"and answering that question again")
        return None
    raise InputError(f"{FLAG} {path}, line {i}: not a complete answer line; the file is "
                     f"damaged (fix or remove it, or use --no-resume to start over)")


def atomic_write(path: str, lines: Iterable[str]) -> None:
    tmp = path + ".rewrite.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class WriterLock:
    """`<answers>.lock`, held (flock) while a run may write the answers file. The kernel drops
    the lock when the process dies, so a killed run never leaves a stale lock behind."""

    def __init__(self, answers_file: str):
        self.path = sibling_path(answers_file, ".lock")
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"{FLAG} {answers_file}: cannot write in its folder ({e.strerror}: "
                             f"{self.path})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise InputError(f"{FLAG} {answers_file} is being written by another run right now "
                             f"({self.path} is locked); wait for it, or use another --answers-file") from None
        if not os.path.exists(self.path) or os.stat(self.path).st_ino != os.fstat(self.fd).st_ino:
            # the holder before us removed the file we locked: lock the new one instead
            os.close(self.fd)
            self.__init__(answers_file)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # before unlocking, so no one can lock the old file after us
            except FileNotFoundError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class AnswerWriter:
    """Appends answer lines, flushed one by one; see the module docstring for the guarantees."""

    def __init__(self, path: str, items: Sequence[Item], resume: bool, settings: Dict[str, Any]):
        self.path = path
        self.order = [it.key for it in items]
        self.done: Dict[Tuple[str, str], str] = {}
        self.written_order: List[Tuple[str, str]] = []
        self.file = None
        if os.path.isdir(path):
            raise InputError(f"{FLAG} {path} is a directory")
        _make_folder(path)
        self.lock = WriterLock(path)
        try:
            self._start(resume, set(self.order), settings)
        except BaseException:
            self.lock.release()
            raise

    def _start(self, resume: bool, wanted: set, settings: Dict[str, Any]) -> None:
        if resume and os.path.exists(self.path):
            done, dirty = read_existing_answers(self.path)
            if done:
                run_settings.check_resume(self.path, settings_path(self.path), settings)
            _refuse_foreign_answers(self.path, [k for k in done if k not in wanted])
            self.done, self.written_order = done, list(done)
            if dirty:
                atomic_write(self.path, done.values())
            self.target, self.mode = self.path, "a"
        else:
            # Never half-overwrite an old file (--no-resume): write next to it, rename at the end.
            self.target = self.path + ".tmp" if os.path.exists(self.path) else self.path
            self.mode = "w"
        self.settings = settings
        # The answers file is opened at the first answer, so a run that stops before answering
        # anything (bad flag, model that does not load, ...) leaves no empty answers file.

    def _open(self) -> None:
        if self.file is None:
            try:
                run_settings.record(settings_path(self.target), self.settings)
                self.file = open(self.target, self.mode, encoding="utf-8")
            except OSError as e:
                raise disk_error(self.target, e, len(self.done)) from None

    def write(self, record: Dict[str, Any]) -> None:
        key = answer_key(record["question_id"], record["prompt"])
        if key in self.done:  # cannot happen: pending questions exclude answered ones
            raise RuntimeError(f"question {record['question_id']!r} answered twice")
        self._open()
        line = json.dumps(record)
        try:
            self.file.write(line + "\n")
            self.file.flush()
        except OSError as e:
            self._drop_partial_line()
            raise disk_error(self.target, e, len(self.done)) from None
        self.done[key] = line
        self.written_order.append(key)

    def _drop_partial_line(self) -> None:
        """After a failed write the buffer may hold half a line: discard it (the resume drops
        an unterminated last line anyway) so closing does not retry it."""
        try:
            self.file.close()
        except OSError:
            pass

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            try:
                self.file.flush()
                self.file.close()
            except OSError:
                pass  # already reported by write()

    def finish(self) -> int:
        """Close, put the lines in question order (rewriting only if needed), move into place."""
        self._open()  # a chunk with nothing to answer still gets its (possibly empty) file
        self.close()
        ordered = [k for k in self.order if k in self.done]
        try:
            if ordered != self.written_order:
                atomic_write(self.target, (self.done[k] for k in ordered))
            else:
                with open(self.target, "rb+") as f:
                    os.fsync(f.fileno())
            if self.target != self.path:
                os.replace(settings_path(self.target), settings_path(self.path))
                os.replace(self.target, self.path)
        except OSError as e:
            raise disk_error(self.target, e, len(self.done)) from None
        return len(ordered)

    def release(self) -> None:
        self.close()
        self.lock.release()


def _make_folder(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise InputError(f"{FLAG} {path}: cannot create its folder {directory} ({e.strerror})") from None


def _refuse_foreign_answers(path: str, extra: List[Tuple[str, str]]) -> None:
    if extra:
        shown = ", ".join(f"{json.loads(q)!r}" for q, _ in extra[:3])
        raise InputError(
            f"{FLAG} {path} holds {len(extra)} answer(s) to questions that are not in this "
            f"chunk of --question-file (e.g. {shown}): a different question file or --num-chunks? "
            f"Use another --answers-file, or --no-resume to start over")


class SkipLog:
    """`<answers>.skipped.jsonl`: one line per question skipped (bad image, prompt too long)."""

    def __init__(self, answers_file: str):
        self.path = skipped_path(answers_file)
        self.count = 0
        self.file = None
        if os.path.exists(self.path):
            os.remove(self.path)  # those questions are unanswered, so they are retried now

    def add(self, item: Item, reason: str) -> None:
        if self.file is None:
            self.file = open(self.path, "w", encoding="utf-8")
        self.file.write(json.dumps({"question_id": item.qid, "prompt": item.prompt, "image": item.image,
                                    "error": reason}) + "\n")
        self.file.flush()
        self.count += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
