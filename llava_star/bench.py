"""Latency, throughput, memory and KV-cache size of every method, next to its FLOPs.

    python -m llava_star.bench --geometry cpu-mid --threads 2                     # this CPU
    python -m llava_star.bench --geometry llava-v1.5-7b --random-weights --device cuda --dtype float16
    python -m llava_star.bench --model-path liuhaotian/llava-v1.5-7b --device cuda
    python -m llava_star.bench --model-path llava-hf/llava-1.5-7b-hf --device cuda      # hf host (.venv-hf)
    python -m llava_star.bench --model-path llava-hf/llava-v1.6-vicuna-7b-hf --fixed-grid 672 --device cuda
    python -m llava_star.bench --host hf --geometry cpu-mid --random-weights --threads 2

Rows: `stock` (llava's own vision tower and LlamaModel, no llava_star code; on the hf host
transformers' unmodified LlavaForConditionalGeneration), `none` (our engine with pruning
disabled), then each method at each budget. `--host auto` picks the host from the
checkpoint's config.json (llava when there is no --model-path); `--host hf` runs llava-hf
checkpoints on transformers' LlavaForConditionalGeneration / LlavaNextForConditionalGeneration
and builds random-weight models as the former (in .venv-hf). Per row: prefill latency
(time to first token: vision tower, projector, merge, every decoder layer, first token),
decode latency per token, end-to-end latency for `--new-tokens` tokens and its throughput,
peak memory (CUDA: `max_memory_allocated`; CPU: the process's RSS high-water mark, reset
per run through /proc/self/clear_refs), KV-cache bytes after prefill, t_eq and theoretical
prefill FLOPs (`llava_star.flops`). Warm-up runs first, then `--repeats` rounds over all
rows (round-robin, so drift hits every row alike); medians with min/max and IQR. CUDA is
timed with events after a synchronize. A second, instrumented pass times the scoring of
both stages and the vision tower (see `--no-scoring`). Prompts are token ids (a fixed
MME-like length, no tokenizer): `--text-before` ids, the image placeholder (on the hf host
one `image_token_id` per visual token, as its processor expands `<image>`), `--text-after`
ids. LLaVA-NeXT checkpoints (either host) are fed a synthetic `--image-size` noise image
through the checkpoint's own anyres processing (on the hf host one placeholder per row of
transformers' packed layout, newlines included); their FLOPs are counted on a real prefill.
Both `stock` and our engine compute logits for the last position only at prefill, as
generation needs (transformers 4.37's LlamaForCausalLM would compute all of them).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .engine.plan import Plan
from .methods import METHODS, MethodConfig, get
from .geometry import GEOMETRIES, Geometry, build_model, geometry_of, get_geometry

DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class Case:
    label: str
    method: str
    budget: Optional[int]
    plan: Optional[Plan]  # None: stock llava

    @property
    def stock(self) -> bool:
        return self.plan is None


@dataclass
class Result:
    case: Case
    prefill: List[float] = field(default_factory=list)   # seconds
    decode: List[float] = field(default_factory=list)    # seconds per token
    e2e: List[float] = field(default_factory=list)       # seconds for new_tokens tokens
    peak: List[int] = field(default_factory=list)        # bytes
    kv_bytes: int = 0
    tokens_per_layer: List[int] = field(default_factory=list)
    t_eq: float = 0.0
    flops: Dict[str, object] = field(default_factory=dict)
    timed_prefill: List[float] = field(default_factory=list)  # instrumented pass
    score1: List[float] = field(default_factory=list)
    score2: List[float] = field(default_factory=list)
    vision: List[float] = field(default_factory=list)


# -------------------------------------------------------------------------- cases
def build_cases(methods: List[str], budgets: List[int], g: Geometry, stock: bool = True,
                none: bool = True, warn=print, unit: str = "image", max_tokens: Optional[int] = None) -> List[Case]:
    """`unit` / `max_tokens`: LLaVA-NeXT's budget convention and the most patch tokens a count
    may refer to (see llava_star.hosts.llava.max_visual_tokens); LLaVA-1.5: one crop."""
    knobs = {"unit": unit} if unit != "image" else {}
    cases = []
    if stock:
        cases.append(Case("stock", "stock", None, None))
    if none:
        cases.append(Case("none", "none", None, Plan("none")))
    for name in methods:
        for b in budgets:
            published = get(name).budgets
            if published is not None and b not in published:
                warn(f"skipping {name}@{b}: published schedules exist for {sorted(published)}")
                continue
            plan = MethodConfig.from_name(name, b, **knobs).plan(g.layers, max_tokens or g.num_patches).validate(
                g.layers, max_tokens or g.num_patches)
            cases.append(Case(f"{name}@{b}", name, b, plan))
    return cases


def _stats(xs: List[float]) -> Dict[str, float]:
    if not xs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "q1": float("nan"),
                "q3": float("nan")}
    s = sorted(xs)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else [s[0]] * 3
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "q1": q[0], "q3": q[2]}


def summarise(results: List[Result], new_tokens: int) -> List[Dict[str, object]]:
    base = next((r for r in results if r.case.stock), results[0])
    none = next((r for r in results if r.case.method == "none"), None)
    bp = _stats(base.prefill)["median"]
    rows = []
    for r in results:
        p, d, e = _stats(r.prefill), _stats(r.decode), _stats(r.e2e)
        row = {
            "method": r.case.method, "budget": r.case.budget, "label": r.case.label,
            "remaining": r.tokens_per_layer[-1] if r.tokens_per_layer else None,
            "t_eq": round(r.t_eq, 2),
            "tflops": r.flops["total_flops"] / 1e12, "flops_ratio": r.flops["total_ratio"],
            "decoder_tflops": r.flops["decoder_flops"] / 1e12, "decoder_flops_ratio": r.flops["ratio"],
            "prefill_ms": 1e3 * p["median"], "prefill_ms_min": 1e3 * p["min"], "prefill_ms_max": 1e3 * p["max"],
            "prefill_ms_q1": 1e3 * p["q1"], "prefill_ms_q3": 1e3 * p["q3"],
            "prefill_ratio": p["median"] / bp,
            "decode_ms_per_token": 1e3 * d["median"], "decode_ms_min": 1e3 * d["min"],
            "decode_ms_max": 1e3 * d["max"],
            "e2e_ms": 1e3 * e["median"], "e2e_ms_min": 1e3 * e["min"], "e2e_ms_max": 1e3 * e["max"],
            "new_tokens": new_tokens, "tokens_per_s": new_tokens / e["median"],
            "peak_mem_mib": max(r.peak) / 2 ** 20 if r.peak else float("nan"),
            "kv_cache_bytes": r.kv_bytes, "kv_cache_mib": r.kv_bytes / 2 ** 20,
            "repeats": len(r.prefill),
            "tokens_per_layer": " ".join(map(str, r.tokens_per_layer)),
        }
        row["prefill_over_flops"] = row["prefill_ratio"] / row["flops_ratio"]
        # best-of-repeats view, less sensitive to other processes sharing the machine
        row["prefill_ratio_min"] = p["min"] / _stats(base.prefill)["min"]
        row["prefill_over_flops_min"] = row["prefill_ratio_min"] / row["flops_ratio"]
        if r.timed_prefill:
            tp = sum(r.timed_prefill)
            row["scoring_ms"] = 1e3 * (sum(r.score1) + sum(r.score2)) / len(r.timed_prefill)
            row["scoring_stage1_ms"] = 1e3 * sum(r.score1) / len(r.timed_prefill)
            row["scoring_stage2_ms"] = 1e3 * sum(r.score2) / len(r.timed_prefill)
            row["scoring_pct"] = 100 * (sum(r.score1) + sum(r.score2)) / tp
            row["vision_ms"] = 1e3 * sum(r.vision) / len(r.timed_prefill)
            row["instrumented_prefill_ms"] = 1e3 * tp / len(r.timed_prefill)
        rows.append(row)
    # language-model view: prefill minus vision tower + projector, run by run (instrumented pass)
    if base.timed_prefill:
        llm = lambda r: _stats([p - v for p, v in zip(r.timed_prefill, r.vision)])  # noqa: E731
        b = llm(base)
        for r, row in zip(results, rows):
            if r.timed_prefill:
                s = llm(r)
                row["llm_prefill_ms"] = 1e3 * s["median"]
                row["llm_prefill_ratio"] = s["median"] / b["median"]
                row["llm_prefill_ratio_min"] = s["min"] / b["min"]
                row["llm_over_decoder_flops"] = row["llm_prefill_ratio"] / row["decoder_flops_ratio"]
    if none is not None and none is not base:
        row = rows[results.index(none)]
        row["engine_overhead_pct"] = 100 * (row["prefill_ratio"] - 1)
        row["engine_overhead_pct_min"] = 100 * (row["prefill_ratio_min"] - 1)
    return rows


# A ratio of two medians is only as good as their spread: above these, say so.
IQR_LIMIT = 0.10      # interquartile range / median, with >= 4 repeats
RANGE_LIMIT = 0.20    # (max - min) / median, with fewer repeats


def spread_warnings(rows, meta) -> List[str]:
    """One line per row whose prefill times spread too wide to trust its ratio, and how to
    rerun (a busy machine: FastV prefill was seen at 358-2278 ms across five repeats)."""
    out = []
    for r in rows:
        med, n = r["prefill_ms"], r["repeats"]
        if n >= 4:
            spread, what, limit = (r["prefill_ms_q3"] - r["prefill_ms_q1"]) / med, "IQR", IQR_LIMIT
        else:
            spread, what, limit = (r["prefill_ms_max"] - r["prefill_ms_min"]) / med, "range", RANGE_LIMIT
        if spread > limit:
            out.append(f"{r['label']}: prefill {r['prefill_ms_min']:.1f}-{r['prefill_ms_max']:.1f} ms over {n} "
                       f"repeats ({what} {100 * spread:.0f}% of the median, limit {100 * limit:.0f}%)")
    if out:
        load = meta.get("loadavg_before")
        busy = f"; load average was {load[0]:.1f} at the start" if load else ""
        out.append(f"too noisy to trust these ratios{busy}: rerun on an idle machine with more repeats, "
                   f"e.g. --repeats 20 --warmup 2" + (" --threads N" if meta.get("device", "").startswith("cpu") else ""))
    return out


# ------------------------------------------------------------------------- output
def _ms(row, key, spread=True) -> str:
    v = row[key]
    if not spread:
        return f"{v:.1f}"
    lo, hi = row[key + "_min"], row[key + "_max"]
    return f"{v:.1f} [{lo:.1f}-{hi:.1f}]"


def markdown(rows, meta) -> str:
    head = ["Method", "Tokens", "t_eq", "TFLOPs", "FLOPs ratio", "Prefill ms [min-max]", "Prefill ratio",
            "Prefill ratio / FLOPs ratio", "Decode ms/token", f"E2E ms ({meta['new_tokens']} tok) [min-max]",
            "Tokens/s", "Peak mem MiB", "KV cache MiB", "Scoring % of prefill"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tokens = "576" if r["remaining"] is None else str(r["remaining"])
        if r["method"] in ("stock", "none"):
            tokens = f"{tokens} (all)"
        name = r["method"] if r["budget"] is None else f"{r['method']}"
        cells = [name, tokens, f"{r['t_eq']:.1f}", f"{r['tflops']:.3f}", f"{r['flops_ratio']:.3f}",
                 _ms(r, "prefill_ms"), f"{r['prefill_ratio']:.3f}", f"{r['prefill_over_flops']:.3f}",
                 f"{r['decode_ms_per_token']:.1f}", _ms(r, "e2e_ms"), f"{r['tokens_per_s']:.2f}",
                 f"{r['peak_mem_mib']:.0f}", f"{r['kv_cache_mib']:.2f}",
                 f"{r['scoring_pct']:.2f}" if "scoring_pct" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_table(rows, meta) -> str:
    head = ["method", "tokens", "t_eq", "TFLOPs", "ratio", "prefill ms [min-max]", "p.ratio", "p/F",
            "decode ms/tok", "e2e ms", "tok/s", "peak MiB", "KV MiB", "score %"]
    body = []
    for r in rows:
        body.append([r["label"], str(r["remaining"]), f"{r['t_eq']:.1f}", f"{r['tflops']:.3f}",
                     f"{r['flops_ratio']:.3f}", _ms(r, "prefill_ms"), f"{r['prefill_ratio']:.3f}",
                     f"{r['prefill_over_flops']:.3f}", f"{r['decode_ms_per_token']:.1f}",
                     f"{r['e2e_ms']:.0f}", f"{r['tokens_per_s']:.2f}", f"{r['peak_mem_mib']:.0f}",
                     f"{r['kv_cache_mib']:.2f}", f"{r['scoring_pct']:.2f}" if "scoring_pct" in r else "-"])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


CSV_FIELDS = ["label", "method", "budget", "remaining", "t_eq", "tflops", "flops_ratio", "decoder_tflops",
              "decoder_flops_ratio", "prefill_ms", "prefill_ms_min", "prefill_ms_max", "prefill_ms_q1",
              "prefill_ms_q3", "prefill_ratio", "prefill_over_flops", "prefill_ratio_min", "prefill_over_flops_min",
              "llm_prefill_ms", "llm_prefill_ratio", "llm_prefill_ratio_min", "llm_over_decoder_flops",
              "decode_ms_per_token", "decode_ms_min", "decode_ms_max", "e2e_ms", "e2e_ms_min", "e2e_ms_max",
              "new_tokens", "tokens_per_s", "peak_mem_mib", "kv_cache_bytes", "kv_cache_mib",
              "scoring_pct", "scoring_ms", "scoring_stage1_ms", "scoring_stage2_ms", "vision_ms",
              "instrumented_prefill_ms", "engine_overhead_pct", "engine_overhead_pct_min", "repeats", "tokens_per_layer"]


def write_outputs(out_dir: Path, rows, meta) -> Dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "bench.md", "csv": out_dir / "bench.csv", "json": out_dir / "bench.json"}
    md = [f"# llava_star.bench: {meta['model']}", "",
          f"{meta['device_name']}, {meta['dtype']}, torch {meta['torch']}, transformers {meta['transformers']}, "
          f"{meta['threads']} threads, {meta['date']}", "",
          f"Prompt: {meta['text_tokens']} text tokens ({meta['text_before']} before the image) + "
          f"{meta['visual_tokens']} visual tokens, batch {meta['batch']}; {meta['warmup']} warm-up, "
          f"{meta['repeats']} repeats (median [min-max]); FLOPs: theoretical prefill FLOPs (2 x MACs, "
          "llava_star.flops), ratios against `stock`.", "", f"Command: `{meta['command']}`", "",
          markdown(rows, meta)]
    ab = meta.get("engine_overhead_ab")
    if ab:
        md.append(f"Engine overhead (decoder loop alone, stock LlamaModel vs ours without pruning, {ab['pairs']} "
                  f"paired runs): median {ab['overhead_pct_median']:+.2f}%, best-of {ab['overhead_pct_best_of']:+.2f}%.\n")
    if meta.get("spread_warnings"):
        md.append("**Spread warning**: " + "; ".join(meta["spread_warnings"]) + ".\n")
    paths["md"].write_text("\n".join(md))
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    paths["json"].write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    return paths


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava_star.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model")
    src.add_argument("--geometry", default=None, choices=sorted(GEOMETRIES),
                     help="build a random-weight model of this geometry (default cpu-mid when no --model-path)")
    src.add_argument("--random-weights", action="store_true",
                     help="random weights of --geometry (implied by --geometry; no download)")
    src.add_argument("--model-path", default=None,
                     help="a real checkpoint instead of --geometry (haotian-liu/LLaVA, or llava-hf LLaVA-1.5 / NeXT: "
                          "the hf host)")
    src.add_argument("--model-base", default=None)
    src.add_argument("--host", default="auto", choices=("auto", "llava", "hf"),
                     help="llava (llava-torch) or hf (transformers' Llava / LlavaNext classes); auto: from "
                          "--model-path's config.json, llava without one (default: %(default)s)")
    run = p.add_argument_group("run")
    run.add_argument("--methods", default="star,fastv,fastervlm",
                     help=f"comma-separated methods of {','.join(METHODS[1:])} (default: %(default)s)")
    run.add_argument("--budgets", default="115,58,29", help="comma-separated remaining-token budgets (default: %(default)s)")
    run.add_argument("--no-stock", action="store_true", help="skip the stock-llava row")
    run.add_argument("--no-none", action="store_true", help="skip the pruning-disabled row")
    run.add_argument("--device", default=None, help="default cuda when there is one, else cpu")
    run.add_argument("--dtype", default=None, choices=DTYPES,
                     help="default float16 on cuda, float32 on cpu")
    run.add_argument("--attn", default="sdpa", choices=("sdpa", "eager", "flash_attention_2"))
    run.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    run.add_argument("--repeats", type=int, default=5, help="timed rounds over all rows (default: %(default)s)")
    run.add_argument("--warmup", type=int, default=1, help="untimed runs per row first (default: %(default)s)")
    run.add_argument("--new-tokens", type=int, default=8, help="tokens generated per run, >= 1 (default: %(default)s)")
    run.add_argument("--text-before", type=int, default=35, help="prompt ids before the image")
    run.add_argument("--text-after", type=int, default=30, help="prompt ids after the image")
    run.add_argument("--batch", type=int, default=1)
    run.add_argument("--budget-unit", default="image", choices=("image", "crop"),
                     help="LLaVA-NeXT checkpoints: budgets per whole image (default) or per crop")
    run.add_argument("--fixed-grid", type=int, default=None,
                     help="LLaVA-NeXT checkpoints: one anyres grid for every image, e.g. 672 (2x2 + base)")
    run.add_argument("--image-size", default="672x672", metavar="WxH",
                     help="LLaVA-NeXT checkpoints: size of the synthetic image whose anyres crops are fed "
                          "(default 672x672: base + 2x2 crops)")
    run.add_argument("--no-scoring", action="store_true", help="skip the instrumented scoring-time pass")
    run.add_argument("--scoring-repeats", type=int, default=3, help="prefills per row in that pass (default 3)")
    run.add_argument("--ab-pairs", type=int, default=10,
                     help="paired runs of the decoder loop, stock LlamaModel vs our engine without pruning "
                          "(engine overhead; 0 skips)")
    run.add_argument("--profile", default=None, metavar="LABEL",
                     help="also profile one prefill of this row (e.g. star@58) with torch.profiler")
    run.add_argument("--out-dir", default=None,
                     help="where bench.md/.csv/.json go (default results/bench/<model>-<device>)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def load_model(args, device, dtype):
    if args.model_path and (args.geometry or args.random_weights):
        raise SystemExit("error: --model-path runs a real checkpoint; drop --geometry/--random-weights")
    if args.host == "hf":
        return load_hf_model(args, device, dtype)
    if args.model_path:
        from .loader import load_pretrained_model
        try:
            _, model, processor, _ = load_pretrained_model(args.model_path, args.model_base, None, star=None,
                                                           device=str(device), dtype=dtype,
                                                           attn_implementation=args.attn,
                                                           fixed_grid=args.fixed_grid)
        except (OSError, ValueError, NotImplementedError) as err:
            msg = str(err) if "--model-path" in str(err) else f"cannot load --model-path {args.model_path}: {err}"
            raise SystemExit(f"error: {msg}") from None
        model.star_bench_processor = processor
        return model, geometry_of(model, os.path.basename(args.model_path.rstrip("/"))), args.model_path
    if args.fixed_grid is not None or args.budget_unit != "image":
        raise SystemExit("error: --fixed-grid and --budget-unit are for LLaVA-NeXT checkpoints (--model-path)")
    g = get_geometry(args.geometry or "cpu-mid")
    if g.crops != 1:
        raise SystemExit(f"error: geometry {g.name} is theory-only here (random-weight models are built in "
                         "LLaVA-1.5's flat layout); bench a NeXT checkpoint with --model-path, or see "
                         "python -m llava_star.flops")
    model = build_model(g, device=device, dtype=dtype, attn_implementation=args.attn, seed=args.seed)
    return model, g, f"{g.name} (random weights)"


def load_hf_model(args, device, dtype):
    """transformers' LlavaForConditionalGeneration: a llava-hf checkpoint, or random weights of --geometry."""
    from .geometry import build_hf_model, geometry_of_config

    if args.model_base:
        raise SystemExit("error: --model-base is for haotian-liu/LLaVA LoRA checkpoints (--host llava)")
    if not args.model_path:
        _refuse_next_flags(args)
        g = get_geometry(args.geometry or "cpu-mid")
        try:
            model = build_hf_model(g, device=device, dtype=dtype, attn_implementation=args.attn, seed=args.seed)
        except ValueError as err:
            raise SystemExit(f"error: --geometry {g.name}: {err}") from None
        return model, g, f"{g.name} (random weights, transformers LlavaForConditionalGeneration)"
    from .hf import load_pretrained

    try:
        g = geometry_of_config(args.model_path)
        if g.crops == 1:
            _refuse_next_flags(args)
        processor, model = load_pretrained(args.model_path, device=str(device), dtype=dtype,
                                           attn_implementation=args.attn, fixed_grid=args.fixed_grid)
    except (OSError, ValueError) as err:
        msg = str(err) if "--model-path" in str(err) else f"cannot load --model-path {args.model_path}: {err}"
        raise SystemExit(f"error: {msg}") from None
    model.star_bench_processor = processor
    return model, g, args.model_path


def _refuse_next_flags(args) -> None:
    if args.fixed_grid is not None or args.budget_unit != "image":
        raise SystemExit("error: --fixed-grid and --budget-unit are for LLaVA-NeXT checkpoints (--model-path)")


def main(argv=None) -> int:
    from .cli import tool_host

    args = build_parser().parse_args(argv)
    args.host = tool_host(args.host, args.model_path)  # a wrong host or venv: one line, before torch loads
    import torch  # after parsing, so --help stays fast

    from .flop_count import prompt_ids
    from .flops import report
    from .timing import Bench, anyres_inputs, count_prefill, counted_flops, measure_rows, profile

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.new_tokens < 1 or args.repeats < 1 or args.warmup < 0:
        raise SystemExit("error: --new-tokens and --repeats must be >= 1, --warmup >= 0")
    if args.text_after < 1:
        raise SystemExit("error: --text-after must be >= 1 (decoder scores read the text after the image)")
    if args.text_before < 0:
        raise SystemExit(f"error: --text-before must be >= 0, got {args.text_before}")
    if args.batch < 1:
        raise SystemExit(f"error: --batch must be >= 1, got {args.batch}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS or m == "none"]
    if bad:
        raise SystemExit(f"error: unknown --methods {', '.join(bad)}; choose from {', '.join(METHODS[1:])} "
                         "(stock and none rows are always included unless --no-stock/--no-none)")
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        raise SystemExit(f"error: --budgets must be comma-separated ints, got {args.budgets!r}") from None

    model, g, desc = load_model(args, device, dtype)
    if args.out_dir is None:
        args.out_dir = os.path.join("results", "bench", f"{g.name}-{device.type}")
    try:
        if args.host == "hf":
            from .hf import max_visual_tokens
        else:
            from .hosts.llava import max_visual_tokens
        cases = build_cases(methods, budgets, g, not args.no_stock, not args.no_none,
                            warn=lambda m: print(f"warning: {m}", file=sys.stderr), unit=args.budget_unit,
                            max_tokens=max_visual_tokens(model, args.budget_unit) if args.model_path else None)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.profile and not any(c.label == args.profile for c in cases):
        raise SystemExit(f"error: --profile {args.profile}: no such row ({', '.join(c.label for c in cases)})")
    try:  # fail now, not after the whole run
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        probe = Path(args.out_dir) / ".llava_star_bench_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SystemExit(f"error: --out-dir {args.out_dir}: not writable ({err})") from None
    text_tokens = args.text_before + args.text_after
    gen = torch.Generator().manual_seed(args.seed)
    v = g.vision
    pixels = torch.randn(args.batch, 3, v.image_size, v.image_size, generator=gen).to(device, dtype)
    placeholders = g.num_patches
    if args.host == "hf":
        from .hosts.hf import is_next
        from .timing_hf import HFBench, anyres_inputs as hf_anyres_inputs
        bench = HFBench(model)
        anyres = is_next(model)
        if anyres:
            pixels, bench.image_sizes, placeholders = hf_anyres_inputs(
                model, model.star_bench_processor, args.image_size, args.batch, args.seed, device, dtype)
    else:
        bench = Bench(model)
        anyres = getattr(model.config, "image_aspect_ratio", None) == "anyres"
        if anyres:
            pixels, bench.image_sizes = anyres_inputs(model, args.image_size, args.batch, args.seed, device, dtype)
    image = {"image_token": model.config.image_token_id, "image_tokens": placeholders} if args.host == "hf" else {}
    ids = prompt_ids(text_tokens, args.text_before, g.vocab, args.seed, args.batch, **image).to(device)
    _check_cases(bench, cases)
    results = [Result(c) for c in cases]
    # NeXT's token counts depend on the image (unpad, newlines): count a real prefill instead
    stock = count_prefill(bench, Case("stock", "stock", None, None), ids, pixels) if anyres else None
    for r in results:
        r.flops = (counted_flops(bench, r.case, ids, pixels, stock) if anyres
                   else report(g, r.case.plan, text_tokens, args.text_before, r.case.budget))

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    ab = measure_rows(bench, results, ids, pixels, args, g)

    rows = summarise(results, args.new_tokens)
    meta = {
        "model": desc, "host": args.host, "geometry": g.summary(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU {_cpu_name()} ({os.cpu_count()} cores)",
        "dtype": str(dtype).replace("torch.", ""), "attn": args.attn, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "python": platform.python_version(), "date": datetime.date.today().isoformat(),
        "text_tokens": text_tokens, "text_before": args.text_before, "visual_tokens": g.visual_tokens,
        "batch": args.batch, "warmup": args.warmup, "repeats": args.repeats, "new_tokens": args.new_tokens,
        "command": "python -m llava_star.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "engine_overhead_ab": ab, "loadavg_before": load_before, "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    meta["spread_warnings"] = spread_warnings(rows, meta)
    paths = write_outputs(Path(args.out_dir), rows, meta)
    print(text_table(rows, meta))
    for line in meta["spread_warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    _print_targets(rows)
    if ab:
        print(f"engine overhead, decoder loop alone ({ab['pairs']} paired runs): median "
              f"{ab['overhead_pct_median']:+.2f}%, mean {ab['overhead_pct_mean']:+.2f}%, best-of "
              f"{ab['overhead_pct_best_of']:+.2f}% (stock {ab['stock_ms_median']:.1f} ms, ours "
              f"{ab['engine_ms_median']:.1f} ms)")
    if args.profile:
        case = next((c for c in cases if c.label == args.profile), None)
        if case is None:
            raise SystemExit(f"error: --profile {args.profile}: no such row ({', '.join(c.label for c in cases)})")
        text = profile(bench, case, ids, pixels, device)
        (Path(args.out_dir) / f"profile_{case.label.replace('@', '_')}.txt").write_text(text)
        print(text)
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['json']}")
    return 0


def _check_cases(bench, cases) -> None:
    """Every row's plan on this model, before any timing: the host refuses what the checkpoint
    cannot run (VisionZip on LLaVA-NeXT's crops), named in one line."""
    for case in cases:
        try:
            bench.set_case(case)
        except ValueError as err:
            raise SystemExit(f"error: --methods {case.method}: {err}") from None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _print_targets(rows):
    by = {r["label"]: r for r in rows}
    if "none" in by and "engine_overhead_pct" in by["none"]:
        r = by["none"]
        extra = ""
        if "llm_prefill_ratio" in r:
            extra = (f"; language model part only (vision tower + projector subtracted): "
                     f"{100 * (r['llm_prefill_ratio'] - 1):+.2f}% (best-of {100 * (r['llm_prefill_ratio_min'] - 1):+.2f}%)")
        print(f"pruning disabled vs the stock model: prefill {r['engine_overhead_pct']:+.2f}% (best-of "
              f"{r['engine_overhead_pct_min']:+.2f}%){extra}; decode/token "
              f"{100 * (r['decode_ms_per_token'] / by['stock']['decode_ms_per_token'] - 1):+.2f}%")
    for r in rows:
        if r["method"] not in ("stock", "none"):
            s = f", scoring {r['scoring_pct']:.2f}% of prefill" if "scoring_pct" in r else ""
            if "llm_over_decoder_flops" in r:
                s += (f"; language model part {r['llm_prefill_ratio']:.3f} = {r['llm_over_decoder_flops']:.3f} x "
                      f"decoder FLOPs ratio {r['decoder_flops_ratio']:.3f}")
            print(f"{r['label']}: prefill ratio {r['prefill_ratio']:.3f} = {r['prefill_over_flops']:.3f} x "
                  f"FLOPs ratio {r['flops_ratio']:.3f} (best-of-repeats: {r['prefill_over_flops_min']:.3f} x){s}")


if __name__ == "__main__":
    sys.exit(main())
