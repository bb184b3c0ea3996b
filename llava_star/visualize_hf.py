"""`llava_star.visualize` on the hf host: transformers' own LlavaForConditionalGeneration and
LlavaNextForConditionalGeneration (llava-hf LLaVA-1.5 and LLaVA-NeXT checkpoints, transformers
5, no llava-torch). The figure code is the llava host's (`visualize.figure`, and for NeXT
`visualize.anyres_canvas`: the base image beside the grid crops tiled back); what differs is
how the model is prompted and run (the processor's chat template and `generate`) and how the
picture the model saw is recovered (the processor's pixels, de-normalised; for NeXT the
cells transformers' unpad keeps, from `hosts.hf.model.next_layouts`).

    from llava_star.hf import load_pretrained
    from llava_star.visualize_hf import render
    processor, model = load_pretrained(path, star=MethodConfig.from_name("star", budget=58))
    render(model, processor, image, "What is shown?").savefig("fig.png")
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .prompting import hf_prompt
from .visualize import Canvas, Run, Tile, anyres_canvas, denormalised, each_method, figure, run_of


def inputs(model, processor, image, question):
    batch = processor(images=image.convert("RGB"), text=hf_prompt(processor, question), return_tensors="pt")
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    return batch.to(model.device)


def model_view(image, processor) -> np.ndarray:
    """The image as the model saw it, [S, S, 3] uint8: the processor's pixel values (padded to
    a square with its mean colour, resized, cropped) with the normalisation undone."""
    pixels = processor.image_processor(images=image.convert("RGB"), return_tensors="np")["pixel_values"][0]
    return denormalised(pixels, processor.image_processor)


def crop_views(image, processor, config):
    """LLaVA-NeXT: (every crop as the model saw it, base image first, then the grid crops in
    the processor's row-major order; the image's (h, w)), from the processor's pixel values
    (padded to the most crops of any pinpoint: only the image's own are returned)."""
    from .hosts.hf.model import crops_per_image

    out = processor.image_processor(images=image.convert("RGB"), return_tensors="np")
    size = [int(x) for x in out["image_sizes"][0]]
    (n,) = crops_per_image(config, [size])
    return [denormalised(c, processor.image_processor) for c in out["pixel_values"][0][:n]], size


def canvas_for(model, processor, image) -> Canvas:
    """The Canvas of `image` for `model`. LLaVA-NeXT: the base image, then the grid crops
    tiled back (transformers' grid shape of the image), and the cells transformers'
    `pack_image_features` keeps after unpad (`next_layouts`)."""
    vc = model.config.vision_config
    side = vc.image_size // vc.patch_size
    layer = int(model.config.vision_feature_layer)
    from .hosts.hf import is_next

    if not is_next(model):  # LLaVA-1.5: one crop
        cells = np.arange(side * side).reshape(side, side)
        view = model_view(image, processor)
        return Canvas([Tile(view, cells, (0, view.shape[1], view.shape[0], 0))], np.arange(side * side),
                      side * side, layer, f"{view.shape[1]}x{view.shape[0]}, {side}x{side} patches")
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    from .hosts.hf.model import next_layouts

    views, size = crop_views(image, processor, model.config)
    rows, cols = get_anyres_image_grid_shape(size, model.config.image_grid_pinpoints, vc.image_size)
    (layout,) = next_layouts(model.model, [len(views)], [size], side * side)
    layout = layout.numpy()
    return anyres_canvas(views, rows, cols, side, layout[layout >= 0], layer)


def run_once(model, processor, image, question, max_new_tokens: int = 16, label: Optional[str] = None) -> Run:
    """Generate one answer with the model's current plan; the record is `model.star_record`
    (written by the prefill; decode steps leave it)."""
    import torch

    if not hasattr(model, "star_plan"):
        raise TypeError("render needs a llava_star model: llava_star.hf.load_pretrained(..., star=MethodConfig"
                        ".from_name(...)) or llava_star.hf.apply(model, cfg)")
    batch = inputs(model, processor, image, question)
    with torch.inference_mode():
        out = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
    rec = model.star_record[0] if model.star_record else None
    if rec is None or rec.image_span is None:
        raise RuntimeError("the model recorded no image span for this prompt (no image placeholders reached it)")
    answer = processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
    return run_of(model, rec, answer, label)


def render(model, processor, image, question, max_new_tokens: int = 16, *, note: Optional[str] = None,
           label: Optional[str] = None):
    """The Figure of `model`'s method on `image` (see `visualize.render`)."""
    run = run_once(model, processor, image, question, max_new_tokens, label)
    return figure(canvas_for(model, processor, image), [run], question, note)


def compare(model, processor, image, question, methods, max_new_tokens: int = 16, *, note: Optional[str] = None):
    """One row per MethodConfig in `methods`, applied in turn; the model's own plan (or the
    stock class) is restored after."""
    from .hf import apply, remove

    runs = each_method(model, methods, apply, remove,
                       lambda label: run_once(model, processor, image, question, max_new_tokens, label))
    return figure(canvas_for(model, processor, image), runs, question, note)
