"""LLaVA's prompt for one image and one question, as llava's own eval runners build it."""
from __future__ import annotations

import torch


def build_prompt(question: str, conv_mode: str, mm_use_im_start_end: bool = False) -> str:
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise ValueError(f"unknown --conv-mode {conv_mode!r}; choose one of {', '.join(sorted(conv_templates))}")
    image = DEFAULT_IMAGE_TOKEN
    if mm_use_im_start_end:
        image = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], image + "\n" + question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def prompt_input_ids(tokenizer, question: str, conv_mode: str, model_config=None) -> torch.Tensor:
    """[1, T] input ids with IMAGE_TOKEN_INDEX where the image goes."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token

    prompt = build_prompt(question, conv_mode, bool(getattr(model_config, "mm_use_im_start_end", False)))
    return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
