"""Method flags for the CLIs that run one method (eval runners, demo, visualize, flops),
derived from the method registry (`llava_star.methods`)."""
from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

from .methods import METHODS, MethodConfig, knobs_of
from .methods.registry import UNIT, Knob, get


def _flags() -> Dict[str, List[Tuple[str, Knob]]]:
    """flag -> [(method, knob)] for every method knob that has a flag (the budget unit apart)."""
    out: Dict[str, List[Tuple[str, Knob]]] = {}
    for name in METHODS:
        for knob in get(name).knobs:
            if knob.flag is not None:
                out.setdefault(knob.flag, []).append((name, knob))
    return out


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_method_args(parser: argparse.ArgumentParser, extra_methods=(), extra_help: str = "") -> None:
    """`extra_methods`: names a CLI accepts besides the methods (e.g. flops' "all")."""
    g = parser.add_argument_group("pruning (see docs/methods.md)")
    g.add_argument("--method", default="none", choices=tuple(METHODS) + tuple(extra_methods),
                   help="pruning method (default: %(default)s)" + extra_help)
    g.add_argument("--budget", type=int, default=None,
                   help="remaining visual tokens, e.g. 288, 115, 58, 29 (each method's documented setting)")
    for flag, owners in _flags().items():
        knob = owners[0][1]
        helps = " / ".join(dict.fromkeys(k.help for _, k in owners)) if len(owners) > 1 else knob.help
        if knob.parse is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helps)
        else:
            g.add_argument(flag, type=knob.parse, default=None, choices=knob.choices, help=helps)
    g.add_argument(UNIT.flag, default=UNIT.default, choices=UNIT.choices, help=UNIT.help)


def knob_flags_given(args: argparse.Namespace) -> List[str]:
    """Per-method flags the user set, as their `--flag` spellings."""
    return [flag for flag in _flags() if getattr(args, _dest(flag), None) is not None]


def method_from_args(args: argparse.Namespace) -> MethodConfig:
    """Build the MethodConfig; a flag of another method is an error, not silently ignored."""
    flags = _flags()
    own = {k.flag: k for k in knobs_of(args.method) if k.flag is not None and k is not UNIT} \
        if args.method in METHODS else {}
    for flag in knob_flags_given(args):
        if flag not in own:
            owners = ", ".join(f"--method {m}" for m, _ in flags[flag])
            raise SystemExit(f"error: {flag} does not apply to --method {args.method} "
                             f"({flag} applies to {owners} only)")
    if args.budget is not None:
        both = [f for f, k in own.items() if k.sets_final and getattr(args, _dest(f)) is not None]
        if both:
            raise SystemExit(f"error: --budget and {both[0]} both set how many visual "
                             "tokens are kept; give one of them")
    if args.method == "none" and args.budget is not None:
        raise SystemExit("error: --budget needs a pruning --method (got --method none)")
    knobs = {k.name: getattr(args, _dest(f)) for f, k in own.items() if getattr(args, _dest(f)) is not None}
    if getattr(args, "budget_unit", UNIT.default) != UNIT.default:
        knobs["unit"] = args.budget_unit
    try:
        return MethodConfig.from_name(args.method, budget=args.budget, **knobs)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags about how the checkpoint runs (not which method prunes)."""
    parser.add_argument("--attn-implementation", default=None, choices=("sdpa", "eager", "flash_attention_2"),
                        help="attention kernel (default: transformers' choice, sdpa)")
    parser.add_argument("--fixed-grid", type=int, default=None,
                        help="LLaVA-NeXT: use one anyres grid, e.g. 672 (2x2 crops + base, 2880 tokens)")


def tool_host(host: str, model_path) -> str:
    """A tool's `--host` against its --model-path (auto: the checkpoint's config.json; llava
    without one), in an environment that can run it; else one line."""
    from .hosts import HostError, resolve_host

    try:
        host = resolve_host(host, model_path)
    except HostError as err:
        raise SystemExit(f"error: {err}") from None
    require_environment(host)
    return host


def require_environment(host: str) -> None:
    from .hosts import environment_problem

    problem = environment_problem(host)
    if problem:
        raise SystemExit(f"error: {problem}")
