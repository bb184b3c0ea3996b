"""Tiny random-weight llava-hf checkpoints (transformers' `LlavaForConditionalGeneration`),
built offline from configs, deterministic per seed.

    python -m llava_star.tiny_hf OUT_DIR [--seed N] [--force]

The same geometry as `llava_star.tiny` (336 px, patch 14: 576 patches + CLS, select layer -2,
the same tiny widths and weight scales), in the llava-hf layout: one directory that
`LlavaForConditionalGeneration.from_pretrained` and `AutoProcessor.from_pretrained` load, with
the project's sentencepiece tokenizer plus the `<image>` placeholder token.
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


def hf_config(vocab_size: int, image_token_id: int, text_kind: str = "llama"):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, MistralConfig

    from .tiny import CLIP_GEOMETRY, LM_GEOMETRY

    vision = CLIPVisionConfig(**CLIP_GEOMETRY, hidden_act="quick_gelu")
    common = dict(vocab_size=vocab_size, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  tie_word_embeddings=False, **LM_GEOMETRY)
    if text_kind == "mistral":
        text = MistralConfig(num_key_value_heads=2, sliding_window=None, rope_theta=1000000.0, **common)
    else:
        text = LlamaConfig(num_key_value_heads=LM_GEOMETRY["num_attention_heads"], rope_theta=10000.0, **common)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", image_seq_length=576,
                       multimodal_projector_bias=True, tie_word_embeddings=False)


def processor_for(tokenizer, mean=None, std=None):
    from transformers import LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    from .tiny import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    images = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                    image_mean=mean or OPENAI_CLIP_MEAN, image_std=std or OPENAI_CLIP_STD,
                                    do_pad=True)
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build(out_dir, seed: int = 0, force: bool = False, text_kind: str = "llama") -> Path:
    """Write a complete tiny llava-hf checkpoint (model, tokenizer, processor) to `out_dir`."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from .tiny import _randomize, _tokenizer_corpus, train_spm

    out = Path(out_dir)
    fresh_dir(out, force)
    spm_dir = out / "_train"
    spm_dir.mkdir()
    tok = hf_tokenizer(out, train_spm(spm_dir, _tokenizer_corpus(VICUNA_LINES)))
    shutil.rmtree(spm_dir)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(hf_config(len(tok), image_id, text_kind))
    _randomize(model, seed + 1)
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    processor_for(tok).save_pretrained(out)
    (out / "llava_star_tiny.json").write_text(json.dumps({"variant": "llava-hf", "seed": seed,
                                                          "text": text_kind}) + "\n")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_star.tiny_hf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where to write the checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--text", choices=("llama", "mistral"), default="llama",
                        help="language model (default llama)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    return run_build("llava_star.tiny_hf", args.out_dir, lambda: build(args.out_dir, args.seed, args.force, args.text))


if __name__ == "__main__":
    sys.exit(main())
