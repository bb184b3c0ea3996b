"""StarCLIPVisionTower: llava's CLIPVisionTower with the vision-side pruning stage."""
from __future__ import annotations

from typing import List, Optional

import torch
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

from ..config import VisionStage, count_of
from ..pruning.scores import attention_probs, attention_received, cls_attention
from ..pruning.select import random_sorted, topk_sorted


class StarCLIPVisionTower(CLIPVisionTower):
    """Runs CLIP only up to the layer llava reads features from (the stock tower runs every
    layer and discards the last one's output), scores patches with that layer's own
    attention, recomputed from its q/k (one layer, no `output_attentions` over the tower),
    and returns only the kept patches, in their original order.

    After each call: `last_kept` [N, k] grid indices per image (None without a vision stage
    and in multi-crop mode) and `last_scores` [N, P] (None without a scored vision stage).

    Multi-crop (anyres) inputs: llava's spatial merge needs every crop's full 24x24 grid, so
    the model sets `star_crop_keep` (a count per crop) and the tower returns all features
    with `last_keep_mask` [N, P]; the model drops the rest after llava's merge."""

    star_stage: Optional[VisionStage] = None
    star_crop_keep: Optional[List[int]] = None
    star_crop_first: Optional[List[bool]] = None  # per crop: is it its image's first crop
    last_kept: Optional[torch.Tensor] = None
    last_keep_mask: Optional[torch.Tensor] = None
    last_scores: Optional[torch.Tensor] = None

    def _layers_to_run(self) -> int:
        """hidden_states[s] is the output of the s-th layer (hidden_states[0] = embeddings)."""
        n = len(self.vision_tower.vision_model.encoder.layers)
        s = self.select_layer
        return s if s >= 0 else n + 1 + s

    def encode(self, pixels: torch.Tensor):
        """pixels [N,3,H,W] -> (features [N,k,C], kept [N,k] or None, scores [N,P] or None)."""
        vm = self.vision_tower.vision_model
        hidden = vm.pre_layrnorm(vm.embeddings(pixels.to(device=self.device, dtype=self.dtype)))
        n_run = self._layers_to_run()
        stage = self.star_stage
        scores = None
        for i, layer in enumerate(vm.encoder.layers[:n_run]):
            if stage is not None and stage.score != "random" and i == n_run - 1:
                scores = self._patch_scores(layer, hidden, stage.score)
            hidden = layer(hidden, None, None)[0]
        features = hidden[:, 1:] if self.select_feature == "patch" else hidden
        self.last_keep_mask = None
        if stage is None:
            return features, None, None
        num_patches = hidden.shape[1] - 1
        if self.star_crop_keep is not None:  # multi-crop: mark, do not remove
            self.last_keep_mask = self._keep_mask(scores, hidden.shape[0], num_patches, hidden.device)
            return features, None, scores
        k = count_of(stage.keep, num_patches)
        if stage.score == "random":
            # a fresh generator per image, so an image's subset does not depend on its batch
            kept = torch.stack([random_sorted(num_patches, k, self._generator())
                                for _ in range(hidden.shape[0])])
            kept = kept.to(hidden.device)
        else:
            kept = topk_sorted(scores, k)
        offset = 0 if self.select_feature == "patch" else 1  # keep CLS in 'cls_patch' mode
        index = kept + offset
        if offset:
            index = torch.cat([torch.zeros_like(index[:, :1]), index], dim=1)
        features = torch.gather(features, 1, index[..., None].expand(-1, -1, features.shape[-1]))
        return features, kept, scores

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(getattr(self, "star_seed", 0)))

    def _keep_mask(self, scores, n, num_patches, device) -> torch.Tensor:
        mask = torch.zeros(n, num_patches, dtype=torch.bool, device=device)
        first = self.star_crop_first or [i == 0 for i in range(len(self.star_crop_keep))]
        gen = None
        for i, k in enumerate(self.star_crop_keep):
            k = max(1, min(int(k), num_patches))
            if first[i]:  # re-seed at every image's first crop: independent of the batch
                gen = self._generator()
            kept = random_sorted(num_patches, k, gen) if scores is None else topk_sorted(scores[i], k)
            mask[i, kept.to(device)] = True
        return mask

    @staticmethod
    def _patch_scores(layer, hidden: torch.Tensor, score: str) -> torch.Tensor:
        attn = layer.self_attn
        x = layer.layer_norm1(hidden)
        b, t, _ = x.shape
        q = attn.q_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        probs = attention_probs(q, k)
        if score == "cls_attention":
            return cls_attention(probs)
        return attention_received(probs)[:, 1:]  # column mean over every query row, CLS included

    @torch.no_grad()
    def forward(self, images):
        if isinstance(images, list):
            outs = [self.encode(img.unsqueeze(0)) for img in images]
            feats: List[torch.Tensor] = [o[0].to(img.dtype) for o, img in zip(outs, images)]
            kept = [o[1] for o in outs]
            self.last_kept = None if kept[0] is None else torch.cat(kept)
            self.last_scores = None if outs[0][2] is None else torch.cat([o[2] for o in outs])
            return feats
        feats, self.last_kept, self.last_scores = self.encode(images)
        return feats.to(images.dtype)
