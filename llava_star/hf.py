"""llava-star on transformers' own LLaVA classes (llava-hf checkpoints, transformers 5.x).

    from transformers import AutoProcessor, LlavaForConditionalGeneration
    import llava_star.hf
    from llava_star import MethodConfig

    model = LlavaForConditionalGeneration.from_pretrained("llava-hf/llava-1.5-7b-hf")
    llava_star.hf.apply(model, MethodConfig.from_name("star", budget=58))
    out = model.generate(**processor(images=image, text=prompt, return_tensors="pt"), max_new_tokens=32)
    model.star_record[0].final_kept     # the same PruneRecord as the llava host

Needs no llava-torch. See llava_star/hosts/hf/.
"""
from .hosts.hf import StarCache, apply_star, max_visual_tokens, remove_star, resolve_plan

apply = apply_star
remove = remove_star

__all__ = ["apply", "remove", "apply_star", "remove_star", "resolve_plan", "max_visual_tokens", "StarCache"]
