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
from llava.model.llava_arch import LlavaMetaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..config import MethodConfig, Plan, StarConfig, count_of
from ..pruning.select import gather_tokens, pack_rows
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

    # llava calls this from both `forward` and `generate`; we note where the images landed
    # and, for multi-crop (anyres) images, which crop/patch each merged row came from.
    def prepare_inputs_labels_for_multimodal(self, input_ids, position_ids, attention_mask,
                                             past_key_values, labels, images, image_sizes=None):
        multi_crop = images is not None and input_ids.shape[1] != 1 and (
            isinstance(images, list) or images.ndim == 5)
        tower = self.get_vision_tower()
        if multi_crop and isinstance(tower, StarCLIPVisionTower):
            tower.star_crop_keep = self._crop_keep_counts(images, image_sizes)
            tower.star_crop_first = [j == 0 for img in images
                                     for j in range(int(img.shape[0]) if img.ndim == 4 else 1)]
        try:
            out = super().prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        finally:
            if isinstance(tower, StarCLIPVisionTower):
                tower.star_crop_keep = tower.star_crop_first = None
        embeds = out[4]
        # forget a previous call's notes (a generate() that failed after the merge, say), so a
        # text-only call never reads a stale image span
        self._star_spans = self._star_layout = self._star_crops = None
        if embeds is not None:
            limit = getattr(self.config, "tokenizer_model_max_length", None)
            if limit is not None and embeds.shape[1] >= limit:
                raise ValueError(f"the prompt with its image reaches tokenizer_model_max_length ({limit}); "
                                 "llava truncates it there, cutting the image or the question")
            self._star_spans = image_spans(input_ids, attention_mask, out[2], embeds.shape[1])
            self._star_layout = (self._merged_layout(input_ids, attention_mask, images, image_sizes)
                                 if multi_crop else None)
            self._star_crops = ([int(x.shape[0]) if x.ndim == 4 else 1 for x in images]
                                if multi_crop else None)
        return out

    def _crop_keep_counts(self, images, image_sizes):
        """Vision-stage keep count for every crop llava will encode, in concat order."""
        stage = self.star_plan.vision
        if stage is None:
            return None
        counts = []
        for img in images:
            n = int(img.shape[0]) if img.ndim == 4 else 1
            if self.star_plan.unit == "crop" or isinstance(stage.keep, float):
                k = count_of(stage.keep, self.get_vision_tower().num_patches)
            else:  # an int budget for the whole image, spread evenly over its crops
                k = -(-stage.keep // n)
            counts.extend([k] * n)
        return counts

    def _merged_layout(self, input_ids, attention_mask, images, image_sizes):
        """Run llava's own merge once more on marker features to learn, for every row of each
        sample's image span, the crop and patch it holds (crop * P + patch, image-local) or -1
        for an `image_newline` row. Reusing llava's code keeps unpad/newline exactly as llava
        lays them out."""
        tower = self.get_vision_tower()
        num_patches = tower.num_patches
        hidden = self.config.hidden_size
        model = self.get_model()

        def markers(concat_images):
            # Indices are split into base-64 digits: every value stays below 64, so it is exact
            # in fp16 and bf16 too (bf16 holds integers exactly only up to 256).
            n = concat_images.shape[0]
            crop = torch.arange(n, device=self.device)[:, None].expand(n, num_patches)
            patch = torch.arange(num_patches, device=self.device)[None].expand(n, num_patches)
            m = torch.zeros(n, num_patches, hidden, dtype=self.dtype, device=self.device)
            for ch, digits in enumerate((crop // 4096, crop // 64 % 64, crop % 64,
                                         patch // 4096, patch // 64 % 64, patch % 64)):
                m[:, :, ch] = digits.to(self.dtype)
            m[:, :, 6] = 1  # a patch (image_newline rows get 0 here)
            return m

        newline = getattr(model, "image_newline", None)
        self.encode_images = markers  # instance attribute shadows the method for one call
        if newline is not None:
            model.image_newline = torch.nn.Parameter(torch.zeros_like(newline), requires_grad=False)
        try:
            out = LlavaMetaForCausalLM.prepare_inputs_labels_for_multimodal(
                self, input_ids, None, attention_mask, None, None, images, image_sizes)
        finally:
            del self.encode_images
            if newline is not None:
                model.image_newline = newline
        embeds, mask = out[4], out[2]
        spans = image_spans(input_ids, attention_mask, mask, embeds.shape[1])
        layouts, first_crop = [], 0
        for b, span in enumerate(spans):
            n_crops = int(images[b].shape[0]) if images[b].ndim == 4 else 1
            if span is None:
                layouts.append(None)
                first_crop += n_crops
                continue
            real = torch.nonzero(mask[b].bool()).squeeze(1) if mask is not None else torch.arange(embeds.shape[1])
            rows = embeds[b, real[span[0]:span[0] + span[1]]].float()
            d = rows[:, :6].round().long()
            crop = d[:, 0] * 4096 + d[:, 1] * 64 + d[:, 2]
            patch = d[:, 3] * 4096 + d[:, 4] * 64 + d[:, 5]
            ids = (crop - first_crop) * num_patches + patch
            layouts.append(torch.where(rows[:, 6] > 0.5, ids, torch.full_like(ids, -1)).cpu())
            first_crop += n_crops
        return layouts

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
            # Continue from the last position each sample holds. (generate's own position ids
            # count llava's merged sequence, which a deferred multi-crop vision stage shortens.)
            last = torch.stack([(p * v).max() for p, v in zip(cache.key_positions[0], cache.key_valid[0])])
            position_ids = last[:, None] + 1 + torch.arange(q, device=last.device)
            hidden = self.star_pruner.decode(lm, inputs_embeds, position_ids, new_valid, cache)
        if self._star_last_logits_only:
            hidden = hidden[:, -1:]
        logits = self.lm_head(hidden).float()
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache if use_cache else None)

    def _star_prefill(self, lm, embeds, attention_mask):
        """Left-align the batch, apply a deferred (multi-crop) vision stage, run the decoder,
        fill `star_record`."""
        device = embeds.device
        valid_in = (attention_mask.bool() if attention_mask is not None
                    else torch.ones(embeds.shape[:2], dtype=torch.bool, device=device))
        spans, self._star_spans = self._star_spans, None
        layouts, self._star_layout = getattr(self, "_star_layout", None), None
        crops, self._star_crops = getattr(self, "_star_crops", None), None
        tower = self.get_vision_tower()
        P = tower.num_patches
        kept1 = tower.last_kept if isinstance(tower, StarCLIPVisionTower) else None
        keep_mask = tower.last_keep_mask if isinstance(tower, StarCLIPVisionTower) else None
        last_scores = tower.last_scores if isinstance(tower, StarCLIPVisionTower) else None
        batch = embeds.shape[0]
        if spans is None:
            spans = [None] * batch
        elif len(spans) != batch:
            # generate() expands the merged batch (num_beams, num_return_sequences) with
            # repeat_interleave after llava's merge: expand what we noted the same way.
            if batch % len(spans):
                raise ValueError(f"batch of {batch} rows does not match the {len(spans)} samples "
                                 "llava merged")
            r = batch // len(spans)
            rep = lambda xs: None if xs is None else [x for x in xs for _ in range(r)]  # noqa: E731
            sizes = crops if crops else [1] * len(spans)  # tower rows per sample
            per_sample = lambda t: None if t is None else torch.cat(rep(list(t.split(sizes))))  # noqa: E731
            keep_mask, last_scores = per_sample(keep_mask), per_sample(last_scores)
            spans, layouts, crops = rep(spans), rep(layouts), rep(crops)
            kept1 = None if kept1 is None else kept1.repeat_interleave(r, 0)
        lists, grids, starts, bases, scales, scores1 = [], [], [], [], [], []
        first_crop = 0
        for b, span in enumerate(spans):
            real = torch.nonzero(valid_in[b]).squeeze(1)
            n_crops = crops[b] if crops else 1
            # vision-stage scores by grid index (crop * P + patch on multi-crop images)
            scores1.append(None if last_scores is None or span is None
                           else last_scores[first_crop:first_crop + n_crops].reshape(-1).cpu())
            if span is None:
                lists.append(real)
                grids.append(torch.zeros(0, dtype=torch.long))
                starts.append(0), bases.append(P), scales.append(1)
                first_crop += n_crops
                continue
            start, length = span
            if layouts is not None:
                grid = layouts[b]
                rows = torch.ones(length, dtype=torch.bool)
                if keep_mask is not None:  # deferred vision stage: drop after llava's merge
                    m = keep_mask[first_crop:first_crop + n_crops].reshape(-1).cpu()
                    rows = (grid < 0) | m[grid.clamp_min(0)]
                n_patch_rows = int((grid >= 0).sum())
                grid = grid[rows]
                keep_rank = torch.cat([torch.arange(start), start + torch.nonzero(rows).squeeze(1),
                                       torch.arange(start + length, real.numel())])
                real = real[keep_rank.to(real.device)]
                length = grid.numel()
            else:
                grid = (kept1[b].cpu() if kept1 is not None and kept1.shape[1] == length
                        else torch.arange(length))
                n_patch_rows = P
            per_crop = self.star_plan.unit == "crop"
            lists.append(real)
            grids.append(grid)
            starts.append(start)
            bases.append(P * n_crops if per_crop else n_patch_rows)
            scales.append(n_crops if per_crop else 1)
            first_crop += n_crops
        index, valid = pack_rows(lists)
        embeds = gather_tokens(embeds, index)
        visual = None
        if any(s is not None for s in spans):
            shift = [index.shape[1] - l.numel() for l in lists]
            visual = VisualTokens(
                [torch.arange(g.numel(), device=device) + starts[b] + shift[b] for b, g in enumerate(grids)],
                [g.to(device) for g in grids], bases, scales)
        cache = StarCache()
        merged_len = valid_in.shape[1]
        hidden, _, counts, scores, kept = self.star_pruner.prefill(lm, embeds, valid, visual, cache)
        cache.seen_tokens = merged_len  # what generate's attention mask counts
        patches = lambda g: g[g >= 0].cpu()  # noqa: E731  (newline rows are not patches)

        def patch_scores(b):
            """Each decoder stage's scores of the patches it ranked (newline rows left out)."""
            out, before = [], grids[b]
            for s, k in zip(scores, kept):
                rows = torch.nonzero(before >= 0).squeeze(1)  # on the grid's device (bookkeeping)
                out.append(s[b][rows.to(s[b].device)].cpu())
                before = k[b]
            return out

        self.star_record = [
            PruneRecord(
                num_patches=(bases[b] if spans[b] is not None else 0),
                stage1_kept=patches(grids[b]),
                stage2_kept=patches(kept[-1][b] if kept else grids[b]),
                tokens_per_layer=counts[b],
                image_span=spans[b],
                stage1_scores=scores1[b],
                stage2_scores=patch_scores(b),
                decoder_kept=[patches(k[b]) for k in kept],
            )
            for b in range(embeds.shape[0])
        ]
        return hidden, cache

    @torch.no_grad()
    def generate(self, inputs=None, images=None, image_sizes=None, **kwargs):
        self._star_last_logits_only = True
        try:
            return super().generate(inputs, images=images, image_sizes=image_sizes, **kwargs)
        finally:
            self._star_last_logits_only = False
            self._star_spans = self._star_layout = self._star_crops = None  # never outlive a call


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
    return plan.validate(num_layers, max_visual_tokens(model, plan.unit))


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


def apply_star(model, config: Union[StarConfig, MethodConfig, Plan]):
    """Convert a loaded llava model in place so it prunes by `config`; returns the model."""
    from llava_star.patches import rotary_table_covers_positions

    base = next((c for c in _STAR_CLASS if isinstance(model, c)), None)
    if base is None:
        raise TypeError(f"apply_star needs a llava LLaMA or Mistral model, got {type(model).__name__}")
    tower = model.get_vision_tower()
    if tower is None or not tower.is_loaded:
        raise ValueError("apply_star needs the vision tower loaded (use load_pretrained_model)")
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
