"""Prefill FLOPs of every method: theory, and a count through the real code path.

    python -m llava_star.flops --geometry llava-v1.5-7b --method star --budget 58 --text-tokens 64 --json
    python -m llava_star.flops --geometry llava-v1.5-7b --method all --budget 58        # side by side
    python -m llava_star.flops --geometry llava-v1.5-7b --method fastv --budget 58 --measured
    python -m llava_star.flops --model-path llava-hf/llava-1.5-7b-hf --method star --budget 58

The theory is host-independent: `--model-path` reads the geometry from a checkpoint
directory's config.json alone (no torch, no download), a llava-hf one (text_config +
vision_config) or a haotian-liu/LLaVA one (its CLIP tower named by mm_vision_tower), and the
numbers are the same on either host.

Units (see docs/flops.md):
- `*_flops` are FLOPs = 2 x multiply-accumulates, counting every matmul exactly (q/k/v/o
  projections with grouped-query heads, attention scores and values over the full n x n
  square as SDPA's FLOP counters do, the 3-matrix SwiGLU FFN). This is what
  `torch.utils.flop_counter` counts, and `--measured` checks it.
- `fastv_*` is the formula FastV and STAR print, per decoder layer `4nd^2 + 2n^2d + 2ndm`:
  multiply-accumulates with a 2-matrix FFN, decoder layers only.
- n counts every token of the prompt: the visual tokens a layer sees plus `--text-tokens`
  (all non-image tokens). `--text-tokens 0` gives the visual-only count some papers use.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .engine.counts import ImageTokens, decoder_keep, ratio_of, recycled_count, vision_keep
from .engine.plan import Plan
from .methods import METHODS, MethodConfig, get
from .geometry import GEOMETRIES, Geometry, get_geometry

DEFAULT_TEXT_TOKENS = 64
DEFAULT_TEXT_BEFORE = 35  # LLaVA-1.5's vicuna_v1 system prompt + "USER: " with BOS


def split_text(text_tokens: int, text_before: Optional[int] = None):
    """(tokens before the image, tokens after it). Decoder scores need >= 1 token after."""
    if text_tokens < 0:
        raise ValueError(f"text tokens must be >= 0, got {text_tokens}")
    before = min(DEFAULT_TEXT_BEFORE if text_before is None else text_before, max(text_tokens - 1, 0))
    if before < 0:
        raise ValueError(f"text before the image must be >= 0, got {before}")
    return before, text_tokens - before


# --------------------------------------------------------------------------- counts
def visual_counts(plan: Plan, g: Geometry):
    """(visual tokens after the vision stage, visual tokens each decoder layer sees), per
    image, as the engine resolves the plan. Multi-crop geometries (NeXT, unpad and newline
    rows ignored) follow `plan.unit`: "crop" keeps that many of every crop's 576 patches;
    "image" (the engine's default) spreads an int vision budget evenly over the crops
    (rounded up per crop) and keeps an int decoder budget for the whole image. Ratios are of
    every crop's patches (vision) or of all the image's patches (decoder) in both units."""
    if g.crops > 1 and plan.single_crop_only:
        raise ValueError(f"{plan.name} needs one crop per image (LLaVA-1.5 layouts); {g.name} has {g.crops}")
    image = _image(g)
    first = image.rows
    if plan.vision is not None:
        extra = plan.vision.merge + int(plan.vision.cls_token)  # VisionZip's contextual and CLS tokens
        first = (vision_keep(plan.vision.keep, plan.unit, image) + extra) * g.crops
    prev, stages, per_layer = first, {st.layer: st for st in plan.decoder}, []
    for i in range(g.layers):
        if i in stages:
            k = min(decoder_keep(stages[i].keep, plan.unit, image), prev)
            prev = k + (recycled_count(prev - k) if stages[i].recycle else 0)
        per_layer.append(prev)
    return first, per_layer


def _image(g: Geometry) -> ImageTokens:
    return ImageTokens(g.crops, g.num_patches, g.num_patches * g.crops)


# ---------------------------------------------------------------- MAC formulas
def decoder_layer_macs(n: int, g: Geometry) -> int:
    """Exact matmul multiply-accumulates of one LLaMA layer over n tokens (prefill)."""
    d, kv = g.hidden, g.num_kv_heads * g.head_dim
    return n * (2 * d * d + 2 * d * kv) + 2 * n * n * d + 3 * n * d * g.intermediate


def fastv_layer(n: int, g: Geometry) -> int:
    """FastV's / STAR's per-layer formula 4nd^2 + 2n^2d + 2ndm (MAC units, 2-matrix FFN)."""
    d = g.hidden
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * g.intermediate


def clip_layer_macs(g: Geometry) -> int:
    v = g.vision
    t = v.tokens
    return 4 * t * v.hidden ** 2 + 2 * t * t * v.hidden + 2 * t * v.hidden * v.intermediate


def patch_embed_macs(g: Geometry) -> int:
    v = g.vision
    return v.num_patches * v.hidden * 3 * v.patch_size ** 2


def projector_macs(tokens: int, g: Geometry) -> int:
    D, dv = g.hidden, g.vision.hidden
    if g.projector == "linear":
        return tokens * dv * D
    m = re.match(r"^mlp(\d+)x_gelu$", g.projector)
    if not m:
        raise ValueError(f"unknown projector {g.projector!r}")
    return tokens * (dv * D + (int(m.group(1)) - 1) * D * D)


def vision_score_macs(stage, g: Geometry) -> int:
    """Stage-1 overhead: q and k of the select layer recomputed over CLS + patches, and the
    q k^T logits (softmax and means are not matmuls); VisionZip's merge adds the key
    similarity of the other patches to the contextual targets and their means."""
    if stage.score == "random":
        return 0
    v = g.vision
    t = v.tokens
    macs = 2 * t * v.hidden ** 2 + t * t * v.hidden
    if stage.merge:
        others = v.num_patches - ratio_of(stage.keep, v.num_patches) - stage.merge
        macs += others * stage.merge * (v.hidden // v.heads) + stage.merge * others * v.hidden
    return macs


def decoder_score_macs(stage, rows: int, keys: int, g: Geometry) -> int:
    """Stage-2 overhead: q of the scoring rows and their logits against the `keys` tokens of
    the ranking layer (cached by layer K-1, or projected from layer K's input: `ranks="own"`)."""
    if stage.score == "random":
        return 0
    macs = rows * g.hidden * g.hidden + rows * keys * g.hidden
    if stage.ranks == "own":
        macs += keys * g.hidden * g.num_kv_heads * g.head_dim
    return macs


def recycle_macs(dropped: int, g: Geometry) -> int:
    """SparseVLM's recycling of `dropped` tokens: the pairwise distances of the recycled ones
    (one n x n matmul) and the cluster means."""
    if dropped <= 0:
        return 0
    n = min(dropped, int(dropped * 0.3) + 1)
    return n * n * g.hidden + recycled_count(dropped) * n * g.hidden


@dataclass
class Theory:
    method: str
    budget: Optional[int]
    geometry: str
    text_tokens: int
    text_before: int
    vision_kept: int
    tokens_per_layer: List[int]
    vision: int
    projector: int
    decoder: int
    scoring_vision: int
    scoring_decoder: int
    lm_head: int
    fastv_decoder: int
    stock: bool = False
    notes: List[str] = field(default_factory=list)

    @property
    def t_eq(self) -> float:
        return sum(self.tokens_per_layer) / len(self.tokens_per_layer)

    @property
    def scoring(self) -> int:
        return self.scoring_vision + self.scoring_decoder

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.decoder + self.scoring + self.lm_head


def theory(g: Geometry, plan: Optional[Plan], text_tokens: int = DEFAULT_TEXT_TOKENS,
           text_before: Optional[int] = None, budget: Optional[int] = None) -> Theory:
    """Prefill FLOPs of one image + `text_tokens` text tokens. `plan=None` is stock LLaVA
    (CLIP runs all its layers; no pruning, no scoring); `Plan("none")` is our engine with
    pruning disabled (CLIP stops at the select layer)."""
    before, after = split_text(text_tokens, text_before)
    stock = plan is None
    plan_ = plan if plan is not None else Plan("none")
    kept1, per_layer = visual_counts(plan_, g)
    clip_layers = g.vision.layers if stock else g.vision.layers_run
    vision = g.crops * (patch_embed_macs(g) + clip_layers * clip_layer_macs(g))
    projector = projector_macs(kept1, g)
    decoder = sum(decoder_layer_macs(v + text_tokens, g) for v in per_layer)
    fastv = sum(fastv_layer(v + text_tokens, g) for v in per_layer)
    s_vis = g.crops * vision_score_macs(plan_.vision, g) if plan_.vision is not None else 0
    s_dec = 0
    if any(st.score == "embedding_raters" for st in plan_.decoder):
        s_dec += kept1 * after * g.hidden  # SparseVLM's raters: V T^T of the input embeddings
    for st in plan_.decoder:
        rows = 1 if st.score == "last_token" else after
        ranked = per_layer[st.layer - 1]
        s_dec += decoder_score_macs(st, rows, ranked + text_tokens, g)
        if st.recycle:
            s_dec += recycle_macs(ranked - min(decoder_keep(st.keep, plan_.unit, _image(g)), ranked), g)
    lm_head = g.hidden * g.vocab  # the last position only (what generate needs)
    return Theory(plan_.name if not stock else "stock", budget, g.name, text_tokens, before, kept1, per_layer,
                  2 * vision, 2 * projector, 2 * decoder, 2 * s_vis, 2 * s_dec, 2 * lm_head, fastv, stock)


def method_plan(name: str, budget: Optional[int], g: Geometry, **knobs) -> Plan:
    return MethodConfig.from_name(name, budget, **knobs).plan(g.layers)


def report(g: Geometry, plan: Optional[Plan], text_tokens: int, text_before: Optional[int] = None,
           budget: Optional[int] = None, measured: bool = False) -> Dict[str, object]:
    """One method against stock LLaVA, as the CLI prints it."""
    t = theory(g, plan, text_tokens, text_before, budget)
    base = theory(g, None, text_tokens, text_before)
    out: Dict[str, object] = {
        "geometry": g.name, "method": t.method, "budget": budget, "text_tokens": text_tokens,
        "text_before_image": t.text_before, "visual_tokens": g.visual_tokens,
        "vision_kept": t.vision_kept, "remaining": t.tokens_per_layer[-1], "t_eq": round(t.t_eq, 3),
        "tokens_per_layer": t.tokens_per_layer,
        "decoder_flops": t.decoder, "baseline_decoder_flops": base.decoder,
        "ratio": t.decoder / base.decoder,
        "total_flops": t.total, "baseline_total_flops": base.total, "total_ratio": t.total / base.total,
        "vision_flops": t.vision, "projector_flops": t.projector, "scoring_flops": t.scoring,
        "scoring_vision_flops": t.scoring_vision, "scoring_decoder_flops": t.scoring_decoder,
        "lm_head_flops": t.lm_head, "baseline_vision_flops": base.vision,
        "fastv_decoder": t.fastv_decoder, "fastv_baseline_decoder": base.fastv_decoder,
        "fastv_ratio": t.fastv_decoder / base.fastv_decoder,
        "units": "FLOPs = 2 x MACs, exact matmuls (SwiGLU 3ndm); fastv_* = 4nd^2+2n^2d+2ndm (MACs)",
    }
    if measured:
        from .flop_count import measure, measured_baseline

        m = measure(g, plan, text_tokens, text_before)
        mb = measured_baseline(g, text_tokens, text_before)
        out["measured"] = m
        out["measured_baseline"] = mb
        out["measured_rel_err"] = {
            "decoder": m["decoder"] / t.decoder - 1, "total": m["total"] / t.total - 1,
            "vision": m["vision"] / t.vision - 1, "projector": m["projector"] / t.projector - 1,
            "baseline_total": mb["total"] / base.total - 1,
        }
    return out


# -------------------------------------------------------------------------- CLI
def _fmt_runs(counts: Sequence[int]) -> str:
    parts, i = [], 0
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1] == counts[i]:
            j += 1
        parts.append(f"{counts[i]}x{j - i + 1}" if j > i else str(counts[i]))
        i = j + 1
    return ", ".join(parts)


def _tf(x: float) -> str:
    return f"{x / 1e12:.3f}"


def _table(rows: List[Dict[str, object]], g: Geometry, text_tokens: int) -> str:
    lines = [f"geometry {g.name}: {g.layers} layers, d {g.hidden}, m {g.intermediate}, {g.heads} heads; "
             f"{g.visual_tokens} visual + {text_tokens} text tokens; CLIP {g.vision.layers} layers d "
             f"{g.vision.hidden} ({g.vision.layers_run} run by llava_star)",
             "FLOPs = 2 x MACs (exact matmuls, SwiGLU); FastV-formula ratio = 4nd^2+2n^2d+2ndm, decoder only",
             ""]
    head = ["method", "budget", "remaining", "t_eq", "decoder TFLOPs", "ratio", "FastV-formula ratio",
            "total TFLOPs", "total ratio", "scoring GFLOPs", "visual tokens per layer"]
    if any("measured" in r for r in rows):
        head[-1:-1] = ["measured total TFLOPs", "err"]
    body = []
    for r in rows:
        line = [r["method"], "-" if r["budget"] is None else str(r["budget"]), str(r["remaining"]),
                f"{r['t_eq']:.1f}", _tf(r["decoder_flops"]), f"{r['ratio']:.3f}", f"{r['fastv_ratio']:.3f}",
                _tf(r["total_flops"]), f"{r['total_ratio']:.3f}", f"{r['scoring_flops'] / 1e9:.2f}",
                _fmt_runs(r["tokens_per_layer"])]
        if "measured" in r:
            line[-1:-1] = [_tf(r["measured"]["total"]), f"{100 * r['measured_rel_err']['total']:+.2f}%"]
        body.append(line)
    base = rows[0]
    body.append(["stock llava", "-", str(g.visual_tokens), f"{g.visual_tokens:.1f}",
                 _tf(base["baseline_decoder_flops"]), "1.000", "1.000", _tf(base["baseline_total_flops"]),
                 "1.000", "0.00", f"{g.visual_tokens}x{g.layers}"])
    if "measured" in base:
        mb = base["measured_baseline"]["total"]
        body[-1][-1:-1] = [_tf(mb), f"{100 * base['measured_rel_err']['baseline_total']:+.2f}%"]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    lines += [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    if len(rows) > 1:
        lines += ["", "visual tokens per decoder layer:"]
        names = [f"{r['method']}" + ("" if r["budget"] is None else f"@{r['budget']}") for r in rows]
        w = max(6, *(len(n) for n in names))
        lines.append("layer  " + "  ".join(n.rjust(w) for n in names))
        for i in range(g.layers):
            lines.append(f"{i:>5}  " + "  ".join(str(r["tokens_per_layer"][i]).rjust(w) for r in rows))
        lines.append("t_eq   " + "  ".join(f"{r['t_eq']:.1f}".rjust(w) for r in rows))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from .cli import add_method_args

    p = argparse.ArgumentParser(prog="python -m llava_star.flops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--geometry", default=None, choices=sorted(GEOMETRIES),
                   help="model geometry (default llava-v1.5-7b)")
    p.add_argument("--model-path", default=None,
                   help="a checkpoint directory (llava-hf or haotian-liu/LLaVA): its config.json's geometry "
                        "instead of --geometry")
    p.add_argument("--text-tokens", type=int, default=DEFAULT_TEXT_TOKENS,
                   help=f"all non-image tokens of the prompt (default {DEFAULT_TEXT_TOKENS})")
    p.add_argument("--text-before", type=int, default=None,
                   help=f"of those, tokens before the image (default {DEFAULT_TEXT_BEFORE}, "
                        "at most text-tokens - 1); the rest follow it and are STAR's scoring rows")
    p.add_argument("--measured", action="store_true",
                   help="also count FLOPs with torch.utils.flop_counter on a meta-device model of the "
                        "geometry, through the real code path")
    p.add_argument("--json", action="store_true", help="one JSON line per method")
    add_method_args(p, extra_methods=("all",), extra_help="; 'all': every method at --budget side by side")
    return p


def _plans_for_all(args, g: Geometry):
    from .cli import knob_flags_given

    for flag in knob_flags_given(args):
        raise SystemExit(f"error: {flag} needs a single --method, not 'all'")
    budget = args.budget if args.budget is not None else 58
    out = [("none", None, None)]
    for name in METHODS[1:]:
        b = get(name).nearest_budget(budget)
        if b != budget:
            print(f"note: {name} runs at budget {b}, its nearest published schedule (asked: {budget})",
                  file=sys.stderr)
        unit = {"unit": args.budget_unit} if getattr(args, "budget_unit", "image") != "image" else {}
        plan = method_plan(name, b, g, **unit)
        if g.crops > 1 and plan.single_crop_only:
            print(f"note: {name} skipped: it needs one crop per image, {g.name} has {g.crops}", file=sys.stderr)
            continue
        out.append((name, b, plan))
    return out


def _note_budget(name: str, budget: Optional[int], remaining: int) -> None:
    """Say so when a method ends with another count than the budget asked for (an int budget
    spread over NeXT's crops, rounded up per crop); schedule budgets (SparseVLM) are t_eq-like."""
    if budget is not None and get(name).budgets is None and remaining != budget:
        print(f"note: {name} --budget {budget} keeps {remaining} visual tokens here", file=sys.stderr)


def _geometry(args) -> Geometry:
    from .geometry import geometry_of_config

    if args.model_path is None:
        return get_geometry(args.geometry or "llava-v1.5-7b")
    if args.geometry is not None:
        raise SystemExit("error: --model-path reads the geometry from the checkpoint; drop --geometry")
    try:
        return geometry_of_config(args.model_path)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def main(argv=None) -> int:
    from .cli import method_from_args

    args = build_parser().parse_args(argv)
    g = _geometry(args)
    if args.measured:
        from .hosts import environment_problem

        if environment_problem("llava"):
            raise SystemExit("error: --measured counts through the llava host's model (llava-torch, not "
                             "installed here); the theory needs neither")
    if args.measured and g.crops != 1:
        raise SystemExit(f"error: --measured builds a meta model in LLaVA-1.5's flat layout; {g.name} is "
                         "theory-only here (python -m llava_star.bench --model-path counts a real NeXT prefill)")
    if args.method == "all":
        plans = _plans_for_all(args, g)
    else:
        cfg = method_from_args(args)
        plans = [(cfg.name, cfg.budget, cfg.plan(g.layers))]
    rows = []
    try:
        for name, budget, plan in plans:
            if plan is None:
                plan = Plan("none")
            plan.validate(g.layers, g.num_patches)
            rows.append(report(g, plan, args.text_tokens, args.text_before, budget, args.measured))
            _note_budget(name, budget, rows[-1]["remaining"])
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(_table(rows, g, args.text_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
