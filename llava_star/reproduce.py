"""Run a whole benchmark x method x budget sweep and write the paper's Table 1 layout.

    python -m llava_star.reproduce --model-path liuhaotian/llava-v1.5-7b \\
        --benchmarks mme,pope,gqa --methods star,fastv,fastervlm,sparsevlm --budgets 288,115,58,29

Every cell runs through `scripts/eval/<bench>.sh` (so through the same runner and scorer a
user runs by hand, chunked over the GPUs in CUDA_VISIBLE_DEVICES). A cell is finished when
its scores file exists; finished cells are never rerun, and an interrupted cell continues
where its answers file stopped (the runner resumes). Delete one cell's scores file to rerun
just that cell. Writes `<out-dir>/table.md`, `table.csv`, `cells.json` and `scores.png`.
SparseVLM runs only at its published budgets (192, 128, 64); other budgets get no SparseVLM
cell, with a warning.
Runner flags after `--` go to every cell (e.g. `-- --device cpu --max_new_tokens 4`); they are part
of each cell's name (a short hash), so a sweep with other flags never reuses these cells.
`--limit N` is a smoke run: every cell answers the first N questions only, into files named
`<cell>-limit<N>` (and the tables into `<out-dir>-limit<N>/`), never the full run's.
A cell whose scorer covered only part of the benchmark (a --limit run, or --allow-missing on a
partial question file) is marked "partial answered/total" in every table and has no score.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from .config import METHODS, SPARSEVLM_SCHEDULES

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "eval"
# bench -> (column title, key of the headline number in the scorer's JSON line)
HEADLINE = {
    "vqav2": ("VQAv2", "accuracy"), "gqa": ("GQA", "accuracy"), "vizwiz": ("VizWiz", None),
    "sqa": ("SQA-IMG", "img_accuracy"), "textvqa": ("TextVQA", "accuracy"),
    "pope": ("POPE", "mean_f1"), "mme": ("MME", "perception"), "mmvet": ("MM-Vet", None),
}
# Published numbers shown beside ours: LLaVA-1.5-13B's MME perception and POPE mean F1 as
# LLaVA reports them (its model zoo / paper).
# The STAR paper's own Table 1 values are not bundled; pass them with --paper-numbers.
ALLOW_MISSING = {"mme", "gqa", "textvqa", "sqa", "vqav2"}  # scorers that take --allow-missing
PUBLISHED = {"llava-v1.5-13b": {"none": {None: {"mme": 1531.3, "pope": 85.9}}}}


def bench_dir(bench: str) -> str:
    """The data folder a script uses, read from the script itself (one source of truth)."""
    script = SCRIPTS / f"{bench}.sh"
    m = re.search(r'^DIR="\$EVAL_DIR/([^"]+)"', script.read_text(), re.M)
    if not m:
        raise SystemExit(f"error: cannot find DIR=... in {script}")
    return m.group(1)


def cell_name(model: str, method: str, budget: Optional[int], extra: Sequence[str] = ()) -> str:
    """`<model>_<method>[-b<budget>][-x<hash of the runner flags after -->]`: a sweep run with
    other runner flags (--budget-unit crop, --max_new_tokens, ...) gets cells of its own
    instead of reusing scores made under different settings."""
    base = Path(model.rstrip("/")).name
    name = f"{base}_{method}" + (f"-b{budget}" if budget is not None else "")
    if extra:
        name += "-x" + hashlib.sha1("\0".join(extra).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def limited_name(name: str, limit: Optional[int]) -> str:
    """The name a --limit run writes under; scripts/eval/_common.sh appends the same mark."""
    return name if limit is None or name.endswith(f"-limit{limit}") else f"{name}-limit{limit}"


def scores_path(eval_dir: Path, bench: str, ckpt: str) -> Path:
    return eval_dir / bench_dir(bench) / "answers" / f"{ckpt}_scores.json"


def read_scores(path: Path) -> dict:
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    return json.loads(lines[-1])


def run_cell(bench, model, method, budget, ckpt, extra, env, allow_missing=False, limit=None) -> None:
    cmd = ["bash", str(SCRIPTS / f"{bench}.sh"), model]
    if method != "none":
        cmd += ["--method", method]
        if budget is not None:
            cmd += ["--budget", str(budget)]
    cmd += extra + ([] if limit is None else ["--limit", str(limit)])
    env = {**env, "CKPT": ckpt}
    if allow_missing and bench in ALLOW_MISSING:
        env["SCORE_ARGS"] = (env.get("SCORE_ARGS", "") + " --allow-missing").strip()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-15:])
        raise SystemExit(f"error: cell {bench}/{ckpt} failed (exit {proc.returncode}):\n{tail}")


def build_cells(benchmarks, methods, budgets, baseline):
    cells = []
    for bench in benchmarks:
        if baseline:
            cells.append((bench, "none", None))
        for method in methods:
            for budget in budgets:
                if method == "sparsevlm" and budget not in SPARSEVLM_SCHEDULES:
                    continue  # no published schedule for this budget (see docs/methods.md)
                cells.append((bench, method, budget))
    return cells


def cell_result(bench: str, scores: dict) -> dict:
    """The cell's headline number and coverage from its scorer's JSON line. A partial cell
    (fewer questions scored than the benchmark has) keeps its counts and gets no score."""
    key = HEADLINE[bench][1]
    answered, total = scores.get("answered"), scores.get("total")
    partial = answered is not None and total is not None and answered < total
    return {"score": None if partial or not key else scores.get(key), "partial": partial,
            "answered": answered, "total": total}


def shown(r: Optional[dict]) -> str:
    """A table cell: the score to 1 dp, "partial a/t" for a partial cell, "-" for none."""
    if r is None:
        return "-"
    if r["partial"]:
        return f"partial {r['answered']}/{r['total']}"
    return "-" if r["score"] is None else f"{r['score']:.1f}"


def write_outputs(out_dir: Path, model: str, results: List[dict], benchmarks, paper: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cells.json").write_text(json.dumps(results, indent=1) + "\n")
    rows: Dict[tuple, dict] = {}
    for r in results:
        rows.setdefault((r["method"], r["budget"]), {})[r["bench"]] = r
    cols = [HEADLINE[b][0] for b in benchmarks]
    ref = paper.get(Path(model.rstrip("/")).name.lower(), {})

    def paper_value(method, budget, bench):
        return ref.get(method, {}).get(budget, {}).get(bench)

    order = sorted(rows, key=lambda k: (k[0] != "none", -(k[1] or 10 ** 6), METHODS.index(k[0])))
    md = [f"Model: `{model}`. Cells: ours, with the published number in brackets where one is known.", "",
          "| Method | Tokens | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    with open(out_dir / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "tokens"] + [c for b in benchmarks for c in
                                           (HEADLINE[b][0], HEADLINE[b][0] + " (paper)", HEADLINE[b][0] + " (answered)")])
        for method, budget in order:
            cells = rows[(method, budget)]
            tokens = "576" if method == "none" else str(budget)
            md_cells = []
            csv_cells = []
            for b in benchmarks:
                ours, pub = cells.get(b), paper_value(method, budget, b)
                md_cells.append(shown(ours) + (f" [{pub}]" if pub is not None else ""))
                score = None if ours is None else ours["score"]
                count = "" if ours is None or ours["total"] is None else f"{ours['answered']}/{ours['total']}"
                csv_cells += ["" if score is None else round(score, 4), "" if pub is None else pub, count]
            md.append(f"| {'LLaVA (none)' if method == 'none' else method} | {tokens} | " + " | ".join(md_cells) + " |")
            w.writerow([method, tokens] + csv_cells)
    (out_dir / "table.md").write_text("\n".join(md) + "\n")
    plot(out_dir / "scores.png", results, benchmarks)


def plot(path: Path, results: List[dict], benchmarks) -> None:
    """Score vs remaining visual tokens, one panel per benchmark, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(benchmarks), 3.4), dpi=100)
    for i, bench in enumerate(benchmarks):
        ax = fig.add_subplot(1, len(benchmarks), i + 1)
        base = [r["score"] for r in results if r["bench"] == bench and r["method"] == "none" and r["score"] is not None]
        for method in sorted({r["method"] for r in results if r["method"] != "none"}):
            pts = sorted((r["budget"], r["score"]) for r in results
                         if r["bench"] == bench and r["method"] == method and r["score"] is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        if base:
            ax.axhline(base[0], color="0.5", ls="--", label="no pruning (576)")
        ax.set_xscale("log")
        ax.set_xlabel("remaining visual tokens")
        ax.set_title(HEADLINE[bench][0])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    p = argparse.ArgumentParser(prog="python -m llava_star.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True)
    p.add_argument("--benchmarks", default="mme,pope,gqa,textvqa,sqa",
                   help=f"comma list of {','.join(HEADLINE)} (default mme,pope,gqa,textvqa,sqa)")
    p.add_argument("--methods", default="star,fastv,fastervlm,sparsevlm", help="comma list of pruning methods")
    p.add_argument("--budgets", default="288,115,58,29", help="comma list of remaining-token budgets")
    p.add_argument("--no-baseline", action="store_true", help="skip the unpruned row")
    p.add_argument("--eval-dir", default=os.environ.get("EVAL_DIR", str(REPO / "eval")),
                   help="benchmark workspace (default: $EVAL_DIR or <repo>/eval)")
    p.add_argument("--out-dir", default="results", help="where table.md/.csv and scores.png go (default results/)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score benchmarks whose question file covers only part of the ground truth "
                        f"(passed to the {', '.join(sorted(ALLOW_MISSING))} scorers)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="smoke run: every cell answers the first N questions only, into names of their own "
                        "(<cell>-limit<N>, <out-dir>-limit<N>/); its cells are marked partial")
    p.add_argument("--paper-numbers", default=None,
                   help="JSON {model: {method: {budget|null: {bench: value}}}} shown beside ours")
    args = p.parse_args(argv)

    if not SCRIPTS.is_dir():
        raise SystemExit(f"error: {SCRIPTS} not found: run from a checkout of llava-star")
    benchmarks = [b for b in args.benchmarks.split(",") if b]
    for b in benchmarks:
        if b not in HEADLINE:
            raise SystemExit(f"error: --benchmarks: unknown benchmark {b!r}; choose from {', '.join(HEADLINE)}")
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS or m == "none":
            raise SystemExit(f"error: --methods: unknown pruning method {m!r}; choose from {', '.join(METHODS[1:])}")
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b]
    except ValueError:
        raise SystemExit(f"error: --budgets must be integers, got {args.budgets!r}") from None
    if any(b <= 0 for b in budgets):
        raise SystemExit(f"error: --budgets must be positive token counts, got {args.budgets!r}")
    paper = {k.lower(): {m: {(None if b in (None, "null") else int(b)): v for b, v in bud.items()}
                         for m, bud in ms.items()} for k, ms in PUBLISHED.items()}
    if args.paper_numbers:
        try:
            extra_paper = json.loads(Path(args.paper_numbers).read_text())
            for k, ms in extra_paper.items():
                for m, bud in ms.items():
                    for b, v in bud.items():
                        key = None if b in (None, "null") else int(b)
                        if not all(isinstance(x, (int, float)) for x in v.values()):
                            raise ValueError(f"{k}/{m}/{b}: scores must be numbers")
                        paper.setdefault(k.lower(), {}).setdefault(m, {}).setdefault(key, {}).update(v)
        except (OSError, ValueError, AttributeError, TypeError) as err:
            raise SystemExit(f"error: --paper-numbers {args.paper_numbers}: {err} (expected JSON "
                             "{model: {method: {budget|null: {bench: value}}}})") from None

    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"error: --limit must be at least 1, got {args.limit}")
    out_dir = Path(limited_name(args.out_dir.rstrip("/"), args.limit))
    try:  # fail now, not after every cell has run
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"error: --out-dir {args.out_dir}: {err}") from None
    eval_dir = Path(args.eval_dir)
    env = {**os.environ, "EVAL_DIR": str(eval_dir), "PYTHON": os.environ.get("PYTHON", sys.executable)}
    cells = build_cells(benchmarks, methods, budgets, not args.no_baseline)
    skipped = sorted({b for b in budgets if b not in SPARSEVLM_SCHEDULES}) if "sparsevlm" in methods else []
    if skipped:
        print(f"warning: no sparsevlm cells for budgets {skipped}: SparseVLM has published schedules for "
              f"{sorted(SPARSEVLM_SCHEDULES)} only (add those to --budgets)", file=sys.stderr)
    results, ran = [], 0
    for bench, method, budget in tqdm(cells, desc="cells", unit="cell"):
        ckpt = cell_name(args.model_path, method, budget, extra)
        path = scores_path(eval_dir, bench, limited_name(ckpt, args.limit))
        if not path.exists():
            run_cell(bench, args.model_path, method, budget, ckpt, extra, env, args.allow_missing, args.limit)
            ran += 1
            if not path.exists():
                raise SystemExit(f"error: cell {bench}/{ckpt} finished but wrote no {path}")
        results.append({"bench": bench, "method": method, "budget": budget, "ckpt": limited_name(ckpt, args.limit),
                        "runner_flags": extra, **cell_result(bench, read_scores(path)), "scores_file": str(path)})
    write_outputs(out_dir, args.model_path, results, benchmarks, paper)
    partial = sum(r["partial"] for r in results)
    print(f"{len(cells)} cells, {ran} run now, {len(cells) - ran} already finished"
          + (f", {partial} partial (marked, no score)" if partial else "")
          + f"; wrote {out_dir}/table.md, table.csv, scores.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
