"""StarLlavaForConditionalGeneration / StarLlavaNextForConditionalGeneration: transformers' own
LLaVA-1.5 and LLaVA-NeXT classes driven by a Plan.

transformers' processor has already expanded every `<image>` into one placeholder token per
visual token (576 for LLaVA-1.5; for NeXT as many as its anyres layout has, newline rows
included), and its forward scatters the vision features into them. Our forward instead runs
the engine's vision stage on the CLIP tower, then:
- LLaVA-1.5 (one crop): rebuilds each sample's sequence with only the kept features where its
  placeholder run was (the placeholders of removed patches are dropped from the embeddings and
  the attention mask);
- LLaVA-NeXT (anyres): fills every placeholder as transformers does (its own
  `pack_image_features`: unpad and newline), and the engine drops the removed patches' rows
  after that merge, as on the llava host (the spatial merge needs every crop's full grid).
Then it runs the decoder loop. Positions are counted over what the language model receives.
"""
from __future__ import annotations

import contextvars
from typing import List, Optional

import torch
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast, LlavaForConditionalGeneration
from transformers.models.llava_next.modeling_llava_next import (LlavaNextForConditionalGeneration,
                                                                image_size_to_num_patches)

from ...engine.context import NEWLINE, PrefillContext, VisionResult
from ...engine.counts import ImageTokens, vision_keep
from ...engine.decoder import DecoderPruner
from ...engine.plan import Plan
from ...engine.prefill import prefill
from ...engine.record import PruneRecord
from ...engine.seams import Hooks
from ...engine.vision import encode
from .layers import DecoderLayers, StarCache

# True inside our generate(): its forward calls need the last position's logits only
_GENERATING: contextvars.ContextVar[bool] = contextvars.ContextVar("llava_star_hf_generating", default=False)


def clip_layer_call(layer, hidden):
    """transformers 5's CLIPEncoderLayer: (hidden, attention_mask) -> hidden."""
    return layer(hidden, None)


def num_patches(model) -> int:
    vc = model.config.vision_config
    return (vc.image_size // vc.patch_size) ** 2


def placeholder_runs(input_ids, valid, image_token_id: int) -> List[Optional[torch.Tensor]]:
    """Per sample, the indices (into the sample's real tokens) of its image placeholders, one
    contiguous run, or None for a text-only sample."""
    out = []
    for b in range(input_ids.shape[0]):
        ids = input_ids[b][valid[b]]
        where = torch.nonzero(ids == image_token_id).squeeze(1)
        if where.numel() == 0:
            out.append(None)
            continue
        if int(where[-1] - where[0]) != where.numel() - 1:
            raise ValueError(f"sample {b}: its {where.numel()} image placeholder tokens are not one contiguous run "
                             "(llava_star prunes one image per sample)")
        out.append(where)
    return out


def image_rows(input_ids, valid, image_token_id: int, per_image: int) -> List[Optional[torch.Tensor]]:
    """`placeholder_runs` of LLaVA-1.5 prompts: one image of `per_image` placeholders each."""
    out = placeholder_runs(input_ids, valid, image_token_id)
    for b, where in enumerate(out):
        if where is not None and where.numel() != per_image:
            many = where.numel() % per_image == 0
            raise ValueError(f"sample {b} has {where.numel()} image placeholder tokens; llava_star prunes "
                             + ("one image per sample" if many else
                                f"one image of {per_image} placeholders (as the processor expands <image>)"))
    return out


def per_sample(t: Optional[torch.Tensor], has_image: List[bool]) -> Optional[torch.Tensor]:
    """Rows of the tower's batch (one per image) as one row per sample (zeros for text-only
    samples), the layout `engine.prefill` reads the vision result in."""
    if t is None or all(has_image):
        return t
    out = t.new_zeros((len(has_image),) + tuple(t.shape[1:]))
    out[torch.tensor(has_image, device=t.device)] = t
    return out


def _valid(input_ids, attention_mask) -> torch.Tensor:
    return (attention_mask.bool() if attention_mask is not None
            else torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device))


def _check_images(n_given: int, n_runs: int) -> None:
    if n_given != n_runs:
        raise ValueError(f"pixel_values holds {n_given} images but the prompts have {n_runs} image placeholder "
                         "runs (one image per sample)")


class StarHFMixin:
    """Everything StarLlavaForConditionalGeneration adds; see the module docstring."""

    star_plan: Plan
    star_pruner: DecoderPruner
    star_hooks: Hooks
    star_record: Optional[List[PruneRecord]] = None

    # ------------------------------------------------------------------ vision + merge
    def _star_vision(self, pixels, ctx: PrefillContext):
        """CLIP crops [N,3,H,W] up to the select layer with the plan's vision stage (deferred to
        a keep mask when `ctx.crop_keep` is set); projected features [N, k, C]."""
        tower = self.model.vision_tower
        vm = getattr(tower, "vision_model", tower)  # CLIPVisionModel is flat in transformers 5
        param = next(vm.parameters())
        plan = self.star_plan
        feats, result = encode(vm, pixels.to(device=param.device, dtype=param.dtype),
                               self.config.vision_feature_layer, plan.vision, plan.seed, ctx.hooks, ctx,
                               patch_only=True, run_layer=clip_layer_call)
        proj = self.model.multi_modal_projector
        return proj(feats.to(next(proj.parameters()).device)), result

    def _star_merge(self, input_ids, embeds, attention_mask, pixel_values, image_sizes, ctx: PrefillContext):
        """Replace each sample's placeholder run by its kept visual features; returns the new
        (embeds, attention_mask), left-aligned, and fills ctx (spans, vision result)."""
        valid = _valid(input_ids, attention_mask)
        where = image_rows(input_ids, valid.to(input_ids.device), self.config.image_token_id, num_patches(self))
        has_image = [w is not None for w in where]
        _check_images(pixel_values.shape[0], sum(has_image))
        feats, result = self._star_vision(pixel_values, ctx)
        feats = feats.to(device=embeds.device, dtype=embeds.dtype)
        rows, spans, i = [], [], 0
        for b, w in enumerate(where):
            real = embeds[b][valid[b].to(embeds.device)]
            if w is None:
                rows.append(real)
                spans.append(None)
                continue
            start, end = int(w[0]), int(w[-1]) + 1
            rows.append(torch.cat([real[:start], feats[i], real[end:]]))
            spans.append((start, int(feats.shape[1])))
            i += 1
        length = max(r.shape[0] for r in rows)
        out = embeds.new_zeros(len(rows), length, embeds.shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=embeds.device)
        for b, r in enumerate(rows):
            out[b, length - r.shape[0]:] = r
            mask[b, length - r.shape[0]:] = 1
        ctx.spans = spans
        ctx.vision = VisionResult(kept=per_sample(result.kept, has_image), scores=per_sample(result.scores, has_image),
                                  grid=per_sample(result.grid, has_image))
        return out, mask

    # ---------------------------------------------------------------------- forward
    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, cache=None,
                inputs_embeds=None, vision_feature_layer=None, vision_feature_select_strategy=None, labels=None,
                logits_to_keep=0, image_sizes=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, past_key_values=None, **kwargs):
        """transformers' forward, pruned by the plan. `position_ids` are ignored: positions come
        from what each layer holds (see the plan's `positions`). Logits come back left-aligned
        over the pruned sequence: the last column is every sample's last real token."""
        if output_attentions or output_hidden_states:
            raise ValueError("llava_star models do not return attentions or hidden states "
                             "(pruning changes the sequence between layers)")
        if labels is not None:
            raise ValueError("llava_star is inference-only: `labels` (training loss) is not supported")
        if kwargs.get("mm_encoder_outputs") is not None:
            raise ValueError("llava_star runs the vision tower itself: pass pixel_values, not mm_encoder_outputs")
        for name, value, stock in (("vision_feature_layer", vision_feature_layer, self.config.vision_feature_layer),
                                   ("vision_feature_select_strategy", vision_feature_select_strategy,
                                    self.config.vision_feature_select_strategy)):
            if value is not None and value != stock:
                raise ValueError(f"{name}={value!r} differs from the config's {stock!r}, which the plan was "
                                 "checked against")
        cache = cache if cache is not None else past_key_values
        use_cache = getattr(self.config.text_config, "use_cache", True) if use_cache is None else use_cache
        lm = self.model.language_model
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
            inputs_embeds = lm.embed_tokens(input_ids)
        layers = DecoderLayers(lm, inputs_embeds.device)
        if cache is not None and not isinstance(cache, StarCache) and cache.get_seq_length() > 0:
            raise TypeError("cache must be the StarCache this model returned")
        if not isinstance(cache, StarCache) or cache.get_seq_length() == 0:
            hidden, cache = self._star_prefill(layers, input_ids, inputs_embeds, attention_mask, pixel_values,
                                               image_sizes)
        else:
            q = inputs_embeds.shape[1]
            new_valid = (attention_mask[:, -q:].bool() if attention_mask is not None
                         else torch.ones(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device))
            hidden = self.star_pruner.decode(layers, inputs_embeds, new_valid.to(inputs_embeds.device), cache, 0)
        if _GENERATING.get() and not logits_to_keep:
            logits_to_keep = 1
        if isinstance(logits_to_keep, int) and logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        elif not isinstance(logits_to_keep, int):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden.to(self.lm_head.weight.device))
        return LlavaCausalLMOutputWithPast(logits=logits, cache=cache if use_cache else None)

    def _star_prefill(self, layers, input_ids, embeds, attention_mask, pixel_values, image_sizes=None):
        ctx = None
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("llava_star finds the image placeholders in input_ids: pass input_ids with "
                                 "pixel_values, not inputs_embeds")
            ctx = PrefillContext(self.star_hooks)
            embeds, attention_mask = self._star_merge(input_ids, embeds, attention_mask, pixel_values, image_sizes, ctx)
        elif input_ids is not None and bool((input_ids == self.config.image_token_id).any()):
            raise ValueError("the prompt has image placeholder tokens but no pixel_values were given")
        cache = StarCache()
        hidden, self.star_record = prefill(self.star_pruner, layers, embeds, attention_mask, ctx,
                                           num_patches(self), cache, self.star_hooks)
        return hidden, cache

    @torch.no_grad()
    def generate(self, *args, **kwargs):
        token = _GENERATING.set(True)
        try:
            return super().generate(*args, **kwargs)
        finally:
            _GENERATING.reset(token)


class StarLlavaForConditionalGeneration(StarHFMixin, LlavaForConditionalGeneration):
    pass


class StarNextMixin(StarHFMixin):
    """LLaVA-NeXT: anyres crops, transformers' own unpad/newline packing, removal after it."""

    def _star_merge(self, input_ids, embeds, attention_mask, pixel_values, image_sizes, ctx: PrefillContext):
        if image_sizes is None:
            raise ValueError("LLaVA-NeXT needs image_sizes with pixel_values (the processor returns both)")
        valid = _valid(input_ids, attention_mask)
        runs = placeholder_runs(input_ids, valid.to(input_ids.device), self.config.image_token_id)
        n_images = sum(w is not None for w in runs)
        _check_images(pixel_values.shape[0], n_images)
        _check_images(len(image_sizes), n_images)
        n_crops = crops_per_image(self.config, image_sizes)
        pixels = torch.cat([pv[:n] for pv, n in zip(pixel_values, n_crops)]) if pixel_values.dim() == 5 else pixel_values
        P, stage = num_patches(self), self.star_plan.vision
        if stage is not None:  # per crop: its keep count, and whether it starts its image
            ctx.crop_keep = [vision_keep(stage.keep, self.star_plan.unit, ImageTokens(n, P, n * P))
                             for n in n_crops for _ in range(n)]
            ctx.crop_first = [j == 0 for n in n_crops for j in range(n)]
        feats, ctx.vision = self._star_vision(pixels, ctx)
        strategy = self.config.vision_feature_select_strategy
        packed, _ = self.model.pack_image_features(list(feats.split(n_crops)), image_sizes, strategy,
                                                   image_newline=self.model.image_newline)
        layouts = next_layouts(self.model, n_crops, image_sizes, P)
        out, spans, rows, i = embeds.clone(), [], [], 0
        for b, where in enumerate(runs):
            if where is None:
                spans.append(None)
                rows.append(None)
                continue
            if where.numel() != packed[i].shape[0]:
                raise ValueError(f"sample {b} has {where.numel()} image placeholder tokens but its image "
                                 f"(image_sizes {[int(x) for x in image_sizes[i]]}) packs into {packed[i].shape[0]} features")
            real = torch.nonzero(valid[b]).squeeze(1).to(embeds.device)
            out[b, real[where.to(embeds.device)]] = packed[i].to(device=embeds.device, dtype=embeds.dtype)
            spans.append((int(where[0]), int(where.numel())))
            rows.append(layouts[i])
            i += 1
        it = iter(n_crops)
        ctx.crops = [0 if w is None else next(it) for w in runs]  # tower rows per sample
        ctx.spans, ctx.layouts = spans, rows
        return out, valid.long()


class StarLlavaNextForConditionalGeneration(StarNextMixin, LlavaNextForConditionalGeneration):
    pass


def crops_per_image(config, image_sizes) -> List[int]:
    """CLIP crops of each anyres image (the base image and its grid), as transformers counts them."""
    side = config.vision_config.image_size
    return [image_size_to_num_patches(s, config.image_grid_pinpoints, side) for s in image_sizes]


def next_layouts(next_model, n_crops: List[int], image_sizes, per_crop: int) -> List[torch.Tensor]:
    """Per image, the grid index (crop * P + patch, image-local) of every row transformers'
    `pack_image_features` lays out, NEWLINE for its newline rows: the packing run once more on
    marker features (exact in float64), so unpad and newline are exactly transformers'."""
    marks = []
    for n in n_crops:
        crop = torch.arange(n).repeat_interleave(per_crop)
        patch = torch.arange(per_crop).repeat(n)
        marks.append(torch.stack([crop, patch, torch.ones_like(crop)], -1).double().view(n, per_crop, 3))
    sizes = image_sizes.cpu() if torch.is_tensor(image_sizes) else image_sizes
    packed, _ = next_model.pack_image_features(marks, sizes, "default", image_newline=torch.zeros(3, dtype=torch.float64))
    return [torch.where(p[:, 2] > 0.5, p[:, 0].long() * per_crop + p[:, 1].long(),
                        torch.full_like(p[:, 0].long(), NEWLINE)) for p in packed]


STAR_CLASS = {LlavaForConditionalGeneration: StarLlavaForConditionalGeneration,
              LlavaNextForConditionalGeneration: StarLlavaNextForConditionalGeneration}
