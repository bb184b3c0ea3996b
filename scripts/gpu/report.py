"""Helpers of scripts/gpu/run.sh (standard library only, no torch):

    python scripts/gpu/report.py repeats --batch-json B.json --rows N --seconds S --warmup W --min A --max B
        how many round-robin repeats fit in S seconds for N rows, from the batch run's times
    python scripts/gpu/report.py summary WORK_DIR > summary.md
        one Markdown page from what the steps left in WORK_DIR (any step may be missing)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

GOAL_PREFILL_OVER_FLOPS = 1.10   # issue 16: prefill ratio at most 1.10x the FLOPs ratio
GOAL_ENGINE_OVERHEAD_PCT = 2.0   # issue 16: pruning disabled within 2% of stock llava


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------- repeats
def repeats(args) -> int:
    """Repeats R with rows x (warmup + R) x seconds-per-run <= seconds, clamped to [min, max].
    Seconds per run: the mean E2E of the batch run's rows (batch 8 at the same new-token count;
    decoding, most of a run, costs about the same per step at batch 1, so this errs long)."""
    data = _load(Path(args.batch_json))
    if not data or not data.get("rows"):
        print(f"repeats: no batch times in {args.batch_json}; using --min {args.min}", file=sys.stderr)
        return args.min
    per_run = sum(r["e2e_ms"] for r in data["rows"]) / len(data["rows"]) / 1e3
    fit = math.floor(args.seconds / max(args.rows, 1) / per_run) - args.warmup
    r = max(args.min, min(args.max, fit))
    print(f"repeats: {args.rows} rows x ({args.warmup} warm-up + R) x {per_run:.2f} s per run (batch-{data['meta']['batch']} "
          f"mean) in {args.seconds} s: R = {fit}, clamped to [{args.min}, {args.max}] -> {r}", file=sys.stderr)
    return r


# ------------------------------------------------------------------- summary
def _f(v, fmt="{:.2f}"):
    return "-" if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _versions(work: Path):
    text = (work / "versions.txt").read_text() if (work / "versions.txt").exists() else "(setup did not finish)"
    return ["## Versions", "", "```", text.rstrip(), "```", ""]


def _steps(work: Path):
    out = ["## Steps", "", "| step | exit | seconds | command |", "|---|---|---|---|"]
    try:
        with open(work / "status.tsv") as f:
            for row in csv.reader(f, delimiter="\t"):
                if len(row) >= 4:
                    out.append(f"| {row[0]} | {row[1]} | {row[2]} | `{row[3]}` |")
    except OSError:
        out.append("| (none yet) | | | |")
    return out + [""]


def _checks(work: Path):
    out = []
    for name, title in (("checks.json", "Correctness on the device (star@58; decides the exit status)"),
                        ("checks_all.json", "Correctness of the other methods (reported only)")):
        data = _load(work / name)
        if data is None:
            continue
        out += [f"## {title}", "", data["summary"], "", "| method | check | result | detail |", "|---|---|---|---|"]
        out += [f"| {r['method']} | {r['check']} | {'ok' if r['ok'] else '**FAIL**'} | {r['detail']} |"
                for r in data["results"]]
        out.append("")
    return out


LAT_HEAD = ["row", "tokens", "t_eq", "FLOPs ratio", "prefill ms [min-max]", "prefill ratio", "prefill / FLOPs",
            "goal", "LM prefill / decoder FLOPs", "decode ms/token", "E2E ms", "tokens/s", "peak MiB", "KV MiB",
            "scoring %", "run"]


def _latency_rows(data, run: str, skip_reference: bool):
    rows = []
    for r in data["rows"]:
        if skip_reference and r["method"] in ("stock", "none"):
            continue
        pf = r.get("prefill_over_flops")
        goal = "-" if r["method"] in ("stock", "none") else (
            "met" if pf is not None and pf <= GOAL_PREFILL_OVER_FLOPS else "**missed**")
        rows.append([r["label"], str(r["remaining"] if r["remaining"] is not None else "576 (all)"), _f(r["t_eq"], "{:.1f}"),
                     _f(r["flops_ratio"], "{:.3f}"),
                     f"{r['prefill_ms']:.2f} [{r['prefill_ms_min']:.2f}-{r['prefill_ms_max']:.2f}]",
                     _f(r["prefill_ratio"], "{:.3f}"), _f(pf, "{:.3f}"), goal,
                     _f(r.get("llm_over_decoder_flops"), "{:.3f}"), _f(r["decode_ms_per_token"]),
                     _f(r["e2e_ms"], "{:.1f}"), _f(r["tokens_per_s"]), _f(r["peak_mem_mib"], "{:.0f}"),
                     _f(r["kv_cache_mib"]), _f(r.get("scoring_pct")), run])
    return rows


def _table(head, rows):
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _latency(work: Path):
    main, pub = _load(work / "main" / "bench.json"), _load(work / "published" / "bench.json")
    if not main and not pub:
        return []
    meta = (main or pub)["meta"]
    out = ["## Latency, batch 1", "",
           f"{meta['model']}, {meta['device_name']}, {meta['dtype']}, attention {meta['attn']}; prompt "
           f"{meta['text_tokens']} text + {meta['visual_tokens']} visual tokens; {meta['new_tokens']} new tokens; "
           f"{meta['warmup']} warm-up runs per row, then {meta['repeats']} round-robin repeats (median [min-max]). "
           f"Ratios against `stock` of the same run; goal: prefill ratio <= {GOAL_PREFILL_OVER_FLOPS:.2f} x FLOPs "
           "ratio. Run `main`: the 288/115/58/29 rows; run `published`: SparseVLM and VisionZip at their "
           "published budgets, with their own stock and none rows.", ""]
    rows = (_latency_rows(main, "main", False) if main else []) + (_latency_rows(pub, "published", False) if pub else [])
    out += _table(LAT_HEAD, rows) + [""]
    for data, run in ((main, "main"), (pub, "published")):
        if not data:
            continue
        by = {r["label"]: r for r in data["rows"]}
        none = by.get("none", {})
        if "engine_overhead_pct" in none:
            ok = abs(none["engine_overhead_pct"]) <= GOAL_ENGINE_OVERHEAD_PCT
            out.append(f"- {run}: pruning disabled vs stock: prefill {none['engine_overhead_pct']:+.2f}% "
                       f"(best-of {none['engine_overhead_pct_min']:+.2f}%), goal within {GOAL_ENGINE_OVERHEAD_PCT:.0f}%: "
                       f"{'met' if ok else '**missed**'}")
        ab = data["meta"].get("engine_overhead_ab")
        if ab:
            out.append(f"- {run}: decoder loop alone, {ab['pairs']} paired runs: median {ab['overhead_pct_median']:+.2f}%, "
                       f"best-of {ab['overhead_pct_best_of']:+.2f}%")
        for w in data["meta"].get("spread_warnings") or []:
            out.append(f"- {run}: spread warning: {w}")
        out.append(f"- {run} command: `{data['meta']['command']}`")
    return out + [""]


def _throughput(work: Path):
    data = _load(work / "batch8" / "bench.json")
    if not data:
        return []
    meta = data["meta"]
    b, n = meta["batch"], meta["new_tokens"]
    head = ["row", "tokens", "prefill ms", "decode ms/step", "E2E ms", "questions/s", "tokens/s (all rows)",
            "peak MiB", "KV MiB"]
    rows = [[r["label"], str(r["remaining"]), f"{r['prefill_ms']:.2f}", f"{r['decode_ms_per_token']:.2f}",
             f"{r['e2e_ms']:.1f}", f"{b * 1e3 / r['e2e_ms']:.2f}", f"{b * n * 1e3 / r['e2e_ms']:.1f}",
             _f(r["peak_mem_mib"], "{:.0f}"), _f(r["kv_cache_mib"])] for r in data["rows"]]
    return (["## Throughput, batch " + str(b), "",
             f"{b} questions at once, {n} new tokens each; questions/s = {b} / E2E, tokens/s = {b} x {n} / E2E; "
             f"{meta['warmup']} warm-up, {meta['repeats']} repeats (medians).", ""]
            + _table(head, rows) + ["", f"Command: `{meta['command']}`", ""])


def summary(work: Path) -> str:
    lines = ["# GPU benchmark (scripts/gpu/run.sh)", ""]
    for part in (_steps, _checks, _latency, _throughput, _versions):
        lines += part(work)
    return "\n".join(lines) + "\n"


def brief(work: Path) -> str:
    """A run's last lines of output: each step's exit, the checks, each row against the goals."""
    out = []
    try:
        with open(work / "status.tsv") as f:
            out.append("steps: " + ", ".join(f"{r[0]} {'ok' if r[1] == '0' else 'rc ' + r[1]} ({r[2]} s)"
                                             for r in csv.reader(f, delimiter="\t") if len(r) >= 3))
    except OSError:
        out.append("steps: none finished")
    for name in ("checks.json", "checks_all.json"):
        data = _load(work / name)
        if data:
            out.append(f"{name[:-5]}: {data['summary']}")
            out += [f"  FAIL {r['method']} {r['check']}: {r['detail'][:300]}" for r in data["results"] if not r["ok"]]
    for run in ("main", "published", "batch8"):
        data = _load(work / run / "bench.json")
        if not data:
            continue
        cells = []
        for r in data["rows"] if run != "batch8" else []:  # batch8 has no stock row to take ratios against
            if r["method"] in ("stock", "none"):
                continue
            pf = r["prefill_over_flops"]
            cells.append(f"{r['label']} {pf:.3f}{'' if pf <= GOAL_PREFILL_OVER_FLOPS else ' (missed)'}")
        if cells:
            out.append(f"{run}: prefill ratio / FLOPs ratio (goal <= {GOAL_PREFILL_OVER_FLOPS:.2f}): " + ", ".join(cells))
        none = next((r for r in data["rows"] if r["method"] == "none"), {})
        if "engine_overhead_pct" in none:
            out.append(f"{run}: pruning disabled vs stock {none['engine_overhead_pct']:+.2f}% (goal within "
                       f"{GOAL_ENGINE_OVERHEAD_PCT:.0f}%)")
        if run == "batch8":
            b = data["meta"]["batch"]
            out.append("batch8: questions/s " + ", ".join(f"{r['label']} {b * 1e3 / r['e2e_ms']:.2f}" for r in data["rows"]))
        n = len(data["meta"].get("spread_warnings") or [])
        if n:
            out.append(f"{run}: {n - 1} rows spread too wide (see summary.md)")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/gpu/report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("repeats", help="repeats that fit in a time budget")
    r.add_argument("--batch-json", required=True)
    r.add_argument("--rows", type=int, required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--warmup", type=int, required=True)
    r.add_argument("--min", type=int, default=3)
    r.add_argument("--max", type=int, default=10)
    s = sub.add_parser("summary", help="Markdown summary of a run's work folder")
    s.add_argument("work")
    s.add_argument("--brief", action="store_true", help="a few lines: steps, checks, goals")
    args = p.parse_args(argv)
    if args.cmd == "repeats":
        print(repeats(args))
    else:
        sys.stdout.write((brief if args.brief else summary)(Path(args.work)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
