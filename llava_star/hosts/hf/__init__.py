"""The transformers-native host: transformers' own `LlavaForConditionalGeneration` (LLaVA-1.5)
and `LlavaNextForConditionalGeneration` (LLaVA-NeXT, anyres) on transformers 5.x, llava-hf
checkpoints, without llava-torch.

    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from llava_star import MethodConfig
    from llava_star.hf import apply

    model = apply(LlavaForConditionalGeneration.from_pretrained(path), MethodConfig.from_name("star", budget=58))
    out = model.generate(**processor(images=image, text=prompt, return_tensors="pt"), max_new_tokens=32)
    model.star_record[0].final_kept

Everything transformers-5-specific sits here: the forward that drops the placeholders of
removed patches (`model.py`), and the decoder-layer call and cache (`layers.py`). The engine
(`llava_star.engine`) is the same one the llava host drives.
"""
from __future__ import annotations

import types
from typing import Union

from ...engine.decoder import DecoderPruner
from ...engine.plan import Plan
from ...engine.seams import Hooks
from .layers import SUPPORTED_ATTENTION, StarCache
from .model import (STAR_CLASS, StarLlavaForConditionalGeneration, StarLlavaNextForConditionalGeneration,
                    num_patches)

__all__ = ["apply_star", "remove_star", "resolve_plan", "max_visual_tokens", "StarCache",
           "StarLlavaForConditionalGeneration", "StarLlavaNextForConditionalGeneration"]

_ATTRS = ("star_plan", "star_pruner", "star_hooks", "star_record")


def is_next(model) -> bool:
    """A LlavaNext model (anyres): its config lists the grid pinpoints; LLaVA-1.5's has none."""
    return hasattr(model.config, "image_grid_pinpoints")


def max_visual_tokens(model, unit: str = "image") -> int:
    """The most patch tokens a count can refer to: one crop's CLIP grid (576 at 336 px, patch
    14) for LLaVA-1.5 and per-crop budgets; for whole-image budgets on NeXT, the base image plus
    the crops of the largest grid (before unpad), as on the llava host."""
    P = num_patches(model)
    if unit == "crop" or not is_next(model):
        return P
    side = model.config.vision_config.image_size
    grid = max(((h // side) * (w // side) for h, w in model.config.image_grid_pinpoints), default=0)
    return P * (1 + grid)


def _check_model(model) -> type:
    base = next((c for c in STAR_CLASS if type(model) is c), None)
    if base is None:
        raise TypeError("apply_star needs a transformers LlavaForConditionalGeneration or "
                        f"LlavaNextForConditionalGeneration, got {type(model).__name__}")
    cfg = model.config
    if not isinstance(cfg.vision_feature_layer, int):
        raise ValueError(f"vision_feature_layer {cfg.vision_feature_layer!r}: the vision stage scores one CLIP "
                         "layer, so it needs a single int layer (LLaVA-1.5 uses -2)")
    if cfg.vision_feature_select_strategy != "default":
        raise ValueError(f"vision_feature_select_strategy {cfg.vision_feature_select_strategy!r}: the hf host "
                         "supports 'default' (patch tokens only, as LLaVA-1.5 and NeXT)")
    if type(model.model.vision_tower).__name__ != "CLIPVisionModel":
        raise ValueError(f"the vision stage runs on a CLIP tower, got {type(model.model.vision_tower).__name__}")
    impl = cfg.text_config._attn_implementation
    if impl not in SUPPORTED_ATTENTION:
        raise ValueError(f"attn_implementation {impl!r} is not supported; use one of {', '.join(SUPPORTED_ATTENTION)}")
    if getattr(cfg.text_config, "sliding_window", None):
        raise ValueError("sliding-window attention is not supported (the masks come from positions, "
                         "without a window); set text_config.sliding_window=None")
    return base


def resolve_plan(model, config) -> Plan:
    """A StarConfig / MethodConfig / Plan as the validated Plan for `model`."""
    from ...methods import plan_for

    num_layers = model.config.text_config.num_hidden_layers
    plan = plan_for(config, num_layers, lambda unit: max_visual_tokens(model, unit))
    if plan.single_crop_only and is_next(model):
        raise ValueError(f"{plan.name} needs one crop per image (LLaVA-1.5 layouts); this is a "
                         "LlavaNextForConditionalGeneration (anyres) model")
    return plan.validate(num_layers, max_visual_tokens(model, plan.unit))


def _rebind_hooked_forward(model, cls) -> None:
    """accelerate's dispatch (device_map) wraps `forward` in an instance attribute that calls
    the forward of the class the model had when it was hooked; point it at `cls`'s."""
    if "_old_forward" in model.__dict__:
        model._old_forward = types.MethodType(cls.forward, model)
        wrapper = model.__dict__.get("forward")
        if hasattr(wrapper, "__wrapped__"):  # generate reads the forward's signature through it
            wrapper.__wrapped__ = model._old_forward


def apply_star(model, config: Union["StarConfig", "MethodConfig", Plan]):  # noqa: F821
    """Convert a loaded `LlavaForConditionalGeneration` / `LlavaNextForConditionalGeneration` in place so it prunes by `config`;
    returns the model. Applying again replaces the plan; `remove_star` gives the stock model back."""
    hooks = getattr(model, "star_hooks", None)
    if type(model) in STAR_CLASS.values():
        remove_star(model)
    base = _check_model(model)
    plan = resolve_plan(model, config)
    model.__class__ = STAR_CLASS[base]
    _rebind_hooked_forward(model, STAR_CLASS[base])
    model.star_plan = plan
    model.star_pruner = DecoderPruner(plan)
    model.star_hooks = hooks or Hooks()
    model.star_record = None
    return model


def remove_star(model):
    """Undo `apply_star`: the stock class and none of our attributes."""
    stock = next((base for base, star in STAR_CLASS.items() if type(model) is star), None)
    if stock is None:
        raise TypeError(f"remove_star needs a model converted by apply_star, got {type(model).__name__}")
    model.__class__ = stock
    _rebind_hooked_forward(model, stock)
    for name in _ATTRS:
        model.__dict__.pop(name, None)
    return model
