"""llava-star: STAR (Stage-wise Attention-guided token Reduction) and its peers for LLaVA.

    from llava_star import load_pretrained_model, StarConfig
    tokenizer, model, processor, _ = load_pretrained_model(path, None, None, star=StarConfig(keep=58))
    model.generate(input_ids, images=..., max_new_tokens=...)
    model.star_record  # what was kept, per sample
"""
from .config import DecoderStage, MethodConfig, Plan, StarConfig, VisionStage

__all__ = ["load_pretrained_model", "apply_star", "StarConfig", "MethodConfig", "Plan",
           "VisionStage", "DecoderStage", "PruneRecord"]
__version__ = "0.1.0"

# Loaded on first use, so that a tool's `--help` (and `python -m llava_star.<tool>`) does not
# import torch and llava.
_LAZY = {"load_pretrained_model": ".loader", "apply_star": ".model", "PruneRecord": ".record"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
