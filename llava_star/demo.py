"""Baseline vs a pruning method on one image, end to end.

    python -m llava_star.demo                      # tiny offline checkpoint, a scikit-image photo
    python -m llava_star.demo --model-path liuhaotian/llava-v1.5-7b --image cat.jpg --device cuda

Prints, per run: visual tokens after each stage, t_eq, prefill time and the answer; writes a
picture of what each run kept on the photo (llava_star.visualize's figure: one row per run,
one column per pruning stage) and prints its path. The tiny checkpoint has random weights:
its answers are gibberish, its counts, kept cells and timings are real.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

from .cli import add_method_args, method_from_args
from .prompting import conv_mode_for  # light: no torch, no llava

DEFAULT_CKPT = Path(os.environ.get("LLAVA_STAR_HOME", Path.home() / ".cache" / "llava_star")) / "llava-v1.5-tiny"
DEFAULT_FIGURE = "llava_star_demo.png"


def load_image(path):
    from PIL import Image, UnidentifiedImageError

    if path:
        if not os.path.isfile(path):
            raise SystemExit(f"error: --image {path}: no such file")
        try:
            return Image.open(path).convert("RGB"), path
        except (UnidentifiedImageError, OSError) as err:
            raise SystemExit(f"error: --image {path}: cannot read it as an image ({err})") from None
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("error: no --image given and scikit-image (for its sample photo) is not installed")
    return Image.fromarray(data.astronaut()), "scikit-image astronaut"


def run(model, tokenizer, processor, image, question, conv_mode, max_new_tokens, repeats=5):
    """(answer, median prefill seconds, the generate call's records or None for stock llava)."""
    import torch
    from llava.mm_utils import process_images

    from .prompting import prompt_input_ids

    ids = prompt_input_ids(tokenizer, question, conv_mode, model.config).to(model.device)
    pixels = process_images([image], processor, model.config).to(model.device, model.dtype)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # first run warms up
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(ids, images=pixels, image_sizes=[image.size], use_cache=True)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False,
                             max_new_tokens=max_new_tokens, use_cache=True)
    answer = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    return answer, statistics.median(times[1:]), getattr(model, "star_record", None)


def figure_target(args):
    """The PNG path to write, or None (with the reason printed) when there is none to write."""
    from . import visualize

    if args.no_figure:
        return None
    if importlib.util.find_spec("matplotlib") is None:
        if args.figure is not None:
            raise SystemExit("error: --figure needs matplotlib: pip install -e .[viz]")
        print("no picture: matplotlib is not installed (pip install -e .[viz])")
        return None
    path = args.figure or DEFAULT_FIGURE
    visualize.check_out(path, "--figure")
    return path


def write_figure(path, model, tokenizer, processor, image, question, conv_mode, runs, note):
    import matplotlib
    matplotlib.use("Agg")

    from . import visualize

    canvas = visualize.canvas_for(model, tokenizer, processor, image, conv_mode)
    fig = visualize.figure(canvas, runs, question, note)
    try:
        fig.savefig(path, dpi=visualize.DPI)
    except OSError as err:
        raise SystemExit(f"error: --figure {path}: cannot write it ({err})") from None
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava_star.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None,
                        help=f"LLaVA checkpoint (default: the tiny random-weight one, built at {DEFAULT_CKPT})")
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--image", default=None, help="image file (default: a scikit-image sample photo)")
    parser.add_argument("--question", default="What is shown in this image?")
    parser.add_argument("--conv-mode", default=None,
                        help="conversation template (default: from the model name, as llava's run_llava: "
                             "mistral_instruct for Mistral, chatml_direct for v1.6-34b, else vicuna_v1)")
    parser.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help=f"where to write the picture of what each run kept (default: {DEFAULT_FIGURE})")
    parser.add_argument("--no-figure", action="store_true", help="write no picture")
    add_method_args(parser)
    parser.set_defaults(method="star")  # the demo compares a method with the baseline: STAR (keep 58)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.method == "none":
        parser.error("--method none: the demo always runs the baseline too; choose a pruning method")
    if args.method == "star" and args.budget is None and args.star_keep is None:
        args.budget = 58  # STAR's default keep, named so the output says star@58
    if args.max_new_tokens < 1:
        raise SystemExit(f"error: --max_new_tokens must be >= 1, got {args.max_new_tokens}")
    method = method_from_args(args)
    figure_path = figure_target(args)

    import torch

    from . import visualize
    from .hosts.llava import apply_star, resolve_plan
    from .loader import load_pretrained_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = args.model_path
    if path is None:
        path = str(DEFAULT_CKPT)
        if not (DEFAULT_CKPT / "config.json").exists():
            from .tiny import build
            print(f"building the tiny offline checkpoint at {path} ...")
            build(path, force=True)
    image, image_name = load_image(args.image)
    try:
        tokenizer, model, processor, _ = load_pretrained_model(path, args.model_base, None, device=device)
    except (OSError, ValueError, NotImplementedError) as err:
        msg = str(err) if "--model-path" in str(err) else f"cannot load --model-path {path}: {err}"
        raise SystemExit(f"error: {msg}") from None
    try:  # check the method against this model before the baseline run, not after it
        resolve_plan(model, method)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.conv_mode is None:
        args.conv_mode = conv_mode_for(path)
    note = visualize.tiny_note(path)
    print(f"model: {path}\nimage: {image_name} {image.size}\nquestion: {args.question}")
    if note:
        print(f"note: {note}")
    print()
    base_answer, base_t, _ = run(model, tokenizer, processor, image, args.question, args.conv_mode,
                                 args.max_new_tokens)
    apply_star(model, method)
    answer, t, rec = run(model, tokenizer, processor, image, args.question, args.conv_mode, args.max_new_tokens)
    r = rec[0]
    n = r.num_patches  # the image's patch tokens before pruning (more than 576 on LLaVA-NeXT)
    label = visualize.method_label(method)
    # stock llava: every layer sees every row llava's merge gives the image (NeXT: + newline rows)
    span = visualize.merged_rows(model, tokenizer, processor, image, args.conv_mode).size
    rows = [("baseline (stock llava)", n, f"{n} -> {n}", f"{float(span):.1f}", base_t, base_answer),
            (label, n, f"{r.stage1_kept.numel()} -> {r.final_kept.numel()}", f"{r.t_eq:.1f}", t, answer)]
    print(f"{'run':<24} {'patches':>7} {'stage1 -> final':>16} {'t_eq':>6} {'prefill':>9}  answer")
    for name, patches, kept, teq, secs, ans in rows:
        print(f"{name:<24} {patches!s:>7} {kept:>16} {teq:>6} {secs * 1000:>7.1f}ms  {ans!r}")
    print(f"\nvisual tokens per decoder layer ({method.name}): {r.tokens_per_layer}")
    if figure_path is not None:
        runs = [visualize.Run("baseline", None, None, base_answer, n),
                visualize.Run(label, model.star_plan, r, answer)]
        write_figure(figure_path, model, tokenizer, processor, image, args.question, args.conv_mode, runs, note)
        print(f"picture of what each run kept: {os.path.abspath(figure_path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
