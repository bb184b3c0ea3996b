"""The runners' command line: llava's flags (same spelling and defaults), then ours, and the
checks made before anything loads. Building the parser imports neither torch nor llava, so
`--help` is instant."""
from __future__ import annotations

import argparse

from .inputs import InputError

SCIENCE_SINGLE_PRED = "Answer with the option's letter from the given choices directly."


def build_parser(prog: str, description: str, *, question_file: str, conv_mode: str,
                 max_new_tokens: int, sampling_flags: bool, science: bool = False,
                 num_workers: int = 4) -> argparse.ArgumentParser:
    """llava's flags for one runner (same spelling and defaults), then ours."""
    from llava_star.cli import add_method_args, add_model_args

    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("llava's flags (same spelling and defaults as llava.eval)")
    g.add_argument("--model-path", type=str, default="facebook/opt-350m")
    g.add_argument("--model-base", type=str, default=None)
    g.add_argument("--image-folder", type=str, default="")
    g.add_argument("--question-file", type=str, default=question_file)
    g.add_argument("--answers-file", type=str, default="answer.jsonl")
    g.add_argument("--conv-mode", type=str, default=conv_mode)
    g.add_argument("--num-chunks", type=int, default=1)
    g.add_argument("--chunk-idx", type=int, default=0)
    g.add_argument("--temperature", type=float, default=0.2)
    if sampling_flags:
        g.add_argument("--top_p", type=float, default=None)
        g.add_argument("--num_beams", type=int, default=1)
    if science:
        g.add_argument("--answer-prompter", action="store_true",
                       help="accepted for compatibility; like llava 1.2.2's model_vqa_science it has no effect")
        g.add_argument("--single-pred-prompt", action="store_true",
                       help=f"append \"{SCIENCE_SINGLE_PRED}\" to every question")
    g.add_argument("--max_new_tokens", type=int, default=max_new_tokens,
                   help=f"tokens generated at most (default {max_new_tokens}, llava's value)")
    _add_own_flags(p.add_argument_group("llava-star"), num_workers)
    add_model_args(p.add_argument_group("model"))
    add_method_args(p)
    p.set_defaults(default_conv_mode=conv_mode)  # the hf host tells a chosen --conv-mode from this one
    return p


def _add_own_flags(o, num_workers: int) -> None:
    o.add_argument("--host", default="auto", choices=("auto", "llava", "hf"),
                   help="the library that runs the checkpoint: llava (llava-torch, haotian-liu/LLaVA "
                        "checkpoints, .venv) or hf (transformers 5, llava-hf checkpoints, .venv-hf); "
                        "default auto: read from the checkpoint's config.json")
    o.add_argument("--device", default=None,
                   help="cuda (fp16, llava's builder) or cpu (fp32); default: cuda if available, else cpu")
    o.add_argument("--batch-size", type=int, default=1,
                   help="questions per generate call; >1 pads prompts on the left (default 1, llava's)")
    o.add_argument("--num-workers", type=int, default=num_workers,
                   help=f"threads that load and preprocess images ahead of the model (default {num_workers})")
    o.add_argument("--limit", type=int, default=None, metavar="N",
                   help="a smoke run: answer only the first N questions of --question-file, into "
                        "<answers>-limit<N>.jsonl (never the full run's file)")
    o.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip questions already in --answers-file (default; refused if the file was made "
                        "with other settings); --no-resume starts over, writing <answers>.tmp and renaming "
                        "it at the end")
    o.add_argument("--skip-bad-images", action="store_true",
                   help="record questions whose image is missing or unreadable, or whose prompt does not "
                        "fit the model's context, in <answers>.skipped.jsonl instead of stopping")
    o.add_argument("--allow-duplicate-ids", action="store_true",
                   help="allow a question_id to repeat with a different question text, as in "
                        "LLaVA's MME and TextVQA files (answers are then matched on id and text)")


def check_conv_mode(conv_mode: str) -> None:
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise InputError(f"--conv-mode {conv_mode!r} is not one of llava's templates: "
                         f"{', '.join(sorted(conv_templates))}")


def method_config(args):
    """The MethodConfig for the loader: None for --method none (stock llava)."""
    from llava_star.cli import method_from_args

    try:
        cfg = method_from_args(args)
    except SystemExit as e:  # method_from_args: "error: ..."
        msg = str(e.code)
        raise InputError(msg[len("error: "):] if msg.startswith("error: ") else msg) from None
    return None if cfg.name == "none" else cfg


def _at_least(args, flag: str, low: int) -> None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    if value is not None and value < low:
        raise InputError(f"{flag} must be at least {low}, got {value}")


def choose_host(args) -> str:
    """--host resolved against --model-path (auto: its config.json); a contradiction is one line."""
    from llava_star.hosts import HostError, resolve_host

    try:
        return resolve_host(args.host, args.model_path)
    except HostError as e:
        raise InputError(str(e)) from None


def require_environment(host: str) -> None:
    """The host's environment (.venv: llava-torch; .venv-hf: transformers 5), or one line."""
    from llava_star.hosts import environment_problem

    problem = environment_problem(host)
    if problem:
        raise InputError(problem)


def check_counts(args) -> None:
    for flag, low in (("--num-chunks", 1), ("--batch-size", 1), ("--num-workers", 0),
                      ("--max_new_tokens", 1), ("--num_beams", 1), ("--limit", 1)):
        _at_least(args, flag, low)
    if not 0 <= args.chunk_idx < args.num_chunks:
        raise InputError(f"--chunk-idx must be in 0..{args.num_chunks - 1} (--num-chunks {args.num_chunks}), "
                         f"got {args.chunk_idx}")


def check_args(args) -> None:
    """The llava host's checks (the hf host's are in hf_side.check_args)."""
    check_counts(args)
    check_conv_mode(args.conv_mode)
    args.device = device_for(args.device)
    args.method_config = method_config(args)


def device_for(device):
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here (use --device cpu)")
    return device
