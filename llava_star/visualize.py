"""Which patches a pruning method kept, drawn on the image as the model saw it.

    python -m llava_star.visualize --image cat.jpg --question "What is the cat doing?" --out fig.png
    python -m llava_star.visualize --model-path checkpoints/llava-v1.5-7b --image cat.jpg \\
        --question "..." --method star --budget 58 --device cuda --out fig.png
    python -m llava_star.visualize --image cat.jpg --compare star,fastv,pdrop,sparsevlm@64 --budget 58
    python -m llava_star.visualize --model-path llava-hf/llava-1.5-7b-hf --image cat.jpg --method star \
        --budget 58 --out fig.png                     # the hf host (transformers 5, .venv-hf)

One figure (matplotlib, Agg): one row per method run, one column per pruning stage (the
vision stage, when any run has one, then decoder stage 1, 2, ...); a run draws only the
stages it has. Each stage panel is the image as the model saw it with that stage's scores
blended over the cells it ranked (colour bar below, labelled with the score and the layer
it comes from) and its choice shown on the cells: bright = kept, dimmed = dropped by this
stage, near black = dropped by an earlier stage, light grey = padding that llava's unpad
removed before the LLM (LLaVA-NeXT). Panel titles say the stage, its layer and the kept
count; the left column gives each run's final kept count, t_eq and answer.

LLaVA-1.5 pads the image to a square with the processor's mean colour and resizes it to
336 px (the 24x24 patch grid covers the padded square). LLaVA-NeXT (anyres) panels show the
base image and, beside it, the grid crops tiled back into the picture they were cut from.

`--compare A,B,...` runs several methods on one model and one image (a name, or name@budget;
`none` for the unpruned model; the others take --budget and --budget-unit); per-method flags
go with --method. Python: `render(model, tokenizer, image_processor, image, question)` returns
the Figure of the loaded model's method, `compare(...)` the side-by-side, `figure(canvas, runs)`
draws records you already have (llava_star.demo uses it).

`--host auto` (default) picks the host from --model-path's config.json: a llava-hf checkpoint
runs on transformers' own LlavaForConditionalGeneration or LlavaNextForConditionalGeneration
(llava_star.hf; LLaVA-1.5 or NeXT, --fixed-grid and --budget-unit as here), prompted with its
processor's chat template, with the same figure (`llava_star.visualize_hf` has its render /
compare). Without --model-path, `--host hf` draws a tiny random-weight llava-hf checkpoint
(built on first use).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

DPI = 100
DIM = 0.7             # dropped cells keep 30% of their brightness
ALPHA = 0.45          # score colours blended over the image
EARLIER = 0.15        # cells dropped by an earlier stage: greyscale at this brightness
ABSENT = 0.88         # cells llava never passed to the LLM (NeXT unpad padding): flat grey
CMAP = "viridis"
DEFAULT_OUT = "llava_star_viz.png"
KEPT, DROPPED, GONE, PADDING = 0, 1, 2, 3  # a cell's state in one stage panel

VISION_SCORE = {"attention_received": "attention received", "cls_attention": "CLS attention"}
DECODER_SCORE = {"text_mean": "attention from the text after the image",
                 "last_token": "attention from the last token",
                 "raters": "attention from the rater text tokens",
                 "embedding_raters": "attention from SparseVLM's raters"}


# ----------------------------------------------------------------------- pure helpers
def overlay(image_array: np.ndarray, kept_indices, grid: int = 24, dim: float = DIM) -> np.ndarray:
    """Dim the grid cells not in `kept_indices` toward black by `dim` (0 = unchanged, 1 = black).

    `image_array` is [H, W] or [H, W, C], uint8 or float; the grid's `grid` x `grid` cells are
    numbered row-major (index = row * grid + col), cell edges at round(k * H / grid). Kept
    cells are returned unchanged; dropped cells become `pixel * (1 - dim)` (rounded for integer
    images). Returns a new array of the input's shape and dtype.
    """
    img = np.asarray(image_array)
    if img.ndim not in (2, 3):
        raise ValueError(f"overlay needs an [H, W] or [H, W, C] image, got shape {img.shape}")
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    h, w = img.shape[:2]
    if grid < 1 or grid > min(h, w):
        raise ValueError(f"grid {grid} does not fit a {h}x{w} image")
    kept = np.asarray(kept_indices if kept_indices is not None else [], dtype=np.int64).reshape(-1)
    if kept.size and (kept.min() < 0 or kept.max() >= grid * grid):
        raise ValueError(f"kept indices must lie in 0..{grid * grid - 1}")
    cell_kept = np.zeros(grid * grid, dtype=bool)
    cell_kept[kept] = True
    pixel_kept = _per_pixel(cell_kept[np.arange(grid * grid).reshape(grid, grid)], h, w)
    if img.ndim == 3:
        pixel_kept = pixel_kept[:, :, None]
    dimmed = img.astype(np.float64) * (1.0 - dim)
    if np.issubdtype(img.dtype, np.integer):
        dimmed = np.round(dimmed)
    return np.where(pixel_kept, img, dimmed.astype(img.dtype))


def _per_pixel(cell_values: np.ndarray, h: int, w: int) -> np.ndarray:
    """[gh, gw] per-cell values spread over an [h, w] image (cell edges at round(k * h / gh))."""
    gh, gw = cell_values.shape
    row_of = np.repeat(np.arange(gh), np.diff(np.round(np.arange(gh + 1) * h / gh).astype(int)))
    col_of = np.repeat(np.arange(gw), np.diff(np.round(np.arange(gw + 1) * w / gw).astype(int)))
    return cell_values[row_of[:, None], col_of[None, :]]


def scores_to_grid(scores, indices, grid: int = 24) -> np.ndarray:
    """[grid, grid] float array: `scores[i]` in the cell of grid index `indices[i]`, NaN elsewhere
    (and where a score is not finite)."""
    out = np.full(grid * grid, np.nan)
    if scores is None:
        return out.reshape(grid, grid)
    s = _np(scores).astype(np.float64).reshape(-1)
    idx = _np(indices).astype(np.int64).reshape(-1)
    if s.size != idx.size:
        raise ValueError(f"{s.size} scores for {idx.size} grid cells")
    out[idx] = np.where(np.isfinite(s), s, np.nan)
    return out.reshape(grid, grid)


def paint(image: np.ndarray, cells: np.ndarray, state: np.ndarray, colours: Optional[np.ndarray] = None,
          alpha: float = ALPHA, dim: float = DIM) -> np.ndarray:
    """One tile of a stage panel, [H, W, 3] uint8. `cells` [gh, gw] holds the global cell id
    drawn at each grid position of `image`; `state[id]` is KEPT, DROPPED, GONE or PADDING;
    `colours[id]` an RGB in [0, 1] (NaN: no score). Kept: `(1 - alpha) * pixel + alpha * colour`
    (the pixel where there is no colour); dropped: the same times `1 - dim`; gone: the pixel's
    grey level times EARLIER; padding: flat ABSENT grey."""
    img = np.asarray(image, dtype=np.float64) / 255.0
    h, w = img.shape[:2]
    st = _per_pixel(np.asarray(state)[cells], h, w)
    out = img.copy()
    if colours is not None:
        col = _per_pixel(np.arange(cells.size).reshape(cells.shape), h, w)
        rgb = np.asarray(colours, dtype=np.float64)[cells.reshape(-1)][col]  # [H, W, 3]
        has = np.isfinite(rgb).all(axis=-1, keepdims=True)
        out = np.where(has, (1 - alpha) * img + alpha * np.nan_to_num(rgb), img)
    grey = img @ np.array([0.299, 0.587, 0.114])
    out = np.where((st == DROPPED)[..., None], out * (1 - dim), out)
    out = np.where((st == GONE)[..., None], (grey * EARLIER)[..., None], out)
    out = np.where((st == PADDING)[..., None], ABSENT, out)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _ids(x) -> np.ndarray:
    return _np(x).astype(np.int64).reshape(-1)


def _printable(text) -> str:
    """One line, control characters (which fonts lack) shown as U+FFFD."""
    return " ".join("".join(c if c.isprintable() or c.isspace() else "\ufffd" for c in str(text)).split())


def _per_layer(counts: Sequence[int]) -> str:
    """[504, 504, 58, 58] -> '504 x2, 58 x2'."""
    parts, i = [], 0
    while i < len(counts):
        j = i
        while j < len(counts) and counts[j] == counts[i]:
            j += 1
        parts.append(f"{counts[i]} x{j - i}" if j - i > 1 else str(counts[i]))
        i = j
    return ", ".join(parts)


# ------------------------------------------------------------------ what gets drawn
@dataclass
class Tile:
    """Part of the picture: an image and the global cell id at each of its grid positions,
    drawn at `extent` (left, right, bottom, top) in the panel's data coordinates."""
    image: np.ndarray
    cells: np.ndarray
    extent: tuple


@dataclass
class Canvas:
    """The picture every panel of one image is drawn on. `alive`: the cell ids that reach the
    LLM without pruning (all of them on LLaVA-1.5; NeXT's unpad removes padding cells);
    `total`: every cell id (crops x patches)."""
    tiles: List[Tile]
    alive: np.ndarray
    total: int
    vision_layer: int = -2
    description: str = ""

    @property
    def size(self):
        return max(t.extent[1] for t in self.tiles), max(t.extent[2] for t in self.tiles)


@dataclass
class Run:
    """One method's pass over the image: its plan (None for stock llava), its PruneRecord
    (None for stock llava), the answer and a row label."""
    label: str
    plan: object = None
    record: object = None
    answer: str = ""
    visual_tokens: Optional[int] = None  # unpruned visual tokens (stock runs have no record)


@dataclass
class StagePanel:
    """One stage of one run: the cells it ranked (`candidates`, aligned with `scores`, None
    for the random control), the cells it kept, and the words for its titles."""
    column: str       # "vision" or "decoder <i>"
    title: str
    candidates: np.ndarray
    kept: np.ndarray
    scores: Optional[np.ndarray]
    score_label: Optional[str]
    merged: int = 0


def stages(plan, record, canvas: Canvas) -> List[StagePanel]:
    """The panels of one run, from the plan and the record alone: a vision stage ranks every
    cell (its scores by cell id) and keeps record.stage1_kept; decoder stage i ranks
    stage1_kept (i = 0) or decoder_kept[i - 1], scores aligned with them, and keeps
    decoder_kept[i]. Stages the plan lacks get no panel."""
    if plan is None or record is None:
        return []
    out = []
    merged = list(record.merged)
    if plan.vision is not None:
        scores = None if record.stage1_scores is None else _np(record.stage1_scores).reshape(-1)
        cand = np.arange(canvas.total)
        if scores is not None and scores.size != cand.size:
            raise ValueError(f"the record's vision scores cover {scores.size} cells, the image has {cand.size}")
        label = VISION_SCORE.get(plan.vision.score)
        out.append(StagePanel("vision", f"vision stage (CLIP layer {canvas.vision_layer})", cand,
                              _ids(record.stage1_kept), scores if label else None,
                              f"{label}, CLIP layer {canvas.vision_layer}" if label else None,
                              merged.pop(0) if merged else 0))
    before = _ids(record.stage1_kept)
    for i, st in enumerate(plan.decoder):
        kept = _ids(record.decoder_kept[i])
        scores = _np(record.stage2_scores[i]).astype(np.float64).reshape(-1) if i < len(record.stage2_scores) else None
        if scores is not None and scores.size != before.size:
            raise ValueError(f"decoder stage {i + 1}: {scores.size} scores for {before.size} ranked cells")
        label = DECODER_SCORE.get(st.score)
        layer = st.layer - 1 if st.ranks == "previous" else st.layer
        out.append(StagePanel(f"decoder {i}", f"decoder stage {i + 1} (from layer {st.layer})", before, kept,
                              scores if label else None, f"{label}, layer {layer}" if label else None,
                              merged[i] if i < len(merged) else 0))
        before = kept
    return out


def _colours(panel: StagePanel, canvas: Canvas, cmap):
    """(RGB per cell id, NaN where unscored; the norm; whether the top end is clipped)."""
    from matplotlib.colors import Normalize

    if panel.scores is None:
        return None, None, False
    alive = np.zeros(canvas.total, dtype=bool)
    alive[canvas.alive] = True
    shown = np.isfinite(panel.scores) & alive[panel.candidates]
    if not shown.any():
        return None, None, False
    vals = panel.scores[shown]
    # the 99th percentile: a few outliers (sink tokens) would wash the rest into one colour
    vmin, vmax = float(vals.min()), float(np.percentile(vals, 99))
    if vmax <= vmin:
        vmax = vmin + max(abs(vmin), 1.0) * 1e-6
    norm = Normalize(vmin, vmax, clip=True)
    rgb = np.full((canvas.total, 3), np.nan)
    rgb[panel.candidates[shown]] = cmap(norm(vals))[:, :3]
    return rgb, norm, bool(vals.max() > vmax)


def _state(panel: Optional[StagePanel], canvas: Canvas) -> np.ndarray:
    state = np.full(canvas.total, GONE)
    if panel is None:  # stock llava: every cell that reaches the LLM is kept
        state[canvas.alive] = KEPT
    else:
        state[panel.candidates] = DROPPED
        state[panel.kept] = KEPT
    alive = np.zeros(canvas.total, dtype=bool)
    alive[canvas.alive] = True
    state[~alive] = PADDING
    return state


def _outline(ax, tile: Tile, kept: np.ndarray):
    """Thin white edges between kept and other cells, so kept cells read at a glance."""
    from matplotlib.collections import LineCollection

    k = kept[tile.cells]
    gh, gw = k.shape
    x0, x1, y1, y0 = tile.extent  # imshow extent: left, right, bottom, top
    cw, ch = (x1 - x0) / gw, (y1 - y0) / gh
    pad = np.pad(k, 1)
    segs = []
    rr, cc = np.nonzero(pad[1:, 1:-1] != pad[:-1, 1:-1])  # horizontal edge above row rr
    segs += [((x0 + c * cw, y0 + r * ch), (x0 + (c + 1) * cw, y0 + r * ch)) for r, c in zip(rr, cc)]
    rr, cc = np.nonzero(pad[1:-1, 1:] != pad[1:-1, :-1])  # vertical edge left of column cc
    segs += [((x0 + c * cw, y0 + r * ch), (x0 + c * cw, y0 + (r + 1) * ch)) for r, c in zip(rr, cc)]
    if segs:
        ax.add_collection(LineCollection(segs, colors="white", linewidths=0.6, alpha=0.9))


def _draw_tiles(ax, canvas: Canvas, state=None, colours=None, outline: bool = True):
    for tile in canvas.tiles:
        img = tile.image if state is None else paint(tile.image, tile.cells, state, colours)
        ax.imshow(img, extent=tile.extent, interpolation="nearest")
        if state is not None and outline:
            _outline(ax, tile, state == KEPT)
    w, h = canvas.size
    ax.set_xlim(0, w), ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.set_xticks([]), ax.set_yticks([])


def _column_names(runs_stages) -> List[str]:
    has_vision = any(p.column == "vision" for ps in runs_stages for p in ps)
    depth = max([sum(p.column != "vision" for p in ps) for ps in runs_stages] + [0])
    cols = (["vision"] if has_vision else []) + [f"decoder {i}" for i in range(depth)]
    return cols or ["input"]


def figure(canvas: Canvas, runs: Sequence[Run], question: str = "", note: Optional[str] = None,
           outline: bool = True):
    """The figure of `runs` on `canvas` (see the module docstring). Axes are labelled (in
    `Axes.get_label()`): "input", "legend", "info<r>" and, per run r, "<column>_run<r>" for
    each stage it has ("vision_run0", "decoder 0_run0", ...; "input_run<r>" for a run that
    prunes nothing), plus "colorbar_<column>_run<r>" for each scored stage."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.cm import ScalarMappable
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    cmap = matplotlib.colormaps[CMAP]
    per_run = [stages(r.plan, r.record, canvas) for r in runs]
    cols = _column_names(per_run)
    w, h = canvas.size
    panel_w = min(3.0 * w / h, 6.5)  # inches; NeXT panels are wide (base image + crops)
    panel_h = panel_w * h / w
    # a stock run's row shows the plain input already; otherwise the header does
    show_input = all(panels for panels in per_run)
    info_w, head_h, margin, title_h, bar_h = 2.4, min(panel_h, 2.2) if show_input else 0.7, 0.25, 0.5, 0.75
    pitch_x, pitch_y = panel_w + 0.3, title_h + panel_h + bar_h
    width = 2 * margin + info_w + pitch_x * len(cols)
    top0 = 0.8 if note else 0.55  # header top, below the title (and the note)
    height = top0 + head_h + pitch_y * len(runs) + 0.15
    fig = Figure(figsize=(width, height), dpi=DPI)

    def axes(x, top, w_in, h_in, label):  # inches from the left / top edge
        return fig.add_axes((x / width, 1 - (top + h_in) / height, w_in / width, h_in / height), label=label)

    q = textwrap.shorten(_printable(question), 160, placeholder=" ...") if question else ""
    fig.suptitle(f"Q: {q}" if q else "What each pruning stage kept", fontsize=12,
                 y=1 - 0.12 / height, va="top", parse_math=False)
    if note:
        fig.text(0.5, 1 - 0.5 / height, note, ha="center", va="top", fontsize=9, color="firebrick", parse_math=False)

    leg = axes(margin, top0, info_w, head_h, "legend")
    leg.axis("off")
    handles = [Patch(facecolor=(0.9, 0.8, 0.3), edgecolor="white", label="kept (score colour blended in)"),
               Patch(facecolor=(0.27, 0.24, 0.09), label="dropped by this stage"),
               Patch(facecolor=(0.08, 0.08, 0.08), label="dropped by an earlier stage")]
    if canvas.alive.size < canvas.total:
        handles.append(Patch(facecolor=(ABSENT,) * 3, edgecolor="0.6", label="padding that unpad removed"))
    leg.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, borderaxespad=0)
    if show_input:
        head = axes(margin + info_w, top0 + 0.2, (head_h - 0.2) * w / h, head_h - 0.2, "input")
        _draw_tiles(head, canvas)
        head.set_title(f"input as the model saw it: {canvas.description}", fontsize=9, loc="left")

    for r, (run, panels) in enumerate(zip(runs, per_run)):
        top = top0 + head_h + r * pitch_y + title_h
        _info(axes(margin, top, info_w - 0.2, panel_h, f"info{r}"), run, canvas)
        if not panels:
            ax = axes(margin + info_w, top, panel_w, panel_h, f"input_run{r}")
            _draw_tiles(ax, canvas, _state(None, canvas), None, outline=False)
            ax.set_title(f"input as the model saw it: {canvas.description}\nno pruning: all "
                         f"{canvas.alive.size} kept", fontsize=9)
            continue
        for p in panels:
            c = cols.index(p.column)
            ax = axes(margin + info_w + c * pitch_x, top, panel_w, panel_h, f"{p.column}_run{r}")
            rgb, norm, clipped = _colours(p, canvas, cmap)
            _draw_tiles(ax, canvas, _state(p, canvas), rgb, outline)
            ranked = np.intersect1d(p.candidates, canvas.alive).size
            merged = f" (+{p.merged} merged)" if p.merged else ""
            ax.set_title(f"{p.title}\nkept {p.kept.size} / {ranked}{merged}", fontsize=9)
            cax = ax.inset_axes([0.0, -0.2 / panel_h, 1.0, 0.11 / panel_h], label=f"colorbar_{p.column}_run{r}")
            if norm is None:
                cax.axis("off")
                cax.text(0.5, 0.0, "random choice: no scores", ha="center", va="top", fontsize=8,
                         color="0.35", transform=cax.transAxes)
                continue
            cb = fig.colorbar(ScalarMappable(norm, cmap), cax=cax, orientation="horizontal",
                              extend="max" if clipped else "neither")
            cb.set_label(textwrap.fill(p.score_label, int(panel_w * 15)), fontsize=8, labelpad=2)
            cb.ax.xaxis.set_major_locator(MaxNLocator(4))
            cb.ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            cb.ax.tick_params(labelsize=7)
    fig.llava_star_runs = list(runs)
    if len(runs) == 1:
        fig.llava_star_answer = runs[0].answer
        fig.llava_star_record = runs[0].record
    return fig


def _info(ax, run: Run, canvas: Canvas):
    ax.axis("off")
    rec = run.record
    n = canvas.alive.size
    lines = []
    if rec is None:
        lines += [f"visual tokens: {run.visual_tokens or n}", "nothing pruned"]
    else:
        final = int(rec.final_kept.numel())
        extra = rec.tokens_per_layer[-1] - final
        lines += [f"final kept: {final} / {rec.num_patches}"]
        if extra > 0:  # NeXT newline rows, merged tokens, VisionZip's CLS: tokens, not cells
            lines += [f"  +{extra} newline/merged/CLS"]
        lines += [f"t_eq: {rec.t_eq:.1f}", "tokens per layer:"]
        lines += textwrap.wrap(_per_layer(list(rec.tokens_per_layer)), 30)
    ans = _printable(run.answer) or "(empty answer)"
    lines += ["answer:"] + textwrap.wrap(repr(ans), 30, max_lines=3, placeholder=" ...'")
    ax.text(0.0, 1.0, run.label, fontsize=12, weight="bold", va="top", transform=ax.transAxes, parse_math=False)
    ax.text(0.0, 0.86, "\n".join(lines), fontsize=8.5, va="top", family="monospace",
            transform=ax.transAxes, parse_math=False)


# --------------------------------------------------------------- the model's picture
def model_view(image, image_processor, model_config=None) -> np.ndarray:
    """The image as the model saw it, [S, S, 3] uint8: llava's `process_images` without the
    normalisation (pad to a square with the processor's mean colour when the checkpoint says
    `image_aspect_ratio: pad`, then the processor's own resize / centre crop)."""
    from llava.mm_utils import expand2square

    image = image.convert("RGB")
    if getattr(model_config, "image_aspect_ratio", None) == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in image_processor.image_mean))
    pixels = image_processor.preprocess(image, do_rescale=False, do_normalize=False,
                                        return_tensors="np")["pixel_values"][0]
    pixels = np.asarray(pixels)
    if pixels.shape[0] in (1, 3) and pixels.shape[-1] not in (1, 3):
        pixels = pixels.transpose(1, 2, 0)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def crop_views(image, image_processor, model_config) -> List[np.ndarray]:
    """Every crop of an anyres image as the model saw it (base image first), de-normalised
    from llava's own `process_images` output."""
    from llava.mm_utils import process_images

    pixels = process_images([image], image_processor, model_config)[0]  # [crops, 3, H, W]
    return [denormalised(c, image_processor) for c in pixels]


def denormalised(pixels, image_processor) -> np.ndarray:
    """A processor's [3, S, S] pixel values as the [S, S, 3] uint8 picture they encode."""
    mean = np.asarray(image_processor.image_mean, dtype=np.float64)[:, None, None]
    std = np.asarray(image_processor.image_std, dtype=np.float64)[:, None, None]
    px = _np(pixels).astype(np.float64)
    return np.clip(np.round((px * std + mean) * 255).transpose(1, 2, 0), 0, 255).astype(np.uint8)


def _is_anyres(model_config) -> bool:
    return str(getattr(model_config, "image_aspect_ratio", None) or "").startswith("anyres")


def canvas_for(model, tokenizer, image_processor, image, conv_mode: str = "vicuna_v1") -> Canvas:
    """The Canvas of `image` for `model` (a llava or llava_star model). LLaVA-NeXT: the base
    image, then the grid crops tiled back in llava's order (row-major), and the cells that
    llava's merge keeps (its own code, `hosts.llava.merged_layout`)."""
    tower = model.get_vision_tower()
    side = int(getattr(tower, "num_patches_per_side", round(math.sqrt(tower.num_patches))))
    layer = int(getattr(model.config, "mm_vision_select_layer", -2))
    cells = np.arange(side * side).reshape(side, side)
    if not _is_anyres(model.config):
        view = model_view(image, image_processor, model.config)
        return Canvas([Tile(view, cells, (0, view.shape[1], view.shape[0], 0))], np.arange(side * side),
                      side * side, layer, f"{view.shape[1]}x{view.shape[0]}, {side}x{side} patches")
    from llava.mm_utils import get_anyres_image_grid_shape

    views = crop_views(image, image_processor, model.config)
    gw, gh = get_anyres_image_grid_shape(image.size, model.config.image_grid_pinpoints, views[0].shape[0])
    return anyres_canvas(views, gh, gw, side, _alive_cells(model, tokenizer, image_processor, image, conv_mode),
                         layer)


def anyres_canvas(views: Sequence[np.ndarray], rows: int, cols: int, side: int, alive: np.ndarray,
                  layer: int) -> Canvas:
    """The Canvas of one anyres image, on either host: `views` are its crops as the model saw
    them ([S, S, 3] uint8), the base image first, then the `rows` x `cols` grid crops in
    row-major order (how llava and transformers both cut them), `side` x `side` patches each;
    `alive` the cell ids the merge keeps (cell id = crop * side**2 + patch, crop 0 = base).
    Drawn as the base tile, then the grid crops tiled back into the picture they came from."""
    crop = views[0].shape[0]
    if rows * cols != len(views) - 1:
        raise ValueError(f"{len(views) - 1} grid crops do not tile a {cols}x{rows} grid")
    cells = np.arange(side * side).reshape(side, side)
    mosaic = np.zeros((rows * crop, cols * crop, 3), dtype=np.uint8)
    grid = np.zeros((rows * side, cols * side), dtype=np.int64)
    for t, v in enumerate(views[1:]):
        r, c = divmod(t, cols)
        mosaic[r * crop:(r + 1) * crop, c * crop:(c + 1) * crop] = v
        grid[r * side:(r + 1) * side, c * side:(c + 1) * side] = (t + 1) * side * side + cells
    height, gap = rows * crop, 0.06 * rows * crop
    tiles = [Tile(views[0], cells, (0, height, height, 0)),
             Tile(mosaic, grid, (height + gap, height + gap + cols * crop, height, 0))]
    return Canvas(tiles, np.sort(np.asarray(alive, dtype=np.int64)), len(views) * side * side, layer,
                  f"base {crop}x{crop} + {cols}x{rows} crops ({cols * crop}x{rows * crop}), {side}x{side} patches each")


def merged_rows(model, tokenizer, image_processor, image, conv_mode="vicuna_v1") -> np.ndarray:
    """The cell id of every row llava's merge gives `image` without pruning (-1: a NeXT
    `image_newline` row), from llava's own merge (`hosts.llava.merged_layout`); a stock
    run's visual tokens per layer are its length."""
    import torch
    from llava.mm_utils import process_images

    from .hosts.llava import merged_layout
    from .prompting import prompt_input_ids

    if not _is_anyres(model.config):
        tower = model.get_vision_tower()
        return np.arange(tower.num_patches)
    ids = prompt_input_ids(tokenizer, "?", conv_mode, model.config).to(model.device)
    pixels = process_images([image], image_processor, model.config).to(model.device, model.dtype)
    with torch.inference_mode():
        (layout,) = merged_layout(model, ids, None, pixels, [image.size])
    return _ids(layout)


def _alive_cells(model, tokenizer, image_processor, image, conv_mode) -> np.ndarray:
    rows = merged_rows(model, tokenizer, image_processor, image, conv_mode)
    return np.sort(rows[rows >= 0])


def _record_catcher():
    """An Observer (llava_star.hooks) that keeps the first prefill's records: generate's
    prefill, not its decode steps."""
    from .engine.seams import Observer

    class Records(Observer):
        records = None

        def prefilled(self, records):
            if self.records is None:
                self.records = list(records)

    return Records()


def run_once(model, tokenizer, image_processor, image, question, conv_mode="vicuna_v1", max_new_tokens=16,
             label: Optional[str] = None) -> Run:
    """Generate one answer with the model's current plan; the record comes through the
    observer seam."""
    import torch
    from llava.mm_utils import process_images

    from .engine.seams import hooks
    from .prompting import prompt_input_ids

    if not hasattr(model, "star_plan"):
        raise TypeError("render needs a llava_star model: load it with llava_star.load_pretrained_model("
                        "..., star=MethodConfig.from_name(...)) or convert it with apply_star")
    ids = prompt_input_ids(tokenizer, question, conv_mode, model.config).to(model.device)
    pixels = process_images([image], image_processor, model.config).to(model.device, model.dtype)
    seen = _record_catcher()
    with torch.inference_mode(), hooks(model, observer=seen):
        out = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, use_cache=True)
    rec = seen.records[0] if seen.records else None
    if rec is None or rec.image_span is None:
        raise RuntimeError("the model recorded no image span for this prompt (no <image> token reached it)")
    return run_of(model, rec, tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip(), label)


def run_of(model, rec, answer: str, label: Optional[str] = None) -> Run:
    """The Run a figure row draws from the model's plan and the record of its last prefill
    (either host); a plan that prunes nothing draws the input only."""
    plan = model.star_plan
    return Run(label or plan.name, plan if plan.prunes else None, rec if plan.prunes else None, answer,
               rec.num_patches)


def render(model, tokenizer, image_processor, image, question, conv_mode="vicuna_v1", max_new_tokens=16,
           *, note: Optional[str] = None, label: Optional[str] = None):
    """Generate an answer with `model`'s method and return the matplotlib Figure of what each
    stage kept (one row; see `figure`). `model` comes from `llava_star.load_pretrained_model(...,
    star=...)` (`MethodConfig.from_name("none")` for stock llava); `image` is a PIL image.
    `fig.llava_star_answer` / `fig.llava_star_record` hold the answer and the PruneRecord."""
    run = run_once(model, tokenizer, image_processor, image, question, conv_mode, max_new_tokens, label)
    canvas = canvas_for(model, tokenizer, image_processor, image, conv_mode)
    return figure(canvas, [run], question, note)


def method_label(cfg) -> str:
    return cfg.name + (f"@{cfg.budget}" if cfg.budget is not None else "")


def compare(model, tokenizer, image_processor, image, question, methods, conv_mode="vicuna_v1",
            max_new_tokens=16, *, note: Optional[str] = None):
    """One row per MethodConfig in `methods`, all on `model` and `image`: each is attached
    with `apply_star` in turn; the model's own plan (or stock llava) is restored after."""
    from .hosts.llava import apply_star, remove_star

    runs = each_method(model, methods, apply_star, remove_star,
                       lambda label: run_once(model, tokenizer, image_processor, image, question, conv_mode,
                                              max_new_tokens, label))
    return figure(canvas_for(model, tokenizer, image_processor, image, conv_mode), runs, question, note)


def each_method(model, methods, apply, remove, run) -> List[Run]:
    """`run(label)` once per MethodConfig in `methods`, each attached with the host's `apply`
    in turn; the model's own plan (or its stock class, through `remove`) is restored after."""
    before = getattr(model, "star_plan", None)
    runs = []
    try:
        for cfg in methods:
            apply(model, cfg)
            runs.append(run(method_label(cfg)))
    finally:
        if before is not None:
            apply(model, before)
        elif hasattr(model, "star_plan"):
            remove(model)
    return runs


def tiny_note(path) -> Optional[str]:
    """A line for figures and printouts when `path` is one of llava_star.tiny's checkpoints."""
    if path and os.path.isfile(os.path.join(str(path), "llava_star_tiny.json")):
        return ("random-weight tiny checkpoint: answers are gibberish; "
                "the kept cells, counts and scores are real")
    return None


# ------------------------------------------------------------------------------ CLI
def _default_checkpoint(host: str = "llava") -> str:
    from .demo import DEFAULT_CKPT

    path = DEFAULT_CKPT if host == "llava" else DEFAULT_CKPT.parent / "llava-hf-tiny"
    if not (path / "config.json").exists():
        if host == "llava":
            from .tiny import build
        else:
            from .tiny_hf import build
        print(f"building the tiny offline checkpoint at {path} ...", file=sys.stderr)
        build(path, force=True)
    return str(path)


def _load_image(path: Optional[str]):
    from PIL import Image, UnidentifiedImageError

    if path is None:
        try:
            from skimage import data
        except ImportError:
            raise SystemExit("error: no --image given and scikit-image (for its sample photo) is not installed")
        return Image.fromarray(data.chelsea()), "scikit-image chelsea (cat)"
    if not os.path.isfile(path):
        raise SystemExit(f"error: --image {path}: no such file")
    try:
        return Image.open(path).convert("RGB"), path
    except (UnidentifiedImageError, OSError) as err:
        raise SystemExit(f"error: --image {path}: cannot read it as an image ({err})")


def _check_model_path(path: str) -> None:
    """A local path must be a directory; a bare 'owner/name' that is not on disk may be a hub id."""
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise SystemExit(f"error: --model-path {path}: not a directory")
    hub_like = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path) and not os.path.exists(path.split("/")[0])
    if not hub_like:
        raise SystemExit(f"error: --model-path {path}: no such directory")


def check_out(path: str, flag: str = "--out") -> None:
    """Fail before any model runs: a directory, a missing folder or a format matplotlib lacks."""
    out_dir = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise SystemExit(f"error: {flag} {path}: is a directory; give a file name such as fig.png")
    if not os.path.isdir(out_dir):
        raise SystemExit(f"error: {flag} {path}: directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise SystemExit(f"error: {flag} {path}: directory {out_dir} is not writable")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit(f"error: {flag} needs matplotlib: pip install -e .[viz]") from None
    formats = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in formats:
        raise SystemExit(f"error: {flag} {path}: unknown image format {ext or '(no extension)'!r}; "
                         f"use one of .{', .'.join(sorted(formats))}")


def parse_compare(text: str, budget: Optional[int], unit: str):
    """'star,fastv@115,none' -> MethodConfigs (a name's own @budget wins over --budget)."""
    from .methods import METHODS, MethodConfig

    out = []
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        name, _, b = item.partition("@")
        if name not in METHODS:
            raise SystemExit(f"error: --compare: unknown method {name!r}; choose from {', '.join(METHODS)}")
        try:
            own = int(b) if b else None
        except ValueError:
            raise SystemExit(f"error: --compare {item}: the budget after @ must be an integer") from None
        bud = own if b else (None if name == "none" else budget)
        try:
            out.append(MethodConfig.from_name(name, bud, **({"unit": unit} if name != "none" and unit != "image"
                                                            else {})))
        except ValueError as err:
            raise SystemExit(f"error: --compare {item}: {err}") from None
    if not out:
        raise SystemExit("error: --compare needs at least one method, e.g. --compare star,fastv")
    return out


def build_parser() -> argparse.ArgumentParser:
    from .cli import add_method_args, add_model_args

    parser = argparse.ArgumentParser(prog="python -m llava_star.visualize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None,
                        help="LLaVA-1.5 or NeXT checkpoint, haotian-liu/LLaVA or llava-hf (the hf host) (default: the "
                             "tiny random-weight one, built on first use)")
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--host", default="auto", choices=("auto", "llava", "hf"),
                        help="llava (llava-torch) or hf (transformers' Llava / LlavaNext classes); auto: from "
                             "--model-path's config.json, llava without one (default: %(default)s)")
    parser.add_argument("--image", default=None, help="image file (default: a scikit-image sample photo)")
    parser.add_argument("--question", default="What is shown in this image?")
    parser.add_argument("--conv-mode", default=None, help="conversation template (default: from the model name)")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--compare", default=None, metavar="M1,M2,...",
                        help="one row per method on the same image: names or name@budget, e.g. "
                             "star,fastv,pdrop,sparsevlm@64,none (others at --budget)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"PNG to write (default: {DEFAULT_OUT})")
    add_method_args(parser)
    add_model_args(parser)
    return parser


def _host(args) -> str:
    """--host against --model-path (auto: its config.json; llava without a path), and the
    llava-only flags refused on the hf host."""
    from .cli import tool_host
    from .hosts import model_type_of

    host = tool_host(args.host, args.model_path)
    if host == "hf":
        for flag, value in (("--model-base", args.model_base), ("--conv-mode", args.conv_mode)):
            if value is not None:
                raise SystemExit(f"error: {flag} is for --host llava (the hf host prompts with the "
                                 "processor's chat template)")
        # before any weights load; a path whose config.json is unreadable is left to the loader
        kind = model_type_of(args.model_path) if args.model_path is not None else "llava"  # the tiny default
        if args.fixed_grid is not None and kind not in (None, "llava_next"):
            raise SystemExit("error: --fixed-grid is for LLaVA-NeXT checkpoints (a llava-hf llava_next "
                             "--model-path on this host)")
    return host


def _figure_llava(args, path, device, methods, image, note):
    from .loader import load_pretrained_model
    from .prompting import conv_mode_for

    try:
        tokenizer, model, processor, _ = load_pretrained_model(
            path, args.model_base, None, star=methods[0], device=device,
            attn_implementation=args.attn_implementation, fixed_grid=args.fixed_grid)
    except (FileNotFoundError, NotImplementedError) as err:
        msg = str(err) if "--model-path" in str(err) else f"--model-path {path}: {err}"
        raise SystemExit(f"error: {msg}")
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot load --model-path {path}: {err}")
    conv = args.conv_mode or conv_mode_for(path)
    if args.compare is not None:
        return compare(model, tokenizer, processor, image, args.question, methods, conv, args.max_new_tokens,
                       note=note)
    return render(model, tokenizer, processor, image, args.question, conv, args.max_new_tokens,
                  note=note, label=method_label(methods[0]))


def _figure_hf(args, path, device, methods, image, note):
    from . import visualize_hf
    from .hf import load_pretrained

    try:
        processor, model = load_pretrained(path, star=methods[0], device=device,
                                           attn_implementation=args.attn_implementation, fixed_grid=args.fixed_grid)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}")
    except (OSError, ValueError, TypeError) as err:
        msg = str(err) if "--model-path" in str(err) else f"cannot load --model-path {path}: {err}"
        raise SystemExit(f"error: {msg}")
    if args.compare is not None:
        return visualize_hf.compare(model, processor, image, args.question, methods, args.max_new_tokens, note=note)
    return visualize_hf.render(model, processor, image, args.question, args.max_new_tokens, note=note,
                               label=method_label(methods[0]))


def main(argv=None) -> int:
    from .cli import knob_flags_given, method_from_args

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare is not None:
        if args.method != "none" or knob_flags_given(args):
            raise SystemExit("error: --compare takes the methods itself (name@budget); per-method flags "
                             "and --method go without --compare")
        methods = parse_compare(args.compare, args.budget, args.budget_unit)
    else:
        methods = [method_from_args(args)]
    if args.max_new_tokens < 1:
        raise SystemExit(f"error: --max-new-tokens must be >= 1, got {args.max_new_tokens}")
    check_out(args.out)
    host = _host(args)
    image, image_name = _load_image(args.image)
    if args.model_path is not None:
        _check_model_path(args.model_path)
        path = args.model_path
    else:
        path = _default_checkpoint(host)

    import torch
    import matplotlib
    matplotlib.use("Agg")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    note = tiny_note(path)
    try:
        if host == "hf":
            fig = _figure_hf(args, path, device, methods, image, note)
        else:
            fig = _figure_llava(args, path, device, methods, image, note)
    except (NotImplementedError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    try:
        fig.savefig(args.out, dpi=DPI)
    except OSError as err:
        raise SystemExit(f"error: --out {args.out}: cannot write it ({err})") from None
    print(f"model: {path}\nimage: {image_name} {image.size}\nquestion: {args.question}")
    if note:
        print(f"note: {note}")
    for run in fig.llava_star_runs:
        rec = run.record
        counts = (f"stage 1 kept {rec.stage1_kept.numel()}, final kept {rec.final_kept.numel()}, t_eq {rec.t_eq:.1f}"
                  if rec is not None else f"no pruning, {run.visual_tokens} visual tokens")
        print(f"{run.label}: {counts}; answer {run.answer!r}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
