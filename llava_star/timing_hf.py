"""`Bench` for the hf host: transformers' own `LlavaForConditionalGeneration`, switched between
its unmodified class (the `stock` row) and our engine with a plan (`llava_star.hf.apply`, a
class swap, no reload). Prompts carry the image as the processor expands it: one
`config.image_token_id` placeholder per visual token."""
from __future__ import annotations

import torch

from .bench import Case
from .engine.plan import Plan
from .timing import Bench

STOCK = Case("stock", "stock", None, None)


class HFBench(Bench):
    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        self.image_sizes = None  # LLaVA-1.5 only: one crop per image

    def set_case(self, case: Case):
        from .hf import apply, remove

        if case.stock:
            if hasattr(self.model, "star_plan"):
                remove(self.model)
        else:
            apply(self.model, case.plan)

    def prefill(self, case: Case, ids, pixels):
        """Logits of the last position (what generation needs, on both classes) and the cache."""
        out = self.model(input_ids=ids, pixel_values=pixels, use_cache=True, logits_to_keep=1)
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
        filled with the projected features): LlamaModel.forward against our decoder loop."""
        from .engine.decoder import DecoderPruner
        from .engine.seams import Hooks
        from .hosts.hf.layers import DecoderLayers, StarCache

        m, cfg = self.model, self.model.config
        self.set_case(STOCK)
        embeds = m.get_input_embeddings()(ids)
        feats = m.model.get_image_features(pixel_values=pixels, vision_feature_layer=cfg.vision_feature_layer,
                                           vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        feats = torch.cat(list(feats.pooler_output)).to(embeds)
        embeds = embeds.masked_scatter((ids == cfg.image_token_id)[..., None].expand_as(embeds), feats)
        lm = m.model.language_model
        valid = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        pruner, layers = DecoderPruner(Plan("none")), DecoderLayers(lm, embeds.device)
        return (lambda: lm(inputs_embeds=embeds, use_cache=True),
                lambda: pruner.prefill(layers, embeds, valid, None, StarCache(), Hooks()))
