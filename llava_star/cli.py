"""Method flags shared by the CLIs that run one method (eval runners, demo, visualize, flops)."""
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


def add_method_args(parser: argparse.ArgumentParser, extra_methods=(), extra_help: str = "") -> None:
    """`extra_methods`: names a CLI accepts besides the methods (e.g. flops' "all")."""
    g = parser.add_argument_group("pruning (see docs/methods.md)")
    g.add_argument("--method", default="none", choices=tuple(METHODS) + tuple(extra_methods),
                   help="pruning method (default: %(default)s)" + extra_help)
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
    g.add_argument("--prune-seed", type=int, default=None, help="random: seed of the kept subset (default 0)")
    g.add_argument("--budget-unit", default="image", choices=("image", "crop"),
                   help="LLaVA-NeXT: counts per whole image (default) or per crop (576 each, Table 2(b) style)")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags about how the checkpoint runs (not which method prunes)."""
    parser.add_argument("--attn-implementation", default=None, choices=("sdpa", "eager", "flash_attention_2"),
                        help="attention kernel (default: transformers' choice, sdpa)")
    parser.add_argument("--fixed-grid", type=int, default=None,
                        help="LLaVA-NeXT: use one anyres grid, e.g. 672 (2x2 crops + base, 2880 tokens)")


# Flags that set the final visual-token count themselves: with --budget as well, one of the
# two would be ignored. (--sparsevlm-schedule is how a budget without a published schedule
# is given, so it goes with --budget.)
_SETS_FINAL_COUNT = ("star_keep", "fastv_keep", "visual_token_num", "pdrop_ratios")

_KNOBS = {
    "star": {"star_stage1_keep": "stage1_keep", "star_layer": "layer", "star_keep": "keep"},
    "fastv": {"fastv_k": "k", "fastv_keep": "keep"},
    "fastervlm": {"visual_token_num": "keep"},
    "random": {"visual_token_num": "keep"},
    "sparsevlm": {"sparsevlm_layers": "layers", "sparsevlm_schedule": "schedule"},
    "pdrop": {"pdrop_layers": "layers", "pdrop_ratios": "ratios"},
}


def knob_flags_given(args: argparse.Namespace):
    """Per-method flags the user set, as their `--flag` spellings."""
    return [f"--{flag.replace('_', '-')}" for knobs in _KNOBS.values() for flag in knobs
            if getattr(args, flag, None) is not None]


def method_from_args(args: argparse.Namespace) -> MethodConfig:
    """Build the MethodConfig; a flag of another method is an error, not silently ignored."""
    own = _KNOBS.get(args.method, {})
    for knobs in _KNOBS.values():
        for flag in knobs:
            if getattr(args, flag, None) is not None and flag not in own:
                raise SystemExit(f"error: --{flag.replace('_', '-')} does not apply to --method {args.method}")
    if args.budget is not None:
        both = [f for f in _SETS_FINAL_COUNT if f in own and getattr(args, f) is not None]
        if both:
            raise SystemExit(f"error: --budget and --{both[0].replace('_', '-')} both set how many visual "
                             "tokens are kept; give one of them")
    knobs = {name: getattr(args, flag) for flag, name in own.items() if getattr(args, flag) is not None}
    seed = getattr(args, "prune_seed", None)
    if seed is not None and args.method != "random":
        raise SystemExit(f"error: --prune-seed applies to --method random only, not --method {args.method}")
    if args.method == "random":
        knobs["seed"] = 0 if seed is None else seed
    if getattr(args, "budget_unit", "image") != "image":
        knobs["unit"] = args.budget_unit
    if args.method == "none" and args.budget is not None:
        raise SystemExit("error: --budget needs a pruning --method (got --method none)")
    try:
        return MethodConfig.from_name(args.method, budget=args.budget, **knobs)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
