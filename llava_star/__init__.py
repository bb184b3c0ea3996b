"""llava-star: STAR (Stage-wise Attention-guided token Reduction) and its peers for LLaVA.

    from llava_star import load_pretrained_model, StarConfig
    tokenizer, model, processor, _ = load_pretrained_model(path, None, None, star=StarConfig(keep=58))
    model.generate(input_ids, images=..., max_new_tokens=...)
    model.star_record  # what was kept, per sample
"""
from .config import DecoderStage, MethodConfig, Plan, StarConfig, VisionStage
from .loader import load_pretrained_model
from .model import apply_star
from .record import PruneRecord

__all__ = ["load_pretrained_model", "apply_star", "StarConfig", "MethodConfig", "Plan",
           "VisionStage", "DecoderStage", "PruneRecord"]
__version__ = "0.1.0"
