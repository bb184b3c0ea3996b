"""StarLlavaLlamaForCausalLM / StarLlavaMistralForCausalLM: llava's models driven by a Plan.

They subclass llava's classes, so llava's multimodal merge, `generate` and every attribute
stay as they are. One call's facts travel in one `PrefillContext`: the merge override opens
it (the vision tower fills it), hands it to the forward that runs the prefill, which
consumes it. The only state kept between calls is configuration (`star_plan`,
`star_pruner`, `star_hooks`) and the last call's `star_record`.
"""
from __future__ import annotations

import contextvars
from typing import List, Optional

import torch
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.language_model.llava_mistral import LlavaMistralForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from ...engine import context
from ...engine.context import PrefillContext
from ...engine.counts import ImageTokens, vision_keep
from ...engine.decoder import DecoderPruner
from ...engine.plan import Plan
from ...engine.prefill import prefill
from ...engine.record import PruneRecord
from ...engine.seams import Hooks
from .layers import LlamaLayers, StarCache
from .merge import crops_per_image, image_spans, is_multi_crop, merged_layout

# True inside our generate(): its forward calls need the last position's logits only
_GENERATING: contextvars.ContextVar[bool] = contextvars.ContextVar("llava_star_generating", default=False)


class StarMixin:
    """Everything the Star* classes add to llava's; see the module docstring."""

    star_plan: Plan
    star_pruner: DecoderPruner
    star_hooks: Hooks
    star_record: Optional[List[PruneRecord]] = None
    _star_call: Optional[PrefillContext] = None  # merge -> the forward that prefills; one call's only

    def prepare_inputs_labels_for_multimodal(self, input_ids, position_ids, attention_mask,
                                             past_key_values, labels, images, image_sizes=None):
        # llava calls this from both `forward` and `generate`
        self._star_call = None  # an earlier failed call's context never reaches this one
        multi = is_multi_crop(input_ids, images)
        ctx = PrefillContext(self.star_hooks)
        if multi:
            ctx.crops = crops_per_image(images)
            if self.star_plan.vision is not None:
                P = self.get_vision_tower().num_patches
                ctx.crop_keep = [vision_keep(self.star_plan.vision.keep, self.star_plan.unit, ImageTokens(n, P, n * P))
                                 for n in ctx.crops for _ in range(n)]
                ctx.crop_first = [j == 0 for n in ctx.crops for j in range(n)]
        with context.opened(ctx):
            out = super().prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        embeds = out[4]
        if embeds is not None:
            limit = getattr(self.config, "tokenizer_model_max_length", None)
            if limit is not None and embeds.shape[1] >= limit:
                raise ValueError(f"the prompt with its image reaches tokenizer_model_max_length ({limit}); "
                                 "llava truncates it there, cutting the image or the question")
            ctx.spans = image_spans(input_ids, attention_mask, out[2], embeds.shape[1])
            ctx.layouts = merged_layout(self, input_ids, attention_mask, images, image_sizes) if multi else None
            self._star_call = ctx
        return out

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, images=None, image_sizes=None, return_dict=None,
                last_logits_only: bool = False):
        """llava's forward; `last_logits_only` computes the last position's logits only (as
        generate does). Logits come back left-aligned over the pruned sequence: the last
        column is every sample's last real token."""
        if output_attentions or output_hidden_states:
            raise ValueError("llava_star models do not return attentions or hidden states "
                             "(pruning changes the sequence between layers)")
        if labels is not None:
            raise ValueError("llava_star is inference-only: `labels` (training loss) is not supported")
        if inputs_embeds is None:
            _, position_ids, attention_mask, past_key_values, inputs_embeds, _ = \
                self.prepare_inputs_labels_for_multimodal(input_ids, position_ids, attention_mask,
                                                          past_key_values, None, images, image_sizes)
            if inputs_embeds is None:
                inputs_embeds = self.get_model().embed_tokens(input_ids)
        ctx, self._star_call = self._star_call, None
        use_cache = self.config.use_cache if use_cache is None else use_cache
        layers = LlamaLayers(self.get_model())
        if past_key_values is not None and not isinstance(past_key_values, StarCache):
            raise TypeError("past_key_values must be the StarCache this model returned")
        if past_key_values is None or past_key_values.get_seq_length() == 0:
            cache = StarCache()
            hidden, self.star_record = prefill(self.star_pruner, layers, inputs_embeds, attention_mask, ctx,
                                               self.get_vision_tower().num_patches, cache, self.star_hooks)
            cache.seen_tokens = inputs_embeds.shape[1]  # the unpruned length generate's mask counts
        else:
            cache, q = past_key_values, inputs_embeds.shape[1]
            new_valid = (attention_mask[:, -q:].bool() if attention_mask is not None
                         else torch.ones(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device))
            # generate's own position ids count llava's merged sequence, which a deferred
            # multi-crop vision stage shortens: the loop continues from what each layer holds
            hidden = self.star_pruner.decode(layers, inputs_embeds, new_valid, cache, cache.seen_tokens + q)
        if last_logits_only or _GENERATING.get():
            hidden = hidden[:, -1:]
        logits = self.lm_head(hidden).float()
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache if use_cache else None)

    @torch.no_grad()
    def generate(self, inputs=None, images=None, image_sizes=None, **kwargs):
        token = _GENERATING.set(True)
        try:
            return super().generate(inputs, images=images, image_sizes=image_sizes, **kwargs)
        finally:
            _GENERATING.reset(token)
            self._star_call = None  # never outlives the call


class StarLlavaLlamaForCausalLM(StarMixin, LlavaLlamaForCausalLM):
    pass


class StarLlavaMistralForCausalLM(StarMixin, LlavaMistralForCausalLM):
    pass


STAR_CLASS = {LlavaLlamaForCausalLM: StarLlavaLlamaForCausalLM,
              LlavaMistralForCausalLM: StarLlavaMistralForCausalLM}


def max_visual_tokens(model, unit: str) -> int:
    """The most patch tokens a count can refer to: one crop's patches for LLaVA-1.5 and for
    per-crop budgets; for whole-image budgets on anyres (NeXT) checkpoints, the base image plus
    the crops of the largest grid llava may pick (before its unpad). Counts above what one
    image really has are cut to it at run time."""
    tower = model.get_vision_tower()
    P = tower.num_patches
    if unit == "crop" or getattr(model.config, "image_aspect_ratio", None) != "anyres":
        return P
    side = tower.config.image_size
    pinpoints = getattr(model.config, "image_grid_pinpoints", None) or []
    if isinstance(pinpoints, str):  # llava also accepts a string such as "[(336, 672), ...]"
        import ast

        pinpoints = ast.literal_eval(pinpoints)
    grid = max(((w // side) * (h // side) for w, h in pinpoints), default=0)
    return P * (1 + grid)
