"""Hosts: the model libraries the engine attaches to. `llava` is llava-torch 1.2.2 (haotian-liu/LLaVA
checkpoints, transformers 4.37); `hf` is transformers 5's own LLaVA classes (llava-hf checkpoints).

`host_of(model_path)` tells which one a checkpoint directory is for, from its config.json alone
(no torch, no transformers), so the tools can take `--host auto`."""
from __future__ import annotations

import json
import os

HOSTS = ("llava", "hf")
# transformers' model_type of the llava-hf classes the hf host drives
HF_MODEL_TYPES = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"}


class HostError(ValueError):
    pass


def model_type_of(model_path: str) -> "str | None":
    """config.json's model_type, or None where there is no readable one (a hub id, say)."""
    config = os.path.join(os.path.expanduser(model_path), "config.json")
    try:
        with open(config) as f:
            return json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def host_of(model_path: str) -> str:
    """"hf" for a llava-hf checkpoint (config.json model_type llava / llava_next), "llava" for a
    haotian-liu/LLaVA one (llava_llama, llava_mistral, ...). A hub id or a directory without a
    readable config.json is taken as llava's (its builder reports what is wrong)."""
    return "hf" if model_type_of(model_path) in HF_MODEL_TYPES else "llava"


def resolve_host(host: str, model_path: "str | None") -> str:
    """`--host auto|llava|hf` against a checkpoint: auto picks by config.json (llava when there
    is no checkpoint, e.g. random weights); an explicit choice that contradicts the checkpoint
    is a one-line error naming the flag."""
    if host not in HOSTS + ("auto",):
        raise HostError(f"--host {host!r}: choose auto, llava or hf")
    if model_path is None or model_path == "":
        return "llava" if host == "auto" else host
    found = host_of(model_path)
    if host == "auto":
        return found
    if host != found and os.path.isfile(os.path.join(os.path.expanduser(model_path), "config.json")):
        layout = "a llava-hf" if found == "hf" else "a haotian-liu/LLaVA"
        raise HostError(f"--host {host}: --model-path {model_path} is {layout} checkpoint (use --host {found} "
                        "or --host auto)")
    return host


def environment_problem(host: str) -> "str | None":
    """Why this Python environment cannot run `host`, in one line naming the way out, or None.
    The two hosts need two environments (llava-torch pins transformers 4.37; the hf host needs
    transformers 5): read from the installed metadata, so nothing heavy imports."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    if host == "llava":
        if find_spec("llava") is None:
            return ("--host llava (haotian-liu/LLaVA checkpoints) needs llava-torch, which this environment "
                    "lacks: run it with .venv/bin/python (created by: bash scripts/setup.sh)")
        return None
    try:
        found = version("transformers")
    except PackageNotFoundError:
        found = "none"
    major = found.split(".")[0]
    if not major.isdigit() or int(major) < 5:
        return (f"--host hf needs transformers 5 (this environment has {found}): run it with "
                ".venv-hf/bin/python (created by: bash scripts/setup_hf.sh)")
    return None
