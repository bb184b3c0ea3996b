"""LLaVA's prompts, built in one place for the eval runners, the demo and the visualizer:
the conversation template a checkpoint uses (`conv_mode_for`) and the prompt of one question
(`build_prompt`), as llava's own runners build them; on the hf host, the processor's chat
template (`hf_prompt`).

    python -m llava_star.prompting --conv-mode-for PATH   # prints the template (used by scripts/eval)

Importing this module loads neither torch nor llava; they load when a prompt is built.
"""
from __future__ import annotations

import argparse
import os
import sys


def model_name_for(model_path: str) -> str:
    """llava's get_model_name_from_path: the folder name, with its parent for checkpoint-*."""
    parts = os.path.normpath(model_path.rstrip("/")).split(os.sep)
    return parts[-2] + "_" + parts[-1] if parts[-1].startswith("checkpoint-") and len(parts) > 1 else parts[-1]


def conv_mode_for(model_path: str) -> str:
    """The conversation template for a checkpoint, from its name: llava's run_llava rules for
    the families with their own template (LLaMA-2, Mistral, v1.6-34B), else vicuna_v1, the
    template of LLaVA's evaluation scripts for v1.5 and v1.6-vicuna."""
    name = model_name_for(model_path).lower()
    if "llama-2" in name:
        return "llava_llama_2"
    if "mistral" in name:
        return "mistral_instruct"
    if "v1.6-34b" in name:
        return "chatml_direct"
    return "vicuna_v1"


def build_prompt(question: str, conv_mode: str, mm_use_im_start_end: bool = False, with_image: bool = True,
                 answer: str = None) -> str:
    """The prompt llava's runners build: the image token (with its start/end tokens where the
    model uses them) on a line before the question; text-only questions have none. With
    `answer`, the assistant's turn holds it, closed as the template closes a turn (what a
    log-likelihood scores, as lmms-eval's llava model does)."""
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise ValueError(f"unknown --conv-mode {conv_mode!r}; choose one of {', '.join(sorted(conv_templates))}")
    if with_image:
        image = DEFAULT_IMAGE_TOKEN
        if mm_use_im_start_end:
            image = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
        question = image + "\n" + question
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def prompt_input_ids(tokenizer, question: str, conv_mode: str, model_config=None):
    """[1, T] input ids (a torch tensor) with IMAGE_TOKEN_INDEX where the image goes."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token

    prompt = build_prompt(question, conv_mode, bool(getattr(model_config, "mm_use_im_start_end", False)))
    return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


def hf_prompt(processor, question: str, with_image: bool = True) -> str:
    """The hf host's prompt of one question: a user turn (the image, then the question) through
    the processor's chat template with the assistant's turn opened; llava-hf LLaVA-1.5's own
    "USER: <image>\n{question} ASSISTANT:" where the processor has no template."""
    if getattr(processor, "chat_template", None):
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return f"USER: <image>\n{question} ASSISTANT:" if with_image else f"USER: {question} ASSISTANT:"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_star.prompting", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conv-mode-for", metavar="MODEL_PATH", required=True,
                   help="print the conversation template for this checkpoint (path or hub id)")
    args = p.parse_args(argv)
    print(conv_mode_for(args.conv_mode_for))
    return 0


if __name__ == "__main__":
    sys.exit(main())
