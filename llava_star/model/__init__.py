"""Model glue: llava subclasses and the decoder loop."""
from .llava import StarLlavaLlamaForCausalLM, StarLlavaMistralForCausalLM, apply_star
from .vision import StarCLIPVisionTower

__all__ = ["StarLlavaLlamaForCausalLM", "StarLlavaMistralForCausalLM", "StarCLIPVisionTower", "apply_star"]
