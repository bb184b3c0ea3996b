"""StarLlavaLlamaForCausalLM / StarLlavaMistralForCausalLM: llava's models driven by a Plan.

They subclass llava's classes, so llava's multimodal merge, `generate` and every attribute
stay as they are; `apply_star` converts a loaded model in place (the way peft attaches to
a model it does not own, minus the wrapper). The model records where each image landed in
the merged sequence, then runs the decoder through `DecoderPruner`.
"""
from __future__ import annotations

from typing import List, Optional, Union

import torch
from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.language_model.llava_mistral import LlavaMistralForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..config import MethodConfig, Plan, StarConfig
from ..record import PruneRecord
from .decoder import DecoderPruner, StarCache, VisualTokens
from .vision import StarCLIPVisionTower


class StarMixin:
    """Everything the Star* classes add to llava's; see the module docstring."""

    star_plan: Plan
    star_pruner: DecoderPruner
    star_record: Optional[List[PruneRecord]] = None
    _star_spans = None
    _star_last_logits_only = False

    # llava calls this from both `forward` and `generate`; we only note the image spans.
    def prepare_inputs_labels_for_multimodal(self, input_ids, position_ids, attention_mask,
                                             past_key_values, labels, images, image_sizes=None):
        out = super().prepare_inputs_labels_for_multimodal(
            input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        embeds = out[4]
        if embeds is not None:
            self._star_spans = image_spans(input_ids, attention_mask, out[2], embeds.shape[1])
        return out

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, images=None, image_sizes=None, return_dict=None):
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
        use_cache = self.config.use_cache if use_cache is None else use_cache
        lm = self.get_model()
        prefill = past_key_values is None or past_key_values.get_seq_length() == 0
        if past_key_values is not None and not isinstance(past_key_values, StarCache):
            raise TypeError("past_key_values must be the StarCache this model returned")

        if prefill:
            hidden, cache = self._star_prefill(lm, inputs_embeds, attention_mask)
        else:
            cache = past_key_values
            q = inputs_embeds.shape[1]
            new_valid = (attention_mask[:, -q:].bool() if attention_mask is not None
                         else torch.ones(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device))
            if position_ids is None:
                last = torch.stack([(p * v).max() for p, v in zip(cache.key_positions[0], cache.key_valid[0])])
                position_ids = last[:, None] + 1 + torch.arange(q, device=last.device)
            hidden = self.star_pruner.decode(lm, inputs_embeds, position_ids, new_valid, cache)
        if self._star_last_logits_only:
            hidden = hidden[:, -1:]
        logits = self.lm_head(hidden).float()
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache if use_cache else None)

    def _star_prefill(self, lm, embeds, attention_mask):
        valid_in = (attention_mask.bool() if attention_mask is not None
                    else torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device))
        lists = [torch.nonzero(v).squeeze(1) for v in valid_in]
        from ..pruning.select import gather_tokens, pack_rows
        index, valid = pack_rows(lists)
        embeds = gather_tokens(embeds, index)
        spans, self._star_spans = self._star_spans, None
        if spans is None or len(spans) != embeds.shape[0]:
            spans = [None] * embeds.shape[0]
        tower = self.get_vision_tower()
        kept1 = tower.last_kept if isinstance(tower, StarCLIPVisionTower) else None
        num_patches = tower.num_patches
        visual, grids, img = None, [], 0
        shift = [index.shape[1] - l.numel() for l in lists]
        pos_list = []
        for b, span in enumerate(spans):
            if span is None:
                pos_list.append(torch.zeros(0, dtype=torch.long, device=embeds.device))
                grids.append(torch.zeros(0, dtype=torch.long, device=embeds.device))
                continue
            start, length = span
            pos_list.append(torch.arange(start, start + length, device=embeds.device) + shift[b])
            if kept1 is not None and kept1.shape[1] == length:
                grids.append(kept1[b].to(embeds.device))
            else:
                grids.append(torch.arange(length, device=embeds.device))
        if any(s is not None for s in spans):
            visual = VisualTokens(pos_list, grids)
        cache = StarCache()
        hidden, _, counts, scores, kept = self.star_pruner.prefill(lm, embeds, valid, visual, cache)
        self.star_record = [
            PruneRecord(
                num_patches=num_patches if spans[b] is not None else 0,
                stage1_kept=grids[b].cpu(),
                stage2_kept=(kept[-1][b] if kept else grids[b]).cpu(),
                tokens_per_layer=counts[b],
                image_span=spans[b],
                stage1_scores=None if tower.last_scores is None or spans[b] is None
                else tower.last_scores[b].cpu(),
                stage2_scores=[s[b].cpu() for s in scores],
                decoder_kept=[k[b].cpu() for k in kept],
            )
            for b in range(embeds.shape[0])
        ]
        return hidden, cache

    @torch.no_grad()
    def generate(self, inputs=None, images=None, image_sizes=None, **kwargs):
        if kwargs.get("num_beams", 1) > 1 and self.star_plan.decoder:
            raise ValueError("num_beams > 1 is not supported with decoder pruning")
        self._star_last_logits_only = True
        try:
            return super().generate(inputs, images=images, image_sizes=image_sizes, **kwargs)
        finally:
            self._star_last_logits_only = False


class StarLlavaLlamaForCausalLM(StarMixin, LlavaLlamaForCausalLM):
    pass


class StarLlavaMistralForCausalLM(StarMixin, LlavaMistralForCausalLM):
    pass


_STAR_CLASS = {LlavaLlamaForCausalLM: StarLlavaLlamaForCausalLM,
               LlavaMistralForCausalLM: StarLlavaMistralForCausalLM}


def image_spans(input_ids, attention_mask_in, attention_mask_out, merged_len):
    """Where each sample's image landed in llava's merged sequence, as (start, length) counted
    over that sample's real tokens (so padding side does not matter). None for a sample
    without an image. Derived from where IMAGE_TOKEN_INDEX sat and how many real tokens the
    merged sample has, so no image length is hard-coded."""
    spans = []
    for b, ids in enumerate(input_ids):
        if attention_mask_in is not None:
            ids = ids[attention_mask_in[b].bool()]
        where = torch.nonzero(ids == IMAGE_TOKEN_INDEX).squeeze(1)
        if where.numel() == 0:
            spans.append(None)
            continue
        if where.numel() > 1:
            raise ValueError("llava_star prunes one image per sample; this sample has "
                             f"{where.numel()} image tokens")
        n_real = int(attention_mask_out[b].sum()) if attention_mask_out is not None else merged_len
        n_text = ids.numel() - 1
        length = n_real - n_text
        if length <= 0:
            raise ValueError("the merged sequence was truncated into the image "
                             "(tokenizer_model_max_length); shorten the prompt")
        spans.append((int(where[0]), length))
    return spans


def resolve_plan(model, config) -> Plan:
    num_layers = model.config.num_hidden_layers
    if isinstance(config, Plan):
        plan = config
    elif isinstance(config, (StarConfig, MethodConfig)):
        plan = config.plan(num_layers)
    else:
        raise TypeError(f"expected StarConfig, MethodConfig or Plan, got {type(config).__name__}")
    return plan.validate(num_layers, model.get_vision_tower().num_patches)


def apply_star(model, config: Union[StarConfig, MethodConfig, Plan]):
    """Convert a loaded llava model in place so it prunes by `config`; returns the model."""
    from llava_star.patches import rotary_table_covers_positions

    base = next((c for c in _STAR_CLASS if isinstance(model, c)), None)
    if base is None:
        raise TypeError(f"apply_star needs a llava LLaMA or Mistral model, got {type(model).__name__}")
    tower = model.get_vision_tower()
    if tower is None or not tower.is_loaded:
        raise ValueError("apply_star needs the vision tower loaded (use load_pretrained_model)")
    if getattr(model.config, "mm_patch_merge_type", "flat") != "flat":
        raise NotImplementedError("LLaVA-NeXT (anyres / spatial merge) is not supported yet")
    plan = resolve_plan(model, config)
    rotary_table_covers_positions()
    tower.__class__ = StarCLIPVisionTower
    tower.star_stage = plan.vision
    tower.star_seed = plan.seed
    model.__class__ = _STAR_CLASS[base]
    model.star_plan = plan
    model.star_pruner = DecoderPruner(plan, tower.num_patches)
    model.star_record = None
    return model
