"""The model side of a runner on the hf host (transformers 5's own LLaVA classes, llava-hf
checkpoints, no llava-torch): the counterpart of `generation` for `--host hf`, with the same
functions the run loop calls (check_args, load_model, prepare_item, answer_group).

The checkpoint's processor builds each prompt (its chat template, or llava-hf 1.5's
"USER: <image>\\n{q} ASSISTANT:" where it has none), expands the image placeholders and pads a
batch on the left; the answer is the decoded new tokens. Images open as on the llava host
(`generation.open_image`), the answers file and its metadata are the same.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Sequence

from llava_star.hosts import model_type_of
from llava_star.prompting import hf_prompt

from .command_line import check_counts, device_for, method_config, require_environment
from .generation import Prepared, metadata_for, open_image
from .inputs import InputError
from .questions import Item

def check_args(args) -> None:
    """The hf host's checks, made before the model loads; llava-only flags are refused."""
    require_environment("hf")
    check_counts(args)
    if args.model_base is not None:
        raise InputError("--model-base is llava's (LoRA / projector-only checkpoints); a llava-hf checkpoint "
                         "is complete: drop --model-base with --host hf")
    check_conv_mode(args)
    if args.fixed_grid is not None and model_type_of(args.model_path) != "llava_next":
        raise InputError(f"--fixed-grid needs a LLaVA-NeXT (anyres) checkpoint; --model-path {args.model_path} "
                         "is not one (config.json model_type llava_next)")
    args.device = device_for(args.device)
    args.method_config = method_config(args)


def check_conv_mode(args) -> None:
    """The checkpoint's chat template builds the prompt, so a template chosen with --conv-mode
    cannot be honoured: refused. The runner's default and the one the eval scripts pass for the
    model's family (llava_star.prompting.conv_mode_for) are what a user did not choose: accepted,
    and recorded as no template (None) in the settings."""
    from llava_star.prompting import conv_mode_for

    if args.conv_mode not in (args.default_conv_mode, conv_mode_for(args.model_path)):
        raise InputError(f"--conv-mode {args.conv_mode}: on the hf host the checkpoint's chat template builds "
                         f"the prompt; drop --conv-mode (or use a haotian-liu/LLaVA checkpoint, --host llava)")
    args.conv_mode = None


def load_model(args, model_name: str):
    """(processor, model, processor): the run loop's (tokenizer, model, processor)."""
    import llava_star.hf
    from llava_star.methods import MethodConfig

    # --method none runs the engine's `none` plan (every visual token, the stock model's answers,
    # see tests_hf/test_hf_host.py), so star_record counts the unpruned tokens exactly as a
    # pruned run's record does, rather than re-deriving them from placeholders here.
    cfg = args.method_config or MethodConfig.from_name("none")
    try:
        processor, model = llava_star.hf.load_pretrained(args.model_path, star=cfg, device=args.device,
                                                         attn_implementation=args.attn_implementation,
                                                         fixed_grid=args.fixed_grid)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise InputError(str(e)) from None
    except OSError as e:  # not a checkpoint directory, hub id unreachable, ...
        raise InputError(f"cannot load the model (--model-path {args.model_path}): {e}") from None
    processor.tokenizer.padding_side = "left"  # generation continues every prompt at the same column
    return processor, model, processor


def prepare_item(item: Item, folder: str, processor, model_config) -> Prepared:
    """Open one image as the llava host does (the processor resizes it with the batch's
    prompts); errors name the file."""
    if item.image is None:
        return Prepared(item)
    path = os.path.join(folder, item.image)
    try:
        image = open_image(path, item.convert_rgb)
        image.load()  # read in the prefetch thread, not at generate time
        if min(image.size) < 4:
            return Prepared(item, error=f"image {path} is {image.size[0]}x{image.size[1]} pixels: too small "
                                        f"to ask about (CLIP's processor needs at least 4 on each side)")
        return Prepared(item, image, image.size)
    except FileNotFoundError:
        return Prepared(item, error=f"image file not found: {path}")
    except Exception as e:  # unreadable / truncated / not an image
        return Prepared(item, error=f"cannot read image {path}: {type(e).__name__}: {e}")


def generate_batch(model, processor, prepared: Sequence[Prepared], args, gen_kwargs: Dict[str, Any]) -> List[str]:
    """One generate call for questions that all have an image or all have none."""
    import torch

    texts = [hf_prompt(processor, p.item.query, p.item.image is not None) for p in prepared]
    images = [p.pixels for p in prepared] if prepared[0].item.image is not None else None
    batch = processor(images=images, text=texts, return_tensors="pt", padding=True).to(model.device)
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    pad = processor.tokenizer.pad_token_id
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`do_sample` is set to `False`")
        output_ids = model.generate(**batch, **gen_kwargs,
                                    pad_token_id=pad if pad is not None else processor.tokenizer.eos_token_id)
    new = output_ids[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]


def answer_group(model, processor, prepared: Sequence[Prepared], args, gen_kwargs) -> List[Any]:
    """Per question: (text, metadata from the model's star_record)."""
    texts = generate_batch(model, processor, prepared, args, gen_kwargs)
    return list(zip(texts, metadata_for(model, args, len(prepared))))
