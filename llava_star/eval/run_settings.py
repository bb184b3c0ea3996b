"""The settings that made an answers file, recorded beside it (`<answers>.settings.json`, see answers_file),
so a resume can never append answers made another way: a re-run whose settings differ stops
before the model loads, naming each setting that differs and how to start over.

Recorded: everything that changes an answer: the host (--host: llava or hf, so a run never mixes
the two), the model (path, name, base), the method with
every knob and its budget unit, LLaVA-NeXT's --fixed-grid, the conversation template, the
decoding flags, ScienceQA's single-pred prompt, the question file's content (sha256) and the
chunk, and the llava-star version.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List

from .inputs import InputError

# setting -> the flag a user changes it with (for the error message)
FLAGS = {
    "host": "--host", "model_path": "--model-path", "model_name": "--model-path (model name)",
    "model_base": "--model-base",
    "method": "--method/--budget and the method's knobs", "fixed_grid": "--fixed-grid",
    "conv_mode": "--conv-mode", "temperature": "--temperature", "top_p": "--top_p", "num_beams": "--num_beams",
    "max_new_tokens": "--max_new_tokens", "single_pred_prompt": "--single-pred-prompt",
    "question_file_sha256": "--question-file (its content)", "chunk": "--num-chunks/--chunk-idx",
    "llava_star_version": "llava-star version",
}


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_path(path: str) -> str:
    """A local checkpoint by its absolute path (the same run from another folder is the same
    model); a hub id as given."""
    full = os.path.abspath(os.path.expanduser(path))
    return full if os.path.exists(full) else path


def method_setting(args) -> Dict[str, Any]:
    cfg = args.method_config
    if cfg is None:
        return {"name": "none"}
    return {"name": cfg.name, "budget": cfg.budget, "knobs": dict(cfg.knobs)}


def build(args, model_name: str, question_path: str) -> Dict[str, Any]:
    from llava_star import __version__

    settings = {
        "host": getattr(args, "host", "llava"),
        "model_path": _model_path(args.model_path), "model_name": model_name,
        "model_base": None if args.model_base is None else _model_path(args.model_base),
        "method": method_setting(args), "fixed_grid": args.fixed_grid, "conv_mode": args.conv_mode,
        "temperature": args.temperature, "top_p": getattr(args, "top_p", None),
        "num_beams": getattr(args, "num_beams", 1), "max_new_tokens": args.max_new_tokens,
        "single_pred_prompt": getattr(args, "single_pred_prompt", False),
        "question_file_sha256": file_sha256(question_path),
        "chunk": f"{args.chunk_idx}/{args.num_chunks}", "llava_star_version": __version__,
    }
    return json.loads(json.dumps(settings))  # tuples -> lists, as they read back


def record(path: str, settings: Dict[str, Any]) -> None:
    """Write the record atomically (it is written before the first answer)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def differences(recorded: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    return [f"{FLAGS.get(k, k)}: recorded {json.dumps(recorded.get(k))}, now {json.dumps(now.get(k))}"
            for k in sorted(set(recorded) | set(now)) if recorded.get(k) != now.get(k)]


def check_resume(answers_file: str, path: str, now: Dict[str, Any]) -> None:
    """Refuse to add answers to `answers_file` if its record `path` shows other (or no) settings."""
    start_over = (f"Use another --answers-file (CKPT=... for the eval scripts), or --no-resume to "
                  f"answer every question again (the old file is replaced when the new one is complete)")
    if not os.path.exists(path):
        raise InputError(f"--answers-file {answers_file} has answers but no settings record ({path}): "
                         f"made by another tool or an older llava-star, so it cannot be resumed safely. "
                         f"{start_over}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"--answers-file {answers_file}: cannot read its settings record {path} ({e}). "
                         f"{start_over}") from None
    if isinstance(recorded, dict):
        recorded.setdefault("host", "llava")  # records from before --host: all made on the llava host
    diff = differences(recorded, now)
    if diff:
        raise InputError(f"--answers-file {answers_file} was made with other settings, so resuming would "
                         f"mix answers: " + "; ".join(diff) + f". {start_over}")
