"""Correctness of the GPU code path (not its timing): on the tiny checkpoint, for each method,
  1. cached = uncached: greedy generation with the KV cache gives the same tokens as a full
     recompute of the prefix at every step (use_cache=False) with the same kept tokens (the
     selection is recorded once and replayed through the engine's selector seam);
  2. batch = single: a padded batch of images with prompts of different lengths gives, per
     row, the tokens and kept sets of that sample run alone (left and right padding).

    python scripts/gpu/checks.py --device cuda --dtype float16 --methods star@58 --out checks.json

Exits 1 on any mismatch or error (printing where, and the greedy top-2 logit margin there: a
margin near fp16's rounding says a near-tie flipped, a wide one says a bug), 2 on bad
arguments. Uses the public API (llava_star.tiny, load_pretrained_model, apply_star, hooks) and
the engine's selector seam (engine.seams.Recorded) to pin the uncached recompute's selection.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

QUESTIONS = [
    "What is shown in this image?",
    "Describe the colours you can see in this picture, briefly, and say what stands out.",
    "Is there an animal in the image? Please answer yes or no, then name it if there is one.",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python scripts/gpu/checks.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="default: %(default)s")
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--methods", default="star@58",
                   help="comma-separated METHOD@BUDGET to check (default: %(default)s)")
    p.add_argument("--new-tokens", type=int, default=8, help="greedy tokens per generation (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="a tiny checkpoint folder to reuse (default: built into a temporary folder)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    specs = []
    for item in filter(None, (s.strip() for s in args.methods.split(","))):
        name, sep, budget = item.partition("@")
        if not sep or not budget.isdigit():
            p.error(f"--methods: {item!r} is not METHOD@BUDGET (e.g. star@58)")
        specs.append((name, int(budget)))
    if not specs:
        p.error("--methods: name at least one METHOD@BUDGET")
    if args.new_tokens < 2:
        p.error("--new-tokens must be >= 2")
    args.specs = specs
    return args


# ------------------------------------------------------------------------ inputs
def photos():
    """Real photographs shipped with scikit-image (square and non-square)."""
    from PIL import Image
    from skimage import data

    return [Image.fromarray(data.chelsea()), Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())]


def prompt_ids(tokenizer, question):
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token

    from llava_star.prompting import build_prompt

    return tokenizer_image_token(build_prompt(question, "vicuna_v1"), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")


def pixels(model, processor, images):
    from llava.mm_utils import process_images

    return process_images(images, processor, model.config).to(model.device, model.dtype)


def padded(tokenizer, questions, side, device):
    import torch

    ids = [prompt_ids(tokenizer, q) for q in questions]
    n = max(len(x) for x in ids)
    out = torch.full((len(ids), n), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, x in enumerate(ids):
        sl = slice(n - len(x), n) if side == "left" else slice(0, len(x))
        out[i, sl], mask[i, sl] = x, 1
    return out.to(device), mask.to(device)


# -------------------------------------------------------------------- generation
def greedy(model, ids, px, n, mask=None):
    """New tokens per row and the top-2 logit margin of every step."""
    import torch

    with torch.inference_mode():
        out = model.generate(ids, images=px, attention_mask=mask, do_sample=False, num_beams=1,
                             max_new_tokens=n, use_cache=True, output_scores=True, return_dict_in_generate=True)
    seqs = out.sequences.tolist()
    # generate() with inputs_embeds returns [BOS] + new tokens in transformers 4.37
    seqs = [s[1:] if s and s[0] == model.config.bos_token_id else s for s in seqs]
    steps = torch.stack([s.float() for s in out.scores], 1)  # [batch, steps, vocab]
    top2 = steps.topk(2, dim=-1).values
    margins = (top2[..., 0] - top2[..., 1]).tolist()
    return seqs, margins


def uncached_greedy(model, ids, px, n):
    """Greedy tokens recomputing the whole prefix each step (no cache), every selection pinned to
    what a prefill of `ids` chose; and the top-2 margin of each step."""
    import torch
    from llava_star import hooks
    from llava_star.engine.seams import Recorded

    seq, toks, margins = ids, [], []
    recorded = Recorded()
    with torch.inference_mode():
        with hooks(model, selector=recorded):
            model(ids, images=px, use_cache=False)
        with hooks(model, selector=recorded.replay()):
            for _ in range(n):
                logits = model(seq, images=px, use_cache=False).logits[0, -1].float()
                top2 = logits.topk(2).values
                nxt = int(logits.argmax())
                toks.append(nxt)
                margins.append(float(top2[0] - top2[1]))
                seq = torch.cat([seq, torch.tensor([[nxt]], device=seq.device)], 1)
    return toks, margins


def kept(record):
    """What a record says was kept, comparable across runs."""
    return {"stage1_kept": record.stage1_kept.tolist(), "decoder_kept": [d.tolist() for d in record.decoder_kept],
            "merged": list(record.merged), "tokens_per_layer": list(record.tokens_per_layer)}


def first_diff(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


# ------------------------------------------------------------------------ checks
def check_cached(model, tok, proc, image, n):
    ids = prompt_ids(tok, QUESTIONS[0]).unsqueeze(0).to(model.device)
    px = pixels(model, proc, [image])
    (cached,), (m_cached,) = greedy(model, ids, px, n)
    k_cached = kept(model.star_record[0])
    uncached, m_uncached = uncached_greedy(model, ids, px, len(cached))
    k_uncached = kept(model.star_record[0])
    ok = cached == uncached and k_cached == k_uncached
    detail = f"{len(cached)} tokens, {len(k_cached['stage1_kept'])} kept by the vision stage, " \
             f"tokens per layer {k_cached['tokens_per_layer'][0]}..{k_cached['tokens_per_layer'][-1]}"
    if cached != uncached:
        i = first_diff(cached, uncached)
        detail = (f"tokens differ from step {i}: cached {cached} vs uncached {uncached}; top-2 logit margin "
                  f"there {m_cached[min(i, len(m_cached) - 1)]:.4f} (cached), "
                  f"{m_uncached[min(i, len(m_uncached) - 1)]:.4f} (uncached)")
    elif k_cached != k_uncached:
        detail = "the recompute kept other tokens than the cached prefill (the replay seam did not pin them)"
    return ok, detail


def check_batch(model, tok, proc, images, n, side):
    singles = []
    for image, q in zip(images, QUESTIONS):
        ids = prompt_ids(tok, q).unsqueeze(0).to(model.device)
        (toks,), (margins,) = greedy(model, ids, pixels(model, proc, [image]), n)
        singles.append((toks, margins, kept(model.star_record[0])))
    model.config.tokenizer_padding_side = side
    ids, mask = padded(tok, QUESTIONS[:len(images)], side, model.device)
    lengths = {int(m.sum()) for m in mask}
    seqs, margins = greedy(model, ids, pixels(model, proc, images), n, mask=mask)
    problems = []
    for b, (toks, m_single, k_single) in enumerate(singles):
        got = seqs[b][:len(toks)]  # a row that stopped early alone keeps generating in the batch
        if got != toks:
            i = first_diff(got, toks)
            problems.append(f"row {b}: tokens differ from step {i}: batch {got} vs single {toks}; top-2 logit "
                            f"margin there {margins[b][i]:.4f} (batch), {m_single[i]:.4f} (single)")
        k_batch = kept(model.star_record[b])
        for key in k_single:
            if k_batch[key] != k_single[key]:
                a, s = k_batch[key], k_single[key]
                if key in ("stage1_kept",):
                    diff = f"{len(set(a) ^ set(s))} grid indices differ"
                else:
                    diff = f"batch {a} vs single {s}" if len(str(a)) < 200 else "they differ"
                problems.append(f"row {b}: {key}: {diff}")
    if len(lengths) != len(images):
        problems.append("the prompts must have different lengths to test padding")
    detail = f"{len(images)} rows of {len(lengths)} prompt lengths, {side} padding"
    return not problems, detail + ("" if not problems else ": " + "; ".join(problems))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from llava_star import MethodConfig, apply_star, load_pretrained_model
    from llava_star.tiny import build

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    try:
        configs = [(f"{name}@{budget}", MethodConfig.from_name(name, budget=budget)) for name, budget in args.specs]
    except (KeyError, ValueError) as err:
        print(f"error: --methods: {err}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llava_star_gpu_checks_") as tmp:
        path = args.checkpoint or str(build(Path(tmp) / "llava-v1.5-tiny", variant="llava-v1.5", seed=0))
        tok, model, proc, _ = load_pretrained_model(path, None, None, star=configs[0][1], device=args.device,
                                                    dtype=getattr(torch, args.dtype))
        images = photos()
        results = []
        for label, cfg in configs:
            try:
                apply_star(model, cfg)
            except Exception as err:
                traceback.print_exc()
                results.append({"method": label, "check": "apply_star", "ok": False,
                                "detail": f"raised {type(err).__name__}: {err}"})
                print(f"FAIL {label:14s} apply_star raised {type(err).__name__}: {err}", flush=True)
                continue
            cases = [("cached = uncached", lambda: check_cached(model, tok, proc, images[0], args.new_tokens))]
            cases += [(f"batch = single ({side})",
                       lambda side=side: check_batch(model, tok, proc, images, args.new_tokens, side))
                      for side in ("left", "right")]
            for what, fn in cases:
                try:
                    ok, detail = fn()
                except Exception as err:  # one broken method must not hide what the others do
                    traceback.print_exc()
                    ok, detail = False, f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                results.append({"method": label, "check": what, "ok": ok, "detail": detail})
                print(f"{'ok  ' if ok else 'FAIL'} {label:14s} {what:24s} {detail}", flush=True)
    failed = [r for r in results if not r["ok"]]
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    summary = (f"checks on {dev}, {args.dtype}, tiny checkpoint: {len(results) - len(failed)} of {len(results)} "
               f"passed ({time.perf_counter() - t0:.1f} s)")
    print(summary)
    if args.out:
        meta = {"device": dev, "dtype": args.dtype, "torch": torch.__version__,
                "transformers": __import__("transformers").__version__}
        Path(args.out).write_text(json.dumps({"meta": meta, "summary": summary, "results": results}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
