"""Build tiny random-weight LLaVA checkpoints, fully offline and deterministic per seed.

    python -m llava_star.tiny OUT_DIR [--variant llava-v1.5|llava-next|llava-mistral] [--seed N] [--force]

The checkpoint keeps LLaVA's real geometry where pruning cares about it (336 px, patch 14,
so 576 patch tokens + CLS, select layer -2, the 1.5 / NeXT config fields) and shrinks every
width. It has three parts, all under OUT_DIR:

- `vision_tower/`: a `CLIPVisionModel` and `CLIPImageProcessor` (OpenAI CLIP's normalisation);
- the language model: `LlavaLlamaForCausalLM` (or `LlavaMistralForCausalLM`) weights and config,
  with `mm_vision_tower` pointing at the absolute path of `vision_tower/`;
- a LLaMA tokenizer trained on the spot with sentencepiece (byte fallback, so any text encodes).

llava's builder picks the model class from the directory name, so OUT_DIR's name must
contain "llava" (and "mistral" for the Mistral variant).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads when a checkpoint is built, so --help stays fast
    import torch

VARIANTS = ("llava-v1.5", "llava-next", "llava-mistral")

# Real LLaVA geometry that pruning depends on; tiny widths everywhere else.
CLIP_GEOMETRY = dict(
    image_size=336, patch_size=14, hidden_size=64, intermediate_size=128,
    num_hidden_layers=4, num_attention_heads=4, projection_dim=64,
)
LM_GEOMETRY = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=8,
    num_attention_heads=4, max_position_embeddings=4096,
)
VOCAB_SIZE = 800
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


class TinyError(ValueError):
    pass


def _template_lines() -> list[str]:
    """LLaVA's prompt templates (system prompts, roles, separators), from llava itself."""
    from llava.conversation import conv_templates

    lines = []
    for conv in conv_templates.values():
        lines.append(conv.system)
        lines.extend(str(r) for r in conv.roles)
        lines.extend(str(s) for s in (conv.sep, conv.sep2) if s)
    return lines


def _tokenizer_corpus(templates: list[str] | None = None) -> list[str]:
    """Sentences the tokenizer learns from: LLaVA's prompt templates and typical questions.
    `templates` replaces llava's own templates where llava is not installed (the hf host)."""
    lines = list(_template_lines() if templates is None else templates)
    words = ("image picture photo man woman dog cat car street tree sky water color red blue green "
             "yellow white black number count how many what is the there a an in on of to yes no "
             "answer question using single word phrase please describe detail left right top bottom "
             "person people table chair sign text written shown object animal building food").split()
    templates = [
        "Is there a {} in the image?", "What color is the {}?", "How many {} are there?",
        "Answer the question using a single word or phrase.", "Please answer yes or no.",
        "Describe the {} in detail.", "The {} is on the {} of the {}.",
    ]
    for i in range(600):
        t = templates[i % len(templates)]
        fill = [words[(i * 7 + k * 13) % len(words)] for k in range(t.count("{}"))]
        lines.append(t.format(*fill))
    lines.extend(" ".join(words[j:j + 9]) for j in range(0, len(words), 3))
    lines.append("USER: <image>\nWhat is shown? ASSISTANT: A photo.</s>")
    return [l for l in lines if l.strip()]


def train_spm(out_dir: Path, corpus: list[str]) -> Path:
    """Train a LLaMA-style sentencepiece model (unk/bos/eos = 0/1/2, byte fallback) into
    out_dir/tokenizer.model."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model,
        model_type="bpe", vocab_size=VOCAB_SIZE, byte_fallback=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        num_threads=1, minloglevel=2, add_dummy_prefix=True, normalization_rule_name="identity",
    )
    spm_path = out_dir / "tokenizer.model"
    spm_path.write_bytes(model.getvalue())
    return spm_path


def train_tokenizer(out_dir: Path) -> None:
    """The checkpoint's tokenizer (transformers 4.37's slow LlamaTokenizer on our sentencepiece model)."""
    from transformers import LlamaTokenizer

    spm_path = train_spm(out_dir, _tokenizer_corpus())
    # LLaVA-1.5 ships pad_token "<unk>" and legacy LLaMA behaviour.
    tok = LlamaTokenizer(vocab_file=str(spm_path), legacy=False, pad_token="<unk>",
                         add_bos_token=True, add_eos_token=False)
    tok.model_max_length = 4096
    tok.padding_side = "right"
    tok.save_pretrained(out_dir)


def _randomize(module: "torch.nn.Module", seed: int) -> None:
    """Re-draw every parameter from one seeded generator, with a scale that keeps activations
    O(1) and attention peaky (HF's default std 0.02 gives near-uniform attention on a tiny
    model, which would make top-k selections near-ties)."""
    import torch  # here, not at the top: `python -m llava_star.tiny --help` stays fast

    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        with torch.no_grad():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                gain = 2.0 if any(k in name for k in ("q_proj", "k_proj")) else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) * gain / fan_in ** 0.5)
            else:  # embeddings of rank 1 (class embedding, image_newline)
                p.copy_(torch.randn(p.shape, generator=gen))


def build_vision_tower(out_dir: Path, seed: int) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    path = out_dir / "vision_tower"
    config = CLIPVisionConfig(**CLIP_GEOMETRY, hidden_act="quick_gelu")
    model = CLIPVisionModel(config)
    _randomize(model, seed)
    model.save_pretrained(path, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, do_convert_rgb=True,
    ).save_pretrained(path)
    return path


def lm_config(variant: str, vision_path: Path, vocab_size: int):
    """A `LlavaConfig` / `LlavaMistralConfig` with every field the released checkpoints set."""
    mm_fields = dict(
        mm_vision_tower=str(vision_path.resolve()), mm_hidden_size=CLIP_GEOMETRY["hidden_size"],
        mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        mm_use_im_start_end=False, mm_use_im_patch_token=False, mm_projector_lr=None,
        freeze_mm_mlp_adapter=False, tune_mm_mlp_adapter=False, use_mm_proj=True,
        tokenizer_model_max_length=4096 if variant != "llava-v1.5" else 2048, tokenizer_padding_side="right",
        image_aspect_ratio="pad", mm_patch_merge_type="flat",
    )
    if variant in ("llava-next", "llava-mistral"):
        mm_fields.update(image_aspect_ratio="anyres", mm_patch_merge_type="spatial_unpad",
                         image_grid_pinpoints=NEXT_PINPOINTS, image_crop_resolution=224,
                         image_split_resolution=224, mm_vision_tower_lr=2e-6)
    common = dict(vocab_size=vocab_size, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0, tie_word_embeddings=False, torch_dtype="float32",
                  use_cache=True, **LM_GEOMETRY, **mm_fields)
    if variant == "llava-mistral":
        from llava.model.language_model.llava_mistral import LlavaMistralConfig
        return LlavaMistralConfig(num_key_value_heads=2, sliding_window=None,
                                  rope_theta=1000000.0, **common)
    from llava.model.language_model.llava_llama import LlavaConfig
    return LlavaConfig(num_key_value_heads=LM_GEOMETRY["num_attention_heads"],
                       rope_theta=10000.0, pretraining_tp=1, **common)


def build(out_dir: str | os.PathLike, variant: str = "llava-v1.5", seed: int = 0,
          force: bool = False) -> Path:
    """Write a complete tiny checkpoint to `out_dir` and return its path."""
    if variant not in VARIANTS:
        raise TinyError(f"unknown --variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    out = Path(out_dir)
    name = out.resolve().name.lower()
    if "llava" not in name:
        raise TinyError(f"OUT_DIR name {out.name!r} must contain 'llava' (llava's builder "
                        "chooses the model class from the directory name)")
    if variant == "llava-mistral" and "mistral" not in name:
        raise TinyError(f"OUT_DIR name {out.name!r} must contain 'mistral' for --variant llava-mistral")
    if variant != "llava-mistral" and "mistral" in name:
        raise TinyError(f"OUT_DIR name {out.name!r} contains 'mistral' but --variant is {variant}")
    fresh_dir(out, force)

    from transformers import AutoTokenizer

    train_tokenizer(out)
    vocab_size = len(AutoTokenizer.from_pretrained(out, use_fast=False))
    vision_path = build_vision_tower(out, seed)
    config = lm_config(variant, vision_path, vocab_size)
    if variant == "llava-mistral":
        from llava.model.language_model.llava_mistral import LlavaMistralForCausalLM as cls
    else:
        from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM as cls
    import torch

    torch.manual_seed(seed)
    model = cls(config)
    _randomize(model, seed + 1)
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    (out / "llava_star_tiny.json").write_text(json.dumps({"variant": variant, "seed": seed}) + "\n")
    _readable(out)
    return out


def _readable(folder: Path) -> None:
    """safetensors writes weights with mode 0600; give every file the mode a plain write gets
    (0666 less the umask), so a checkpoint built by one user loads for another."""
    umask = os.umask(0)
    os.umask(umask)
    for f in folder.rglob("*"):
        if f.is_file():
            f.chmod(0o666 & ~umask)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_star.tiny", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where to write the checkpoint (name must contain 'llava')")
    parser.add_argument("--variant", default="llava-v1.5", help=f"one of {', '.join(VARIANTS)} (default llava-v1.5)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    return run_build("llava_star.tiny", args.out_dir, lambda: build(args.out_dir, args.variant, args.seed, args.force))


def fresh_dir(out: Path, force: bool) -> None:
    """An empty OUT_DIR: made, or emptied with --force, else a TinyError saying why not."""
    if out.exists() and not out.is_dir():
        raise TinyError(f"OUT_DIR {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise TinyError(f"OUT_DIR {out} exists and is not empty (use --force to overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def run_build(prog: str, out_dir, build_call) -> int:
    """A builder CLI's ending: print the checkpoint's path, or one line saying what is wrong."""
    try:
        path = build_call()
    except TinyError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{prog}: error: cannot write OUT_DIR {out_dir}: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
