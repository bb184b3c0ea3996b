"""The llava host: llava-torch 1.2.2 (haotian-liu/LLaVA) on transformers 4.37.

Everything llava-specific sits here: the merge override and llava's model and tower
classes (`model.py`, `tower.py`), where llava's merge put each image (`merge.py`), and the
4.37 decoder-layer call and cache (`layers.py`). The engine (`llava_star.engine`) knows none
of it.
"""
from __future__ import annotations

from typing import Union

from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

from ...engine.decoder import DecoderPruner
from ...engine.plan import Plan
from ...engine.seams import Hooks
from .merge import image_spans, merged_layout
from .model import STAR_CLASS, StarMixin, max_visual_tokens
from .tower import StarCLIPVisionTower

__all__ = ["apply_star", "remove_star", "resolve_plan", "max_visual_tokens", "image_spans", "merged_layout",
           "StarCLIPVisionTower", "StarMixin"]


def resolve_plan(model, config) -> Plan:
    """A StarConfig / MethodConfig / Plan as the validated Plan for `model`."""
    from ...methods import plan_for

    num_layers = model.config.num_hidden_layers
    plan = plan_for(config, num_layers, lambda unit: max_visual_tokens(model, unit))
    if plan.single_crop_only and getattr(model.config, "image_aspect_ratio", None) == "anyres":
        raise ValueError(f"{plan.name} needs one crop per image (LLaVA-1.5 layouts); this is an anyres "
                         "(LLaVA-NeXT) checkpoint")
    return plan.validate(num_layers, max_visual_tokens(model, plan.unit))


def apply_star(model, config: Union["StarConfig", "MethodConfig", Plan]):  # noqa: F821
    """Convert a loaded llava model in place so it prunes by `config`; returns the model.
    Applying again replaces the plan; `remove_star` gives the stock model back."""
    from llava_star.patches import rotary_table_covers_positions

    base = next((c for c in STAR_CLASS if isinstance(model, c)), None)
    if base is None:
        raise TypeError(f"apply_star needs a llava LLaMA or Mistral model, got {type(model).__name__}")
    tower = model.get_vision_tower()
    if tower is None or not tower.is_loaded:
        raise ValueError("apply_star needs the vision tower loaded (use load_pretrained_model)")
    plan = resolve_plan(model, config)
    rotary_table_covers_positions()
    tower.__class__ = StarCLIPVisionTower
    tower.star_plan = plan
    model.__class__ = STAR_CLASS[base]
    model.star_plan = plan
    model.star_pruner = DecoderPruner(plan)
    model.star_hooks = getattr(model, "star_hooks", None) or Hooks()
    model.star_record = None
    return model


def remove_star(model):
    """Undo `apply_star`: the stock llava classes and none of our attributes. (The rotary
    patch stays: it returns the same rows for every position a stock model uses.)"""
    stock = next((base for base, star in STAR_CLASS.items() if type(model) is star), None)
    if stock is None:
        raise TypeError(f"remove_star needs a model converted by apply_star, got {type(model).__name__}")
    tower = model.get_vision_tower()
    model.__class__ = stock
    tower.__class__ = CLIPVisionTower
    for obj, names in ((model, ("star_plan", "star_pruner", "star_hooks", "star_record", "_star_call")),
                       (tower, ("star_plan",))):
        for name in names:
            obj.__dict__.pop(name, None)
    return model
