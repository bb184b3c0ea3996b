"""Which patches a pruning method kept, drawn on the image as the model saw it.

    python -m llava_star.visualize --image cat.jpg --question "What is the cat doing?" --out fig.png
    python -m llava_star.visualize --model-path checkpoints/llava-v1.5-7b --image cat.jpg \\
        --question "..." --method star --budget 58 --device cuda --out fig.png

One figure (matplotlib, Agg): the input image as the model saw it (LLaVA-1.5 pads it to a
square with the processor's mean colour and resizes it to 336 px, so the 24x24 patch grid
covers the padded square); the patches the vision stage kept and the final (last decoder
stage) kept patches, dropped cells dimmed toward black; the two stages' score heat maps
(decoder scores drawn in the cells of the tokens that stage scored, blank elsewhere); the
generated answer and the counts (stage-1 kept, final kept, t_eq) as the title.

Without a vision stage every patch counts as kept at stage 1; without decoder stages the
final panel repeats stage 1. With several decoder stages (PDrop, SparseVLM) the stage-2
heat map shows the last stage's scores. LLaVA-NeXT (anyres) checkpoints get one column per crop.

Python: `render(model, tokenizer, image_processor, image, question)` returns the Figure
(the model loaded with `load_pretrained_model(..., star=...)`); `overlay(array, kept)` is
the pure dimming helper it uses.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
from typing import List, Optional, Sequence

import numpy as np

FIGSIZE = (12.0, 8.5)  # inches
DPI = 100              # so a saved figure is 1200 x 850 px
DIM = 0.7
DEFAULT_OUT = "llava_star_viz.png"


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
    rows = np.round(np.arange(grid + 1) * h / grid).astype(int)
    cols = np.round(np.arange(grid + 1) * w / grid).astype(int)
    row_of = np.repeat(np.arange(grid), np.diff(rows))
    col_of = np.repeat(np.arange(grid), np.diff(cols))
    pixel_kept = cell_kept.reshape(grid, grid)[row_of[:, None], col_of[None, :]]  # [H, W]
    if img.ndim == 3:
        pixel_kept = pixel_kept[:, :, None]
    dimmed = img.astype(np.float64) * (1.0 - dim)
    if np.issubdtype(img.dtype, np.integer):
        dimmed = np.round(dimmed)
    return np.where(pixel_kept, img, dimmed.astype(img.dtype))


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


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _is_anyres(model_config) -> bool:
    return str(getattr(model_config, "image_aspect_ratio", None) or "").startswith("anyres")


def _generate(model, tokenizer, image_processor, image, question, conv_mode, max_new_tokens):
    import torch
    from llava.mm_utils import process_images

    from .prompting import prompt_input_ids

    ids = prompt_input_ids(tokenizer, question, conv_mode, model.config).to(model.device)
    pixels = process_images([image], image_processor, model.config).to(model.device, model.dtype)
    model.star_record = None
    with torch.inference_mode():
        out = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, use_cache=True)
    answer = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    record = model.star_record[0] if model.star_record else None
    return answer, record


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


def render(model, tokenizer, image_processor, image, question, conv_mode="vicuna_v1", max_new_tokens=16,
           *, dim: float = DIM):
    """Generate an answer and return a matplotlib Figure of what the pruning kept (see the module
    docstring). `model` comes from `llava_star.load_pretrained_model(..., star=...)` (use
    `MethodConfig.from_name("none")` for stock llava); `image` is a PIL image. Panels, in
    `fig.axes` order and labelled by `Axes.get_label()`: "image", "stage1", "stage2",
    "stage1_scores", "stage2_scores", "info" (plus the two heat maps' colour bars)."""
    import matplotlib

    if not hasattr(model, "star_plan"):
        raise TypeError("render needs a llava_star model: load it with llava_star.load_pretrained_model("
                        "..., star=MethodConfig.from_name(...)) or convert it with apply_star")
    if _is_anyres(model.config):
        return render_crops(model, tokenizer, image_processor, image, question, conv_mode, max_new_tokens, dim=dim)
    from matplotlib.figure import Figure  # no pyplot: nothing global, no GUI backend

    tower = model.get_vision_tower()
    side = int(getattr(tower, "num_patches_per_side", round(math.sqrt(tower.num_patches))))
    n_patches = side * side
    view = model_view(image, image_processor, model.config)
    answer, rec = _generate(model, tokenizer, image_processor, image, question, conv_mode, max_new_tokens)
    plan = model.star_plan
    all_cells = np.arange(n_patches)
    if rec is None or rec.image_span is None:
        raise RuntimeError("the model recorded no image span for this prompt (no <image> token reached it)")
    kept1 = _np(rec.stage1_kept).astype(np.int64) if rec.stage1_kept is not None else all_cells
    kept2 = _np(rec.stage2_kept).astype(np.int64) if rec.stage2_kept is not None else kept1
    if plan.vision is None:
        kept1 = all_cells
    if not plan.decoder:
        kept2 = kept1

    # score maps: stage 1 over the whole grid, the last decoder stage on the cells it scored
    s1 = None
    if rec.stage1_scores is not None:
        s1 = scores_to_grid(rec.stage1_scores, all_cells, side)
    s2, s2_layer = None, None
    if rec.stage2_scores:
        i = len(rec.stage2_scores) - 1
        scored = kept1 if i == 0 else _np(rec.decoder_kept[i - 1]).astype(np.int64)
        try:
            s2 = scores_to_grid(rec.stage2_scores[i], scored, side)
        except ValueError:
            s2 = None
        s2_layer = plan.decoder[i].layer if i < len(plan.decoder) else None

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    gs = fig.add_gridspec(2, 3, left=0.03, right=0.97, bottom=0.03, top=0.84, wspace=0.22, hspace=0.14)
    extent = (0, view.shape[1], view.shape[0], 0)

    def image_panel(cell, label, array, title):
        ax = fig.add_subplot(cell, label=label)
        ax.imshow(array, interpolation="nearest", extent=extent)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
        return ax

    image_panel(gs[0, 0], "image", view, f"input as the model saw it ({view.shape[1]}x{view.shape[0]})")
    n1, n2 = int(kept1.size), int(kept2.size)
    stage1_title = (f"stage 1 ({plan.vision.score}): {n1} / {n_patches} kept" if plan.vision is not None
                    else f"stage 1: no vision stage, all {n_patches} kept")
    image_panel(gs[0, 1], "stage1", overlay(view, kept1, side, dim), stage1_title)
    final_title = (f"final (layer {plan.decoder[-1].layer}+): {n2} / {n_patches} kept" if plan.decoder
                   else f"final: no decoder stage, = stage 1 ({n2})")
    image_panel(gs[0, 2], "stage2", overlay(view, kept2, side, dim), final_title)

    def heat_panel(cell, label, grid_scores, title, empty_text):
        ax = fig.add_subplot(cell, label=label)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlim(0, view.shape[1]), ax.set_ylim(view.shape[0], 0)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
        if grid_scores is None or not np.isfinite(grid_scores).any():
            ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes,
                    fontsize=10, color="0.4")
            return ax
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(1, 1, 1, 0))  # NaN: blank
        finite = grid_scores[np.isfinite(grid_scores)]
        vmin, vmax = float(finite.min()), float(np.percentile(finite, 99))
        extend = "max" if vmax < finite.max() else "neither"  # a few outliers would wash out the rest
        if vmax <= vmin:
            vmax = float(finite.max()) if finite.max() > vmin else vmin + 1e-12
        im = ax.imshow(np.ma.masked_invalid(grid_scores), cmap=cmap, interpolation="nearest", extent=extent,
                       vmin=vmin, vmax=vmax)
        cax = ax.inset_axes([1.03, 0.0, 0.05, 1.0])  # outside the panel, so it lines up with the images
        cb = fig.colorbar(im, cax=cax, extend=extend)
        cb.ax.tick_params(labelsize=8)
        return ax

    heat_panel(gs[1, 0], "stage1_scores", s1,
               f"stage 1 scores ({plan.vision.score})" if plan.vision is not None else "stage 1 scores",
               "no vision-stage scores" if plan.vision is not None else "no vision stage")
    n_scored = 0 if s2 is None else int(np.isfinite(s2).sum())
    heat_panel(gs[1, 1], "stage2_scores", s2,
               (f"stage 2 scores at layer {s2_layer} ({plan.decoder[-1].score}, {n_scored} tokens)"
                if plan.decoder else "stage 2 scores"),
               "no decoder-stage scores" if plan.decoder else "no decoder stage")

    info = fig.add_subplot(gs[1, 2], label="info")
    info.axis("off")
    method = plan.name + (f" (unit: {plan.unit})" if plan.unit != "image" else "")
    lines = [f"method: {method}",
             f"patch grid: {side}x{side} = {n_patches}",
             f"stage 1 kept: {n1}",
             f"final kept: {n2}",
             f"t_eq: {rec.t_eq:.1f}",
             "visual tokens per layer:"]
    lines += textwrap.wrap(_per_layer(list(rec.tokens_per_layer)), 40)
    lines += [f"dimmed: dropped cells x{1 - dim:.2f}"]
    info.text(0.2, 0.98, "\n".join(lines), ha="left", va="top", fontsize=10, family="monospace",
              transform=info.transAxes, parse_math=False)

    q = textwrap.shorten(_printable(question), 150, placeholder=" ...")
    a = textwrap.fill(_printable(answer) or "(empty answer)", 120, max_lines=2, placeholder=" ...")
    fig.suptitle(f"Q: {q}\nA: {a}", fontsize=11, y=0.985, va="top", parse_math=False)
    fig.text(0.5, 0.885, f"{method}: stage 1 kept {n1}  |  final kept {n2}  |  t_eq {rec.t_eq:.1f}",
             ha="center", va="center", fontsize=11, weight="bold", parse_math=False)
    fig.llava_star_answer = answer
    fig.llava_star_record = rec
    return fig


def crop_views(image, image_processor, model_config) -> List[np.ndarray]:
    """Every crop of an anyres image as the model saw it (base image first), de-normalised
    from llava's own `process_images` output."""
    from llava.mm_utils import process_images

    pixels = process_images([image], image_processor, model_config)[0]  # [crops, 3, H, W]
    mean = np.asarray(image_processor.image_mean)[:, None, None]
    std = np.asarray(image_processor.image_std)[:, None, None]
    return [np.clip(np.round((_np(c) * std + mean) * 255).transpose(1, 2, 0), 0, 255).astype(np.uint8)
            for c in pixels]


def render_crops(model, tokenizer, image_processor, image, question, conv_mode="vicuna_v1",
                 max_new_tokens=16, *, dim: float = DIM):
    """LLaVA-NeXT: one column per crop (base image first). Rows: stage-1 kept patches, final
    kept patches, stage-1 score map, last decoder stage's score map (each score row on one
    colour scale). Kept ids are `crop * 576 + patch` (see PruneRecord). Cells that llava's
    unpad removed are dimmed in the overlays (they never reached the LLM) and blank in the
    decoder score map; CLIP scored them, so the stage-1 map shows them. Axes are labelled `stage1_crop<c>`, `stage2_crop<c>`,
    `stage1_scores_crop<c>`, `stage2_scores_crop<c>`."""
    import matplotlib
    from matplotlib.figure import Figure

    side = int(model.get_vision_tower().num_patches_per_side)
    per_crop = side * side
    views = crop_views(image, image_processor, model.config)
    answer, rec = _generate(model, tokenizer, image_processor, image, question, conv_mode, max_new_tokens)
    if rec is None or rec.image_span is None:
        raise RuntimeError("the model recorded no image span for this prompt (no <image> token reached it)")
    plan = model.star_plan
    kept1, kept2 = _np(rec.stage1_kept).astype(np.int64), _np(rec.stage2_kept).astype(np.int64)
    n = len(views)
    # score maps over the whole image (crop * per_crop + patch), NaN where nothing was scored
    s1 = np.full(n * per_crop, np.nan)
    if rec.stage1_scores is not None and rec.stage1_scores.numel() == n * per_crop:
        s1[:] = _np(rec.stage1_scores).astype(np.float64)  # CLIP scores every patch of every crop
    s2 = np.full(n * per_crop, np.nan)
    s2_layer = None
    if rec.stage2_scores:
        i = len(rec.stage2_scores) - 1
        scored = kept1 if i == 0 else _np(rec.decoder_kept[i - 1]).astype(np.int64)
        vals = _np(rec.stage2_scores[i]).astype(np.float64).reshape(-1)
        if vals.size == scored.size:
            s2[scored] = vals
        s2_layer = plan.decoder[i].layer if i < len(plan.decoder) else None
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(1, 1, 1, 0))

    fig = Figure(figsize=(3.0 * n + 0.8, 13.0), dpi=DPI)
    for c, view in enumerate(views):
        crop_ids = slice(c * per_crop, (c + 1) * per_crop)
        name = "base" if c == 0 else f"crop {c}"
        for row, (kept, label) in enumerate(((kept1, "stage 1"), (kept2, "final"))):
            cells = kept[(kept >= c * per_crop) & (kept < (c + 1) * per_crop)] - c * per_crop
            ax = fig.add_subplot(4, n, row * n + c + 1, label=f"{'stage1' if row == 0 else 'stage2'}_crop{c}")
            ax.imshow(overlay(view, cells, side, dim), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: {label} {cells.size}/{per_crop}", fontsize=9)
        for row, (scores, label, title) in enumerate(((s1, "stage1_scores", "stage 1 scores"),
                                                      (s2, "stage2_scores", f"stage 2 scores (layer {s2_layer})"))):
            ax = fig.add_subplot(4, n, (row + 2) * n + c + 1, label=f"{label}_crop{c}")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: {title}", fontsize=9)
            finite = scores[np.isfinite(scores)]
            if finite.size == 0:
                ax.text(0.5, 0.5, "not scored", ha="center", va="center", transform=ax.transAxes, color="0.4")
                continue
            vmin, vmax = float(finite.min()), float(np.percentile(finite, 99))
            vmax = vmax if vmax > vmin else vmin + 1e-12
            im = ax.imshow(np.ma.masked_invalid(scores[crop_ids].reshape(side, side)), cmap=cmap,
                           interpolation="nearest", vmin=vmin, vmax=vmax)
            if c == n - 1:
                fig.colorbar(im, cax=ax.inset_axes([1.04, 0.0, 0.06, 1.0])).ax.tick_params(labelsize=7)
    q = textwrap.shorten(_printable(question), 120, placeholder=" ...")
    a = textwrap.fill(_printable(answer) or "(empty answer)", 100, max_lines=2, placeholder=" ...")
    fig.suptitle(f"Q: {q}\nA: {a}\n{plan.name}: stage 1 kept {kept1.size} | final kept "
                 f"{kept2.size} of {rec.num_patches} | t_eq {rec.t_eq:.1f}", fontsize=10, parse_math=False)
    fig.llava_star_answer = answer
    fig.llava_star_record = rec
    return fig


def _default_checkpoint() -> str:
    from .demo import DEFAULT_CKPT

    if not (DEFAULT_CKPT / "config.json").exists():
        from .tiny import build
        print(f"building the tiny offline checkpoint at {DEFAULT_CKPT} ...", file=sys.stderr)
        build(DEFAULT_CKPT, force=True)
    return str(DEFAULT_CKPT)


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


def main(argv=None) -> int:
    from .cli import add_method_args, add_model_args, method_from_args

    parser = argparse.ArgumentParser(prog="python -m llava_star.visualize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None,
                        help="LLaVA-1.5 or NeXT checkpoint (default: the tiny random-weight one, built on first use)")
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--image", default=None, help="image file (default: a scikit-image sample photo)")
    parser.add_argument("--question", default="What is shown in this image?")
    parser.add_argument("--conv-mode", default=None, help="conversation template (default: from the model name)")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dim", type=float, default=DIM, help=f"how far dropped cells go toward black (default {DIM})")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"PNG to write (default: {DEFAULT_OUT})")
    add_method_args(parser)
    add_model_args(parser)
    args = parser.parse_args(argv)
    method = method_from_args(args)
    if not 0.0 <= args.dim <= 1.0:
        raise SystemExit(f"error: --dim must be in [0, 1], got {args.dim}")
    if args.max_new_tokens < 1:
        raise SystemExit(f"error: --max-new-tokens must be >= 1, got {args.max_new_tokens}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out):
        raise SystemExit(f"error: --out {args.out}: is a directory; give a file name such as fig.png")
    if not os.path.isdir(out_dir):
        raise SystemExit(f"error: --out {args.out}: directory {out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise SystemExit(f"error: --out {args.out}: directory {out_dir} is not writable")
    from matplotlib.figure import Figure
    formats = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(args.out)[1].lstrip(".").lower()
    if ext not in formats:
        raise SystemExit(f"error: --out {args.out}: unknown image format {ext or '(no extension)'!r}; "
                         f"use one of .{', .'.join(sorted(formats))}")
    image, image_name = _load_image(args.image)
    if args.model_path is not None:
        _check_model_path(args.model_path)
        path = args.model_path
    else:
        path = _default_checkpoint()

    import torch
    import matplotlib
    matplotlib.use("Agg")

    from .loader import load_pretrained_model
    from .prompting import conv_mode_for

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tokenizer, model, processor, _ = load_pretrained_model(
            path, args.model_base, None, star=method, device=device,
            attn_implementation=args.attn_implementation, fixed_grid=args.fixed_grid)
    except (FileNotFoundError, NotImplementedError) as err:
        msg = str(err) if "--model-path" in str(err) else f"--model-path {path}: {err}"
        raise SystemExit(f"error: {msg}")
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot load --model-path {path}: {err}")
    try:
        fig = render(model, tokenizer, processor, image, args.question, args.conv_mode or conv_mode_for(path),
                     args.max_new_tokens, dim=args.dim)
    except NotImplementedError as err:
        raise SystemExit(f"error: --model-path {path}: {err}")
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    try:
        fig.savefig(args.out, dpi=DPI)
    except OSError as err:
        raise SystemExit(f"error: --out {args.out}: cannot write it ({err})") from None
    rec = fig.llava_star_record
    print(f"model: {path}\nimage: {image_name} {image.size}\nquestion: {args.question}\n"
          f"answer: {fig.llava_star_answer!r}\n"
          f"stage 1 kept {rec.stage1_kept.numel()}, final kept {rec.stage2_kept.numel()}, t_eq {rec.t_eq:.1f}\n"
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
