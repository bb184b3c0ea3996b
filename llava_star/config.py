"""The public configuration names in one place: plans (`llava_star.engine.plan`) and methods
(`llava_star.methods`)."""
from .engine.counts import Count, check_count, ratio_of
from .engine.plan import DECODER_SCORES, VISION_SCORES, DecoderStage, Plan, VisionStage
from .methods import METHODS, REFERENCE_LAYERS, SPARSEVLM_SCHEDULES, MethodConfig, StarConfig, scale_layer

__all__ = ["Count", "check_count", "ratio_of", "DECODER_SCORES", "VISION_SCORES", "DecoderStage", "Plan",
           "VisionStage", "METHODS", "REFERENCE_LAYERS", "SPARSEVLM_SCHEDULES", "MethodConfig", "StarConfig",
           "scale_layer"]
