"""The model side of a runner: load the checkpoint, open and preprocess images exactly as
llava's runners do, build prompts (llava_star.prompting), generate, and say per question what
pruning did (`metadata`)."""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from llava_star.prompting import build_prompt

from .inputs import InputError
from .questions import Item

# The engine's refusal of a prompt that, with its image, passes tokenizer_model_max_length
# (llava would silently truncate it there).
CONTEXT_ERROR = "tokenizer_model_max_length"


class PromptTooLong(Exception):
    """A question whose prompt and image do not fit the model's context."""

    def __init__(self, item: Item, reason: str):
        super().__init__(reason)
        self.item = item


def load_model(args, model_name: str):
    from llava_star.loader import load_pretrained_model

    try:
        tokenizer, model, processor, _ = load_pretrained_model(
            os.path.expanduser(args.model_path), args.model_base, model_name, star=args.method_config,
            device=args.device, attn_implementation=args.attn_implementation,
            fixed_grid=args.fixed_grid)
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from None
    except OSError as e:  # transformers: not a checkpoint directory, hub id unreachable, ...
        which = f"--model-path {args.model_path}" + (f" / --model-base {args.model_base}" if args.model_base else "")
        raise InputError(f"cannot load the model ({which}): {e}") from None
    if getattr(model, "star_plan", None) is None:
        count_visual_tokens(model)
    return tokenizer, model, processor


def merged_patch_counts(model, input_ids, attention_mask, images, image_sizes) -> List[int]:
    """Patch tokens per sample of an anyres (LLaVA-NeXT) merge, without its newline rows."""
    # the host's public layout function: llava's own merge run once more on marker features
    # (no CLIP), the layout the pruning engine reads
    from llava_star.hosts.llava import merged_layout

    layouts = merged_layout(model, input_ids, attention_mask, images, image_sizes)
    return [0 if layout is None else int((layout >= 0).sum()) for layout in layouts]


def count_visual_tokens(model) -> None:
    """Stock llava (--method none): note, per sample, the image's patch tokens and its whole
    span in the merged sequence, so the answers file records the unpruned counts the way a
    pruned run's record does (on LLaVA-NeXT the span also holds `image_newline` rows, which
    count in t_eq but are not patches). Wraps the instance's
    `prepare_inputs_labels_for_multimodal` (llava's merge); what it computes is unchanged."""
    from llava_star.hosts.llava import image_spans

    original = model.prepare_inputs_labels_for_multimodal

    def prepare(input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None):
        out = original(input_ids, position_ids, attention_mask, past_key_values, labels, images,
                       image_sizes=image_sizes)
        if images is not None and out[4] is not None and input_ids.shape[1] != 1:
            spans = image_spans(input_ids, attention_mask, out[2], out[4].shape[1])
            lengths = [0 if s is None else int(s[1]) for s in spans]
            patches = lengths
            if isinstance(images, list) or images.ndim == 5:  # anyres: leave the newline rows out
                patches = merged_patch_counts(model, input_ids, attention_mask, images, image_sizes)
            model._eval_visual_tokens = list(zip(patches, lengths))
        return out

    model.prepare_inputs_labels_for_multimodal = prepare
    model._eval_visual_tokens = None


def metadata_for(model, args, batch_size: int) -> List[Dict[str, Any]]:
    """Per sample of the last generate call: {method, budget, visual_tokens, stage1_kept,
    final_kept, t_eq}. visual_tokens is the image's token count before pruning, final_kept
    what survived the last stage, t_eq the layer-averaged count. For --method none (stock
    llava) every count is the unpruned one; a text-only question has 0 everywhere."""
    base = {"method": args.method}
    if args.budget is not None:
        base["budget"] = args.budget
    records = getattr(model, "star_record", None)
    if getattr(model, "star_plan", None) is not None and records is not None and len(records) == batch_size:
        return [{**base, **r.summary()} for r in records]
    counts = getattr(model, "_eval_visual_tokens", None)
    if counts is None or len(counts) != batch_size:
        counts = [(0, 0)] * batch_size
    return [{**base, "visual_tokens": n, "stage1_kept": n, "final_kept": n, "t_eq": float(span)}
            for n, span in counts]


@dataclass
class Prepared:
    item: Item
    pixels: Any = None          # the image's tensor from llava's process_images (no batch dim)
    size: Any = None            # PIL (width, height)
    error: Optional[str] = None


def open_image(path: str, convert_rgb: bool):
    """The image as llava's runner opens it, except that 16-bit greyscale is scaled to 8 bits
    (PIL's convert("RGB") clips it, turning most photos white)."""
    from PIL import Image

    image = eight_bit(Image.open(path))
    if convert_rgb:
        image = image.convert("RGB")
    return image


def eight_bit(image):
    """16-bit greyscale scaled to 8 bits; any other image as it is."""
    if image.mode.startswith("I;16") or (image.mode == "I" and image.getextrema()[1] > 255):
        image = image.point(lambda v: v / 257).convert("L")
    return image


def prepare_item(item: Item, folder: str, processor, model_config) -> Prepared:
    """Open and preprocess one image exactly as llava's runner does; errors name the file."""
    if item.image is None:
        return Prepared(item)
    from llava.mm_utils import process_images

    path = os.path.join(folder, item.image)
    try:
        image = open_image(path, item.convert_rgb)
        if min(image.size) < 4:
            return Prepared(item, error=f"image {path} is {image.size[0]}x{image.size[1]} pixels: too small "
                                        f"to ask about (CLIP's processor needs at least 4 on each side)")
        pixels = process_images([image], processor, model_config)[0]
        return Prepared(item, pixels, image.size)
    except FileNotFoundError:
        return Prepared(item, error=f"image file not found: {path}")
    except Exception as e:  # unreadable / truncated / not an image
        return Prepared(item, error=f"cannot read image {path}: {type(e).__name__}: {e}")


def padded_batch(ids, tokenizer, device):
    """Prompts of one batch, padded on the left; one prompt goes as llava passes it."""
    import torch

    if len(ids) == 1:
        return ids[0].unsqueeze(0).to(device), None, {}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    n = max(x.numel() for x in ids)
    input_ids = torch.full((len(ids), n), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, n - x.numel():] = x
        attention_mask[i, n - x.numel():] = 1
    return input_ids.to(device), attention_mask.to(device), {"pad_token_id": pad}


def image_batch(prepared: Sequence[Prepared], model):
    import torch

    if prepared[0].item.image is None:
        return None, None
    tensors = [p.pixels for p in prepared]
    if all(t.shape == tensors[0].shape for t in tensors):
        images = torch.stack(tensors).to(device=model.device, dtype=model.dtype)
    else:  # anyres crops of different counts: llava takes a list
        images = [t.to(device=model.device, dtype=model.dtype) for t in tensors]
    return images, [p.size for p in prepared]


def generate_batch(model, tokenizer, prepared: Sequence[Prepared], args, gen_kwargs: Dict[str, Any]) -> List[str]:
    """One generate call for questions that all have an image or all have none."""
    import torch
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token

    start_end = bool(getattr(model.config, "mm_use_im_start_end", False))
    ids = [tokenizer_image_token(build_prompt(p.item.query, args.conv_mode, start_end, p.item.image is not None),
                                 tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt") for p in prepared]
    input_ids, attention_mask, pad_kwargs = padded_batch(ids, tokenizer, model.device)
    images, image_sizes = image_batch(prepared, model)
    if hasattr(model, "_eval_visual_tokens"):
        model._eval_visual_tokens = None  # set again by this call's merge, if it has images
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # llava passes temperature/top_p even when greedy; transformers warns on every call.
            warnings.filterwarnings("ignore", message=r"`do_sample` is set to `False`")
            output_ids = model.generate(input_ids, images=images, image_sizes=image_sizes,
                                        attention_mask=attention_mask, **gen_kwargs, **pad_kwargs)
    except ValueError as e:
        if CONTEXT_ERROR not in str(e) or len(prepared) != 1:
            raise
        raise PromptTooLong(prepared[0].item,
                            f"the prompt with its image does not fit the model's context: {e}") from None
    return [t.strip() for t in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]


def answer_group(model, tokenizer, prepared: Sequence[Prepared], args, gen_kwargs) -> List[Any]:
    """Per question: (text, metadata), or the PromptTooLong of a question that does not fit.
    A batch with a too-long prompt is answered again one question at a time."""
    try:
        texts = generate_batch(model, tokenizer, prepared, args, gen_kwargs)
        return list(zip(texts, metadata_for(model, args, len(prepared))))
    except PromptTooLong as e:
        return [e]
    except ValueError as e:
        if CONTEXT_ERROR not in str(e) or len(prepared) == 1:
            raise
    return [r for p in prepared for r in answer_group(model, tokenizer, [p], args, gen_kwargs)]


class BudgetNote:
    """Says once per run when a question keeps another number of visual tokens than --budget
    asked for, instead of swapping budgets without a word (LLaVA-NeXT: a whole-image budget
    is spread over the image's crops, rounded up per crop)."""

    def __init__(self, args, prog: str):
        from llava_star.methods import get

        fixed = args.method == "none" or args.budget is None or get(args.method).budgets is not None
        self.budget, self.prog, self.said = (None if fixed else args.budget), prog, False

    def check(self, model, prepared: Sequence[Prepared]) -> None:
        if self.said or self.budget is None:
            return
        for p, r in zip(prepared, getattr(model, "star_record", None) or []):
            if p.item.image is None:
                continue
            kept = int(r.final_kept.numel()) + sum(r.merged)  # grid cells + merged tokens; no newline rows
            if kept != self.budget:
                print(f"{self.prog}: note: --budget {self.budget} keeps {kept} visual tokens on question "
                      f"{p.item.qid!r} (on LLaVA-NeXT an image's budget is spread over its crops, rounded "
                      f"up per crop; the answers file records each question's count); said once", file=sys.stderr)
                self.said = True
                return
