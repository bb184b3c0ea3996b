"""Run a whole benchmark x method x budget sweep and write the paper's Table 1 layout.

    python -m llava_star.reproduce --model-path liuhaotian/llava-v1.5-7b \\
        --benchmarks mme,pope,gqa --methods star,fastv,fastervlm,sparsevlm --budgets 288,115,58,29

Every cell runs through `scripts/eval/<bench>.sh` (so through the same runner and scorer a
user runs by hand, chunked over the GPUs in CUDA_VISIBLE_DEVICES). A cell is finished when
its scores file exists; finished cells are never rerun, and an interrupted cell continues
where its answers file stopped (the runner resumes). Delete one cell's scores file to rerun
just that cell. Writes `<out-dir>/table.md`, `table.csv`, `cells.json` and `scores.png`.

`scores.png` plots, as the papers do, each benchmark's score against prefill TFLOPs (top
row; theory from llava_star.flops on the model's geometry, `--text-tokens` text tokens) and
against t_eq (bottom row: visual tokens per decoder layer, averaged; measured, the mean of
the runner's per-question records), one line per method, the unpruned model as a dashed
line. The tables carry both numbers per (method, budget). The geometry comes from the
checkpoint's config.json when --model-path is a local folder, else from a known name
(llava-v1.5-7b, llava-v1.5-13b, llava-v1.6-vicuna-7b), else from --geometry.
SparseVLM runs only at its published budgets (192, 128, 64); other budgets get no SparseVLM
cell, with a warning.
Runner flags after `--` go to every cell (e.g. `-- --device cpu --max_new_tokens 4`); they are part
of each cell's name (a short hash), so a sweep with other flags never reuses these cells.
`--limit N` is a smoke run: every cell answers the first N questions only, into files named
`<cell>-limit<N>` (and the tables into `<out-dir>-limit<N>/`), never the full run's.
A cell whose scorer covered only part of the benchmark (a --limit run, or --allow-missing on a
partial question file) is marked "partial answered/total" in every table and has no score; the
plot leaves it out and says so under the panel.
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


# y-axis names of the headline numbers
METRIC = {"vqav2": "accuracy (%)", "gqa": "accuracy (%)", "sqa": "image-question accuracy (%)",
          "textvqa": "accuracy (%)", "pope": "F1, mean of the 3 splits", "mme": "perception score"}
# LLaVA's released checkpoints by folder name -> llava_star.geometry name
KNOWN_GEOMETRY = {"llava-v1.5-7b": "llava-v1.5-7b", "llava-v1.5-13b": "llava-v1.5-13b",
                  "llava-v1.6-vicuna-7b": "llava-next-7b"}


def answers_file(scores_file: Path) -> Path:
    """The merged answers beside a cell's scores (scripts/eval: <CKPT>.jsonl, <CKPT>_scores.json)."""
    return Path(str(scores_file)[:-len("_scores.json")] + ".jsonl")


def measured_t_eq(scores_file: Path) -> Optional[float]:
    """Mean t_eq of a cell's answered questions, from the runner's per-question metadata
    (None when the answers file or the field is missing)."""
    path = answers_file(Path(scores_file))
    if not path.is_file():
        return None
    vals = []
    for line in path.read_text().splitlines():
        try:
            meta = json.loads(line).get("metadata") or {}
        except ValueError:
            continue
        if isinstance(meta.get("t_eq"), (int, float)):
            vals.append(float(meta["t_eq"]))
    return sum(vals) / len(vals) if vals else None


def geometry_for(model_path: str, name: Optional[str] = None):
    """(Geometry or None, where it came from): --geometry, a local checkpoint's config.json
    (and its vision tower's, when that is a local folder), or a known checkpoint name."""
    from .geometry import CLIP_L_336, Geometry, VisionGeometry, get_geometry

    if name:
        try:
            return get_geometry(name), f"--geometry {name}"
        except ValueError as err:
            raise SystemExit(f"error: --geometry: {err}") from None
    cfg_path = Path(model_path) / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        vision = CLIP_L_336
        vt = Path(str(cfg.get("mm_vision_tower", ""))) / "config.json"
        if vt.is_file():
            vc = json.loads(vt.read_text())
            vc = vc.get("vision_config", vc)
            vision = VisionGeometry(vc["image_size"], vc["patch_size"], vc["hidden_size"], vc["intermediate_size"],
                                    vc["num_hidden_layers"], vc["num_attention_heads"],
                                    cfg.get("mm_vision_select_layer", -2))
        anyres = str(cfg.get("image_aspect_ratio", "")).startswith("anyres")
        g = Geometry(Path(model_path.rstrip("/")).name, cfg["num_hidden_layers"], cfg["hidden_size"],
                     cfg["intermediate_size"], cfg["num_attention_heads"], cfg.get("num_key_value_heads"),
                     cfg.get("vocab_size", 32000), vision, cfg.get("mm_projector_type", "linear"),
                     crops=5 if anyres else 1)  # NeXT: the 672x672 2x2 setting, as flops' llava-next-7b
        return g, f"{cfg_path}" + (" (NeXT at 2x2 crops)" if anyres else "")
    known = KNOWN_GEOMETRY.get(Path(model_path.rstrip("/")).name.lower())
    if known:
        return get_geometry(known), f"llava_star.geometry {known}"
    return None, "unknown: pass --geometry (e.g. llava-v1.5-7b) for the TFLOPs axis"


def cost(method: str, budget: Optional[int], g, text_tokens: int):
    """(prefill TFLOPs, t_eq) in theory for one (method, budget) on geometry `g`; None where
    llava_star.flops has no count for it (e.g. VisionZip on a multi-crop geometry)."""
    from . import flops

    try:
        plan = None if method == "none" else flops.method_plan(method, budget, g)
        t = flops.theory(g, plan, text_tokens, budget=budget)
    except ValueError:
        return None, None
    return t.total / 1e12, t.t_eq


def add_costs(results: List[dict], g, text_tokens: int) -> None:
    """Every cell gets its TFLOPs / t_eq in theory (None without a geometry) and its measured
    t_eq (None without the answers' metadata)."""
    for r in results:
        r["tflops"], r["t_eq_theory"] = cost(r["method"], r["budget"], g, text_tokens) if g else (None, None)
        r["t_eq"] = measured_t_eq(r["scores_file"]) if r.get("scores_file") else None
        r["t_eq_plot"] = r["t_eq"] if r["t_eq"] is not None else r["t_eq_theory"]  # the x the plot uses


def write_outputs(out_dir: Path, model: str, results: List[dict], benchmarks, paper: dict,
                  geometry_note: str = "", text_tokens: int = 64) -> None:
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
    md = [f"Model: `{model}`. Cells: ours, with the published number in brackets where one is known; "
          "\"partial a/t\": answered a of t questions, no score (left out of scores.png).",
          f"t_eq: visual tokens per decoder layer, averaged (measured over the answered questions; "
          f"* = theory). TFLOPs: prefill, theory (llava_star.flops, {text_tokens} text tokens; "
          f"geometry: {geometry_note or 'unknown'}).", "",
          "| Method | Tokens | t_eq | TFLOPs | " + " | ".join(cols) + " |", "|---|---|---|---|" + "---|" * len(cols)]
    with open(out_dir / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "tokens", "t_eq", "t_eq_theory", "tflops"]
                   + [c for b in benchmarks for c in (HEADLINE[b][0], HEADLINE[b][0] + " (paper)",
                                                      HEADLINE[b][0] + " (answered)", HEADLINE[b][0] + " (t_eq)")])
        for method, budget in order:
            cells = rows[(method, budget)]
            tokens = "all" if method == "none" else str(budget)
            measured = [c["t_eq"] for c in cells.values() if c.get("t_eq") is not None]
            any_cell = next(iter(cells.values()))
            t_eq = sum(measured) / len(measured) if measured else None
            t_theory, tflops = any_cell.get("t_eq_theory"), any_cell.get("tflops")
            t_md = f"{t_eq:.1f}" if t_eq is not None else (f"{t_theory:.1f}*" if t_theory is not None else "-")
            md_cells, csv_cells = [], []
            for b in benchmarks:
                ours, pub = cells.get(b), paper_value(method, budget, b)
                md_cells.append(shown(ours) + (f" [{pub}]" if pub is not None else ""))
                score = None if ours is None else ours["score"]
                count = "" if ours is None or ours["total"] is None else f"{ours['answered']}/{ours['total']}"
                cell_t = "" if ours is None or ours.get("t_eq") is None else round(ours["t_eq"], 2)
                csv_cells += ["" if score is None else round(score, 4), "" if pub is None else pub, count, cell_t]
            name = "LLaVA (none)" if method == "none" else method
            md.append(f"| {name} | {tokens} | {t_md} | {'-' if tflops is None else f'{tflops:.3g}'} | "
                      + " | ".join(md_cells) + " |")
            w.writerow([method, tokens, "" if t_eq is None else round(t_eq, 2),
                        "" if t_theory is None else round(t_theory, 2),
                        "" if tflops is None else round(tflops, 4)] + csv_cells)
    (out_dir / "table.md").write_text("\n".join(md) + "\n")
    plot(out_dir / "scores.png", results, benchmarks, geometry_note, text_tokens)


MARKERS = "osD^vP*Xh"


def _style(method: str) -> dict:
    """The same colour and marker for a method in every panel (hollow markers, so points that
    coincide stay visible)."""
    import matplotlib

    i = METHODS.index(method) if method in METHODS else len(METHODS)
    colour = matplotlib.colormaps["tab10"](i % 10)
    return dict(color=colour, marker=MARKERS[i % len(MARKERS)], markerfacecolor="none", markeredgewidth=1.5,
                markersize=7, linewidth=1.6)


def _why_empty(bench: str, cells: List[dict], x_key: str) -> str:
    if not cells:
        return "no cells for this benchmark"
    if HEADLINE[bench][1] is None:
        return f"{HEADLINE[bench][0]} is scored by its official server:\nno local score to draw"
    partial = sum(c["partial"] for c in cells)
    if partial == len(cells):
        return (f"no score to draw:\nall {partial} cells are partial (answered < total:\n"
                "a --limit run or a partial question file)")
    if all(c.get(x_key) is None for c in cells if c["score"] is not None):
        return ("FLOPs need the model's geometry:\npass --geometry (e.g. llava-v1.5-7b)" if x_key == "x_flops"
                else "no t_eq recorded in the answers files")
    return "no scored cells"


def panel(ax, bench: str, results: List[dict], x_key: str, xlabel: str) -> list:
    """One benchmark's score against `x_key`, one line per method; returns the line handles.
    Partial cells are never drawn as a score: a note under the axis lists them."""
    cells = [r for r in results if r["bench"] == bench]
    drawn = [r for r in cells if r["score"] is not None and not r["partial"] and r.get(x_key) is not None]
    ax.set_title(HEADLINE[bench][0], fontsize=11)
    if not drawn:
        ax.text(0.5, 0.5, _why_empty(bench, cells, x_key), ha="center", va="center", fontsize=9,
                color="0.3", transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
        return []
    handles = []
    base = [r for r in drawn if r["method"] == "none"]
    if base:
        ax.axhline(base[0]["score"], color="0.45", ls="--", lw=1.2, zorder=1)
        handles += ax.plot([base[0][x_key]], [base[0]["score"]], ls="none", marker="*", color="0.3",
                           markersize=11, label="no pruning", zorder=3)
    for method in [m for m in METHODS if m != "none"]:
        pts = sorted((r[x_key], r["score"]) for r in drawn if r["method"] == method)
        if pts:
            handles += ax.plot([p[0] for p in pts], [p[1] for p in pts], label=method, zorder=2, **_style(method))
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(METRIC.get(bench, "score"), fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.12)
    if x_key == "t_eq_plot":
        ax.set_xscale("log")
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    left_out = [r for r in cells if r["partial"]]
    if left_out:
        names = ", ".join(f"{r['method']}@{r['budget']} {r['answered']}/{r['total']}" for r in left_out[:3])
        more = f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        ax.annotate(f"not drawn (partial, no score): {names}{more}", (0, 0), xycoords="axes fraction",
                    xytext=(0, -42), textcoords="offset points", fontsize=7, color="firebrick", va="top")
    return handles


def plot(path: Path, results: List[dict], benchmarks, geometry_note: str = "", text_tokens: int = 64):
    """Score against prefill TFLOPs (top row) and t_eq (bottom row), one panel per benchmark,
    one line per method (see the module docstring)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n = len(benchmarks)
    fig = Figure(figsize=(4.3 * n + 1.9, 8.2), dpi=100)
    gs = fig.add_gridspec(2, n, left=0.9 / (4.3 * n + 1.9), right=1 - 1.9 / (4.3 * n + 1.9),
                          top=0.9, bottom=0.12, wspace=0.32, hspace=0.55)
    labels = {}
    # tiny test checkpoints need GFLOPs: a few TFLOPs x 1e-3 would read 0.00
    flops_seen = [r["tflops"] for r in results if r.get("tflops") is not None]
    scale, unit = (1e3, "GFLOPs") if flops_seen and max(flops_seen) < 0.1 else (1.0, "TFLOPs")
    results = [dict(r, x_flops=None if r.get("tflops") is None else r["tflops"] * scale) for r in results]
    measured = [r.get("t_eq") is not None for r in results if r.get("t_eq_plot") is not None]
    source = "measured" if all(measured) else ("theory" if not any(measured) else "measured, else theory")
    for row, (key, xlabel) in enumerate((("x_flops", f"prefill {unit} (theory, {text_tokens} text tokens)"),
                                         ("t_eq_plot", f"t_eq: visual tokens per layer, averaged ({source})"))):
        for i, bench in enumerate(benchmarks):
            ax = fig.add_subplot(gs[row, i], label=f"{'tflops' if row == 0 else 'teq'}_{bench}")
            for h in panel(ax, bench, results, key, xlabel):
                labels.setdefault(h.get_label(), h)
    if labels:
        fig.legend(list(labels.values()), list(labels), loc="center right", fontsize=9, frameon=False,
                   title="method", title_fontsize=9)
    fig.suptitle("Score against compute: one line per method", fontsize=12)
    if geometry_note:
        fig.text(0.5, 0.945, f"geometry for FLOPs: {geometry_note}", ha="center", fontsize=8, color="0.35")
    fig.savefig(path)
    return fig


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
    p.add_argument("--geometry", default=None,
                   help="model geometry for the TFLOPs axis, a llava_star.geometry name such as llava-v1.5-7b "
                        "or llava-next-7b (default: from the local checkpoint's config.json or its name)")
    p.add_argument("--text-tokens", type=int, default=64,
                   help="text tokens per question in the TFLOPs theory (default 64)")
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

    if args.text_tokens < 1:
        raise SystemExit(f"error: --text-tokens must be at least 1, got {args.text_tokens}")
    geometry, geometry_note = geometry_for(args.model_path, args.geometry)  # a bad --geometry fails now
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
    add_costs(results, geometry, args.text_tokens)
    write_outputs(out_dir, args.model_path, results, benchmarks, paper, geometry_note, args.text_tokens)
    partial = sum(r["partial"] for r in results)
    print(f"{len(cells)} cells, {ran} run now, {len(cells) - ran} already finished"
          + (f", {partial} partial (marked, no score)" if partial else "")
          + f"; wrote {out_dir}/table.md, table.csv, scores.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
