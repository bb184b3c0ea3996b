"""`load_pretrained_model`: llava's builder, fp32 on CPU, with a pruning plan attached."""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch



def load_pretrained_model(model_path: str, model_base: Optional[str] = None, model_name: Optional[str] = None,
                          star=None, device: Optional[str] = None,
                          dtype: Optional[torch.dtype] = None, attn_implementation: Optional[str] = None,
                          fixed_grid: Optional[int] = None, **kwargs):
    """llava's `load_pretrained_model`, same 4-tuple (tokenizer, model, image_processor, context_len).

    - `star`: a StarConfig / MethodConfig / Plan to prune with, or None for stock llava. Its
      layers are checked against the checkpoint's config before any weight loads.
    - `device`: "cuda" where CUDA is available, else "cpu" (the default picks); "cpu" loads fp32 (llava's builder forces fp16, slow and lossy on a CPU);
      `dtype` overrides. On CUDA the default stays llava's fp16.
    - `attn_implementation`: "sdpa" (transformers' default), "eager" or "flash_attention_2".
    - `fixed_grid=672`: LLaVA-NeXT only; every image uses one 672x672 anyres grid (2x2 crops
      plus the base image, 2880 patch tokens before llava's unpad), the setting the pruning
      papers compare under.
    """
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model as llava_load

    from llava_star.patches import builder_loads_in

    if not os.path.isdir(model_path) and not _looks_like_hub_id(model_path):
        raise FileNotFoundError(f"--model-path {model_path}: no such directory")
    model_name = model_name or get_model_name_from_path(model_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here (use device='cpu')")
    if star is not None:
        _check_layers_before_loading(model_path, star)
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.float16
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    with warnings.catch_warnings(), builder_loads_in(dtype):
        warnings.simplefilter("ignore", UserWarning)
        tokenizer, model, processor, context_len = llava_load(
            model_path, model_base, model_name, device=device, **kwargs)
    model.to(device=device, dtype=dtype)
    model.eval()
    if fixed_grid is not None:
        crop = model.get_vision_tower().config.image_size
        if getattr(model.config, "image_aspect_ratio", None) != "anyres":
            raise ValueError("--fixed-grid needs a LLaVA-NeXT (anyres) checkpoint")
        if fixed_grid <= 0 or fixed_grid % crop:
            raise ValueError(f"--fixed-grid must be a positive multiple of the crop size {crop}, got {fixed_grid}")
        model.config.image_grid_pinpoints = [[fixed_grid, fixed_grid]]
    if star is not None:
        from .hosts.llava import apply_star

        apply_star(model, star)
    return tokenizer, model, processor, context_len


def _looks_like_hub_id(path: str) -> bool:
    """'liuhaotian/llava-v1.5-7b' is a hub id; '/data/x', './x', '~/x' or 'a/b/c' are local paths."""
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~")) and os.path.sep == "/"


def _check_layers_before_loading(model_path: str, star) -> None:
    """Resolve the plan against the checkpoint's depth (config.json) so a layer outside the
    model is refused before minutes of weight loading; token counts are checked on attach."""
    import json

    from .engine.plan import Plan

    path = os.path.join(model_path, "config.json")
    if not os.path.isfile(path):
        return  # a hub id: checked when attached
    with open(path) as f:
        num_layers = json.load(f).get("num_hidden_layers")
    if not isinstance(num_layers, int):
        return
    plan = star if isinstance(star, Plan) else star.plan(num_layers)
    plan.validate(num_layers, 1 << 30)
