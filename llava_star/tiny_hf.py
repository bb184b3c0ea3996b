"""Tiny random-weight llava-hf checkpoints (transformers' `LlavaForConditionalGeneration`, or
`LlavaNextForConditionalGeneration` with `--variant llava-next`), built offline from configs,
deterministic per seed.

    python -m llava_star.tiny_hf OUT_DIR [--variant llava-1.5|llava-next] [--text llama|mistral] [--seed N] [--force]

The same geometry as `llava_star.tiny` (336 px, patch 14: 576 patches + CLS, select layer -2,
the same tiny widths and weight scales; NeXT: the same anyres pinpoints), in the llava-hf
layout: one directory that `from_pretrained` and `AutoProcessor.from_pretrained` load, with the
project's sentencepiece tokenizer plus the `<image>` placeholder token.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .tiny import fresh_dir, run_build

# LLaVA-1.5's conversation template (vicuna_v1), for the tokenizer corpus where llava is absent
VICUNA_LINES = [
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions.",
    "USER", "ASSISTANT", " ", "</s>",
]
IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def hf_tokenizer(out: Path, spm_path: Path):
    """transformers 5's LlamaTokenizer converted from our sentencepiece model, BOS on, pad
    `<unk>` (as LLaVA-1.5), plus the `<image>` placeholder as a special token."""
    from transformers import AddedToken, LlamaTokenizer

    staging = out / "_spm"
    staging.mkdir()
    shutil.copy(spm_path, staging / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(staging), legacy=False, pad_token="<unk>",
                                         add_bos_token=True, add_eos_token=False)
    shutil.rmtree(staging)
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(IMAGE_TOKEN, special=True, normalized=False)]})
    tok.model_max_length = 4096
    tok.padding_side = "left"
    return tok


VARIANTS = ("llava-1.5", "llava-next")


def hf_config(vocab_size: int, image_token_id: int, text_kind: str = "llama", variant: str = "llava-1.5"):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaNextConfig, MistralConfig

    from .tiny import CLIP_GEOMETRY, LM_GEOMETRY, NEXT_PINPOINTS

    vision = CLIPVisionConfig(**CLIP_GEOMETRY, hidden_act="quick_gelu")
    common = dict(vocab_size=vocab_size, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  tie_word_embeddings=False, **LM_GEOMETRY)
    if text_kind == "mistral":
        text = MistralConfig(num_key_value_heads=2, sliding_window=None, rope_theta=1000000.0, **common)
    else:
        text = LlamaConfig(num_key_value_heads=LM_GEOMETRY["num_attention_heads"], rope_theta=10000.0, **common)
    common = dict(vision_config=vision, text_config=text, image_token_index=image_token_id,
                  projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
                  image_seq_length=576, multimodal_projector_bias=True, tie_word_embeddings=False)
    if variant == "llava-next":
        return LlavaNextConfig(image_grid_pinpoints=NEXT_PINPOINTS, **common)
    return LlavaConfig(**common)


def processor_for(tokenizer, mean=None, std=None, pinpoints=None):
    """LLaVA-1.5's processor, or with `pinpoints` LLaVA-NeXT's (anyres)."""
    from transformers import LlavaNextProcessor, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from .tiny import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    common = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                  image_mean=mean or OPENAI_CLIP_MEAN, image_std=std or OPENAI_CLIP_STD, do_pad=True)
    if pinpoints is not None:
        images, cls = LlavaNextImageProcessorPil(image_grid_pinpoints=pinpoints, **common), LlavaNextProcessor
    else:
        images, cls = LlavaImageProcessorPil(**common), LlavaProcessor
    return cls(image_processor=images, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
               num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)


def build(out_dir, seed: int = 0, force: bool = False, text_kind: str = "llama", variant: str = "llava-1.5") -> Path:
    """Write a complete tiny llava-hf checkpoint (model, tokenizer, processor) to `out_dir`."""
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    from .tiny import NEXT_PINPOINTS, TinyError

    if variant not in VARIANTS:
        raise TinyError(f"unknown --variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    from .tiny import _randomize, _tokenizer_corpus, train_spm

    out = Path(out_dir)
    fresh_dir(out, force)
    spm_dir = out / "_train"
    spm_dir.mkdir()
    tok = hf_tokenizer(out, train_spm(spm_dir, _tokenizer_corpus(VICUNA_LINES)))
    shutil.rmtree(spm_dir)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    torch.manual_seed(seed)
    next_ = variant == "llava-next"
    cls = LlavaNextForConditionalGeneration if next_ else LlavaForConditionalGeneration
    model = cls(hf_config(len(tok), image_id, text_kind, variant))
    _randomize(model, seed + 1)
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    processor_for(tok, pinpoints=NEXT_PINPOINTS if next_ else None).save_pretrained(out)
    (out / "llava_star_tiny.json").write_text(json.dumps({"variant": f"{variant}-hf", "seed": seed,
                                                          "text": text_kind}) + "\n")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_star.tiny_hf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where to write the checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--variant", choices=VARIANTS, default="llava-1.5",
                        help="LLaVA-1.5 (LlavaForConditionalGeneration) or LLaVA-NeXT (anyres; default llava-1.5)")
    parser.add_argument("--text", choices=("llama", "mistral"), default="llama",
                        help="language model (default llama)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    return run_build("llava_star.tiny_hf", args.out_dir, lambda: build(args.out_dir, args.seed, args.force, args.text,
                                                                         args.variant))


if __name__ == "__main__":
    sys.exit(main())
