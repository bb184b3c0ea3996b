"""StarCLIPVisionTower: llava's CLIPVisionTower running the engine's vision stage."""
from __future__ import annotations

from typing import List

import torch
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

from ...engine import context
from ...engine.seams import Hooks
from ...engine.vision import encode


class StarCLIPVisionTower(CLIPVisionTower):
    """llava's tower with `engine.vision.encode` in place of the full CLIP run. It returns
    features as llava expects; what the stage did goes into the open `PrefillContext`."""

    star_plan = None  # set by apply_star

    def _encode(self, pixels: torch.Tensor, ctx):
        plan = self.star_plan
        hooks = ctx.hooks if ctx is not None else Hooks()
        return encode(self.vision_tower.vision_model, pixels.to(device=self.device, dtype=self.dtype),
                      self.select_layer, plan.vision if plan else None, plan.seed if plan else 0,
                      hooks, ctx, patch_only=self.select_feature == "patch")

    @torch.no_grad()
    def forward(self, images):
        ctx = context.current()
        if isinstance(images, list):
            # one image at a time, so never a deferred (multi-crop) stage: llava's merge passes
            # its crops as one batch
            outs = [self._encode(img.unsqueeze(0), None) for img in images]
            feats: List[torch.Tensor] = [f.to(img.dtype) for (f, _), img in zip(outs, images)]
            if ctx is not None and outs[0][1].kept is not None:
                ctx.vision.kept = torch.cat([r.kept for _, r in outs])
            if ctx is not None and outs[0][1].scores is not None:
                ctx.vision.scores = torch.cat([r.scores for _, r in outs])
            return feats
        feats, result = self._encode(images, ctx)
        if ctx is not None:
            ctx.vision = result
        return feats.to(images.dtype)
