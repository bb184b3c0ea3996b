"""llava-star on transformers' own LLaVA classes (llava-hf checkpoints, transformers 5.x).

    from transformers import AutoProcessor, LlavaForConditionalGeneration
    import llava_star.hf
    from llava_star import MethodConfig

    model = LlavaForConditionalGeneration.from_pretrained("llava-hf/llava-1.5-7b-hf")
    llava_star.hf.apply(model, MethodConfig.from_name("star", budget=58))
    out = model.generate(**processor(images=image, text=prompt, return_tensors="pt"), max_new_tokens=32)
    model.star_record[0].final_kept     # the same PruneRecord as the llava host

`LlavaNextForConditionalGeneration` (LLaVA-NeXT, anyres) works the same way. Needs no
llava-torch. See llava_star/hosts/hf/.
"""
from __future__ import annotations

import os
from typing import Optional

from .hosts.hf import StarCache, apply_star, max_visual_tokens, remove_star, resolve_plan

apply = apply_star
remove = remove_star

__all__ = ["apply", "remove", "apply_star", "remove_star", "resolve_plan", "max_visual_tokens", "StarCache",
           "load_pretrained"]


def load_pretrained(model_path: str, star=None, device: Optional[str] = None, dtype=None,
                    attn_implementation: Optional[str] = None, fixed_grid: Optional[int] = None, **kwargs):
    """(processor, model) of a llava-hf checkpoint directory, the class picked from its
    config.json (LlavaForConditionalGeneration or LlavaNextForConditionalGeneration), eval mode,
    with `star` (a MethodConfig / StarConfig / Plan) applied when given. `device`: "cuda" where
    CUDA is available, else "cpu"; fp32 on CPU, fp16 on CUDA unless `dtype` says otherwise.
    `fixed_grid=672`: LLaVA-NeXT only, one anyres grid for every image (as the llava host's
    loader). Other keyword arguments go to `from_pretrained` (device_map=..., for example)."""
    import torch
    import transformers
    from transformers import AutoProcessor

    from .hosts import HF_MODEL_TYPES, model_type_of

    path = os.path.expanduser(model_path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"--model-path {model_path}: no config.json (a llava-hf checkpoint directory)")
    model_type = model_type_of(path)
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(f"--model-path {model_path}: model_type {model_type!r} is not a llava-hf checkpoint "
                         f"({', '.join(HF_MODEL_TYPES)}); haotian-liu/LLaVA checkpoints load with --host llava")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here (use device='cpu')")
    if dtype is None:
        dtype = torch.float32 if str(device) == "cpu" else torch.float16
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    cls = getattr(transformers, HF_MODEL_TYPES[model_type])
    model = cls.from_pretrained(path, dtype=dtype, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(path)
    if fixed_grid is not None:
        fix_grid(model, processor, fixed_grid)
    if star is not None:
        apply_star(model, star)
    return processor, model


def fix_grid(model, processor, side: int) -> None:
    """One `side` x `side` anyres grid for every image (2x2 crops + base at 672 on 336 px
    crops): the model's pinpoints, which its packing reads, and the processor's, which cut the
    crops and count the placeholders."""
    from .hosts.hf import is_next

    crop = model.config.vision_config.image_size
    if not is_next(model):
        raise ValueError("--fixed-grid needs a LLaVA-NeXT (anyres) checkpoint")
    if side <= 0 or side % crop:
        raise ValueError(f"--fixed-grid must be a positive multiple of the crop size {crop}, got {side}")
    model.config.image_grid_pinpoints = [[side, side]]
    processor.image_processor.image_grid_pinpoints = [[side, side]]
