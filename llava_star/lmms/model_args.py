"""`--model_args` of `--model llava_star`: every key, checked before anything loads.

The keys are the CLIs' flags in lmms-eval's spelling (`--star-layer` is `star_layer`): the
method flags from the registry (`llava_star.cli.add_method_args`), the model flags
(`add_model_args`: attn_implementation, fixed_grid) and the loader's own keys below. Values
go through the same argparse types, choices and `method_from_args` checks as the CLIs, so a
bad value gets the CLI's message, with the key named as it is in `--model_args`.

lmms-eval has already turned "58" into 58, "true" into True; list knobs (`pdrop_layers`)
need brackets or quotes to keep their commas out of lmms-eval's split: `pdrop_layers=[8,16,24]`.
Importing this module loads neither torch nor llava.
"""
from __future__ import annotations

import argparse
import difflib
import re
from typing import Any, Dict

from llava_star.cli import add_method_args, add_model_args, method_from_args

# Keys lmms-eval itself passes to every model (from its --batch_size, --max_batch_size, --device).
LMMS_EVAL_KEYS = ("batch_size", "max_batch_size", "device")


class ModelArgsError(Exception):
    """A bad key or value, said in one line naming the key."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit 2
        raise ModelArgsError(as_keys(message))


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="--model llava_star", add_help=False)
    p.add_argument("--pretrained", required=True, help="the checkpoint: a folder or a hub id (llava's --model-path)")
    p.add_argument("--model-base", default=None, help="llava's --model-base (LoRA / projector-only checkpoints)")
    p.add_argument("--model-name", default=None, help="llava's model name (default: from the path, as llava)")
    p.add_argument("--conv-template", default=None,
                   help="llava's conversation template (default: from the checkpoint name, as scripts/eval)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: each process's GPU, else cpu)")
    p.add_argument("--batch-size", type=int, default=1, help="lmms-eval's --batch_size: requests per forward")
    p.add_argument("--max-batch-size", default=None, help="lmms-eval's --max_batch_size (not used)")
    add_model_args(p)
    add_method_args(p)
    return p


def as_keys(message: str) -> str:
    """A CLI message in `--model_args` spelling: `--method star` -> `method=star`,
    `--star-layer` -> `star_layer`."""
    message = re.sub(r"--method (\w+)", r"method=\1", message)
    message = re.sub(r"argument --", "--", message)
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)


def keys(p: argparse.ArgumentParser = None) -> Dict[str, argparse.Action]:
    """key -> its argparse action, for every key `--model_args` takes."""
    p = p or parser()
    return {a.dest: a for a in p._actions if a.option_strings}


def _text(value: Any) -> str:
    """lmms-eval's cast value back to the text a CLI flag would get; brackets or quotes
    around a list dropped."""
    text = str(value).strip()
    if len(text) >= 2 and (text[0], text[-1]) in (("[", "]"), ("(", ")"), ('"', '"'), ("'", "'")):
        text = text[1:-1]
    return text


def to_argv(model_args: Dict[str, Any], known: Dict[str, argparse.Action]):
    argv = []
    for key, value in model_args.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ModelArgsError(f"unknown key {key}{hint}; llava_star takes {', '.join(known)}")
        if value is None:
            continue
        flag = known[key].option_strings[0]
        if isinstance(known[key], argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise ModelArgsError(f"{key} must be true or false, got {value!r}")
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, _text(value)]
    return argv


def parse(model_args: Dict[str, Any]) -> argparse.Namespace:
    """The settings for a `--model_args` dict (as lmms-eval passes it: values already cast);
    `args.method_config` is the MethodConfig to load with. Raises ModelArgsError."""
    p = parser()
    args = p.parse_args(to_argv(model_args, keys(p)))
    try:
        args.method_config = method_from_args(args)
    except SystemExit as e:  # the CLIs' "error: ..." message
        raise ModelArgsError(as_keys(str(e.code)).removeprefix("error: ")) from None
    if args.batch_size < 1:
        raise ModelArgsError(f"batch_size must be at least 1, got {args.batch_size}")
    return args
