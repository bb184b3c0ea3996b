"""`Bench` for the hf host: transformers' own `LlavaForConditionalGeneration` /
`LlavaNextForConditionalGeneration`, switched between its unmodified class (the `stock` row)
and our engine with a plan (`llava_star.hf.apply`, a class swap, no reload). Prompts carry the
image as the processor expands it: one `config.image_token_id` placeholder per visual token
(LLaVA-NeXT: per row of transformers' packed layout, newline rows included)."""
from __future__ import annotations

import torch

from .bench import Case
from .engine.plan import Plan
from .timing import Bench, noise_image

STOCK = Case("stock", "stock", None, None)


class HFBench(Bench):
    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        self.image_sizes = None  # LLaVA-NeXT: (height, width) per image, as the processor gives them

    def _image_kwargs(self):
        return {} if self.image_sizes is None else {"image_sizes": self.image_sizes}

    def set_case(self, case: Case):
        from .hf import apply, remove

        if case.stock:
            if hasattr(self.model, "star_plan"):
                remove(self.model)
        else:
            apply(self.model, case.plan)

    def prefill(self, case: Case, ids, pixels):
        """Logits of the last position (what generation needs, on both classes) and the cache."""
        out = self.model(input_ids=ids, pixel_values=pixels, use_cache=True, logits_to_keep=1,
                         **self._image_kwargs())
        return out.logits, out.cache

    def decode_step(self, tok, cache):
        out = self.model(input_ids=tok, cache=cache, use_cache=True)
        return out.logits, out.cache

    def vision_modules(self):
        # the engine runs the tower's parts itself (not its forward): time from its patch embedding
        tower = self.model.model.vision_tower
        return getattr(tower, "vision_model", tower).embeddings, self.model.model.multi_modal_projector

    def ab_pair(self, ids, pixels):
        """(stock, engine) on the embeddings transformers' own forward builds (placeholders
        filled with the projected features, NeXT's packed with unpad and newlines):
        LlamaModel.forward against our decoder loop."""
        from .engine.decoder import DecoderPruner
        from .engine.seams import Hooks
        from .hosts.hf.layers import DecoderLayers, StarCache

        m, cfg = self.model, self.model.config
        self.set_case(STOCK)
        embeds = m.get_input_embeddings()(ids)
        feats = m.model.get_image_features(pixel_values=pixels, vision_feature_layer=cfg.vision_feature_layer,
                                           vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                           **self._image_kwargs())
        feats = torch.cat(list(feats.pooler_output)).to(embeds)
        embeds = embeds.masked_scatter((ids == cfg.image_token_id)[..., None].expand_as(embeds), feats)
        lm = m.model.language_model
        valid = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        pruner, layers = DecoderPruner(Plan("none")), DecoderLayers(lm, embeds.device)
        return (lambda: lm(inputs_embeds=embeds, use_cache=True),
                lambda: pruner.prefill(layers, embeds, valid, None, StarCache(), Hooks()))


def anyres_inputs(model, processor, size: str, batch: int, seed: int, device, dtype):
    """LLaVA-NeXT: (pixel values [batch, crops, 3, S, S], image_sizes [batch, 2], placeholders
    per image) of the synthetic `--image-size` noise image through the checkpoint's own
    processor; the placeholder count is the length of transformers' packed layout."""
    from .hosts.hf.model import crops_per_image, next_layouts, num_patches

    out = processor.image_processor(images=[noise_image(size, seed)] * batch, return_tensors="pt")
    sizes = out["image_sizes"]
    n_crops = crops_per_image(model.config, sizes)
    (layout, *_) = next_layouts(model.model, n_crops, sizes, num_patches(model))
    return out["pixel_values"].to(device, dtype), sizes.to(device), int(layout.numel())
