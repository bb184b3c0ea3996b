"""Method flags shared by every CLI (eval runners, demo, bench, flops)."""
from __future__ import annotations

import argparse

from .config import METHODS, MethodConfig


def _int_list(text):
    return tuple(int(x) for x in text.split(",") if x.strip())


def _float_list(text):
    return tuple(float(x) for x in text.split(",") if x.strip())


def _count(text):
    """'58' -> 58 tokens, '0.875' -> a ratio."""
    return float(text) if "." in text else int(text)


def add_method_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("pruning (see docs/methods.md)")
    g.add_argument("--method", default="none", choices=METHODS, help="pruning method (default: none)")
    g.add_argument("--budget", type=int, default=None,
                   help="remaining visual tokens, e.g. 288, 115, 58, 29 (each method's documented setting)")
    g.add_argument("--star-stage1-keep", type=_count, default=None,
                   help="STAR: patches kept after CLIP, count or ratio (default 0.875 = 504/576)")
    g.add_argument("--star-layer", type=int, default=None, help="STAR: decoder layer K (default L/2)")
    g.add_argument("--star-keep", type=_count, default=None, help="STAR: visual tokens kept at layer K")
    g.add_argument("--fastv-k", type=int, default=None, help="FastV: layer K (default 2)")
    g.add_argument("--fastv-keep", type=_count, default=None, help="FastV: tokens kept, count or ratio (default 0.5)")
    g.add_argument("--visual-token-num", type=int, default=None, help="FasterVLM / random: patches kept")
    g.add_argument("--sparsevlm-layers", type=_int_list, default=None, help="SparseVLM: layers (default 2,6,15)")
    g.add_argument("--sparsevlm-schedule", type=_int_list, default=None, help="SparseVLM: tokens kept per layer")
    g.add_argument("--pdrop-layers", type=_int_list, default=None, help="PDrop: layers (default 8,16,24)")
    g.add_argument("--pdrop-ratios", type=_float_list, default=None, help="PDrop: keep ratios (default 0.5,0.25,0.125)")
    g.add_argument("--prune-seed", type=int, default=0, help="seed of the random control")


_KNOBS = {
    "star": {"star_stage1_keep": "stage1_keep", "star_layer": "layer", "star_keep": "keep"},
    "fastv": {"fastv_k": "k", "fastv_keep": "keep"},
    "fastervlm": {"visual_token_num": "keep"},
    "random": {"visual_token_num": "keep"},
    "sparsevlm": {"sparsevlm_layers": "layers", "sparsevlm_schedule": "schedule"},
    "pdrop": {"pdrop_layers": "layers", "pdrop_ratios": "ratios"},
}


def method_from_args(args: argparse.Namespace) -> MethodConfig:
    """Build the MethodConfig; a flag of another method is an error, not silently ignored."""
    own = _KNOBS.get(args.method, {})
    for knobs in _KNOBS.values():
        for flag in knobs:
            if getattr(args, flag, None) is not None and flag not in own:
                raise SystemExit(f"error: --{flag.replace('_', '-')} does not apply to --method {args.method}")
    knobs = {name: getattr(args, flag) for flag, name in own.items() if getattr(args, flag) is not None}
    if args.method == "random":
        knobs["seed"] = args.prune_seed
    if args.method == "none" and args.budget is not None:
        raise SystemExit("error: --budget needs a pruning --method (got --method none)")
    try:
        return MethodConfig.from_name(args.method, budget=args.budget, **knobs)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
