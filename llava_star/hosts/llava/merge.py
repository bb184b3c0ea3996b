"""Where llava's merge put each image: spans in the merged sequence and, for multi-crop
(anyres) images, which crop and patch every merged row holds. Works on stock llava models
too (the eval runners count a stock run's tokens with it)."""
from __future__ import annotations

import torch
from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.llava_arch import LlavaMetaForCausalLM


def is_multi_crop(input_ids, images) -> bool:
    """llava's anyres path (a list of crops per image, or a 5-D tensor), at prefill."""
    return images is not None and input_ids.shape[1] != 1 and (isinstance(images, list) or images.ndim == 5)


def crops_per_image(images) -> list:
    return [int(x.shape[0]) if x.ndim == 4 else 1 for x in images]


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


def merged_layout(model, input_ids, attention_mask, images, image_sizes):
    """Run llava's own merge once more on marker features to learn, for every row of each
    sample's image span, the crop and patch it holds (crop * P + patch, image-local) or -1
    for an `image_newline` row. Reusing llava's code keeps unpad/newline exactly as llava
    lays them out. `model` may be a stock llava model."""
    tower = model.get_vision_tower()
    num_patches = tower.num_patches
    hidden = model.config.hidden_size
    lm = model.get_model()

    def markers(concat_images):
        # Indices are split into base-64 digits: every value stays below 64, so it is exact
        # in fp16 and bf16 too (bf16 holds integers exactly only up to 256).
        n = concat_images.shape[0]
        crop = torch.arange(n, device=model.device)[:, None].expand(n, num_patches)
        patch = torch.arange(num_patches, device=model.device)[None].expand(n, num_patches)
        m = torch.zeros(n, num_patches, hidden, dtype=model.dtype, device=model.device)
        for ch, digits in enumerate((crop // 4096, crop // 64 % 64, crop % 64,
                                     patch // 4096, patch // 64 % 64, patch % 64)):
            m[:, :, ch] = digits.to(model.dtype)
        m[:, :, 6] = 1  # a patch (image_newline rows get 0 here)
        return m

    newline = getattr(lm, "image_newline", None)
    model.encode_images = markers  # instance attribute shadows the method for one call
    if newline is not None:
        lm.image_newline = torch.nn.Parameter(torch.zeros_like(newline), requires_grad=False)
    try:
        out = LlavaMetaForCausalLM.prepare_inputs_labels_for_multimodal(
            model, input_ids, None, attention_mask, None, None, images, image_sizes)
    finally:
        del model.encode_images
        if newline is not None:
            lm.image_newline = newline
    embeds, mask = out[4], out[2]
    spans = image_spans(input_ids, attention_mask, mask, embeds.shape[1])
    layouts, first_crop = [], 0
    for b, span in enumerate(spans):
        n_crops = crops_per_image([images[b]])[0]
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
