"""llava-star: STAR (Stage-wise Attention-guided token Reduction) and its peers for LLaVA.

    from llava_star import load_pretrained_model, MethodConfig
    tokenizer, model, processor, _ = load_pretrained_model(path, star=MethodConfig.from_name("star", budget=58))
    model.generate(input_ids, images=..., max_new_tokens=...)
    model.star_record  # what was kept, per sample

Names are imported on first use, so `python -m llava_star.<tool> --help` never loads torch.
"""
import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "load_pretrained_model": "llava_star.loader",
    "apply_star": "llava_star.hosts.llava",
    "remove_star": "llava_star.hosts.llava",
    "StarConfig": "llava_star.methods",
    "MethodConfig": "llava_star.methods",
    "Plan": "llava_star.engine.plan",
    "VisionStage": "llava_star.engine.plan",
    "DecoderStage": "llava_star.engine.plan",
    "PruneRecord": "llava_star.engine.record",
    "hooks": "llava_star.engine.seams",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'llava_star' has no attribute {name!r}")
