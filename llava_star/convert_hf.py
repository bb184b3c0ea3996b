"""Convert a llava-torch checkpoint (haotian-liu/LLaVA layout) into the llava-hf layout, the same
weights: LLaVA-1.5 into transformers' `LlavaForConditionalGeneration`, LLaVA-NeXT (anyres,
spatial_unpad; LLaMA or Mistral) into `LlavaNextForConditionalGeneration`.

    python -m llava_star.convert_hf SRC_DIR DST_DIR [--force]

Runs on transformers 5 without llava-torch. The key mapping follows what transformers'
`convert_llava_weights_to_hf.py` does (the projector's Sequential 0/2 become linear_1/linear_2,
the CLIP tower comes from `mm_vision_tower`, the language model moves under `language_model`,
NeXT's `image_newline` stays on the model),
written here for transformers 5's module names. One `<image>` placeholder token is added to the
tokenizer; its embedding and lm_head rows are the mean of the others, so its logit is below the
largest one and greedy decoding never picks it: generation is token for token the original's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


class ConvertError(ValueError):
    pass


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConvertError(f"no *.safetensors weights in {path}")
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


SOURCE_TYPES = ("llava_llama", "llava_mistral")


def is_anyres(cfg: dict) -> bool:
    return cfg.get("image_aspect_ratio", "pad") == "anyres"


def _check_source(cfg: dict, src: Path) -> Path:
    if cfg.get("model_type") not in SOURCE_TYPES:
        raise ConvertError(f"{src}/config.json: model_type {cfg.get('model_type')!r}; only llava-torch "
                           f"checkpoints ({', '.join(SOURCE_TYPES)}) convert")
    for key, want in (("mm_projector_type", "mlp2x_gelu"), ("mm_vision_select_feature", "patch"),
                      ("mm_use_im_start_end", False)):
        if cfg.get(key, want) != want:
            raise ConvertError(f"{src}/config.json: {key}={cfg.get(key)!r}; only {want!r} converts")
    if cfg.get("image_aspect_ratio", "pad") not in ("pad", "square", "anyres"):
        raise ConvertError(f"{src}/config.json: image_aspect_ratio {cfg.get('image_aspect_ratio')!r}; "
                           "pad/square (LLaVA-1.5) or anyres (LLaVA-NeXT) convert")
    if is_anyres(cfg) and cfg.get("mm_patch_merge_type") != "spatial_unpad":
        raise ConvertError(f"{src}/config.json: mm_patch_merge_type {cfg.get('mm_patch_merge_type')!r}; "
                           "LlavaNextForConditionalGeneration lays anyres out as spatial_unpad only")
    if cfg.get("model_type") == "llava_mistral" and not is_anyres(cfg):
        raise ConvertError(f"{src}/config.json: a Mistral LLaVA without anyres has no llava-hf class")
    tower = Path(cfg.get("mm_vision_tower", ""))
    if not tower.is_absolute():
        tower = src / tower
    if not (tower / "config.json").exists():
        raise ConvertError(f"{src}/config.json: mm_vision_tower {cfg.get('mm_vision_tower')!r} is not a local "
                           "CLIP directory (no hub here: point it at a downloaded one)")
    return tower


def rename(key: str) -> str:
    """A llava-torch language-model key -> transformers 5's LlavaForConditionalGeneration key."""
    for old, new in (("model.image_newline", "model.image_newline"),
                     ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
                     ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
                     ("model.", "model.language_model.")):
        if key.startswith(old):
            return new + key[len(old):]
    return key  # lm_head.weight


def convert(src, dst, force: bool = False) -> Path:
    import torch
    import transformers
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaNextConfig

    from .tiny_hf import IMAGE_TOKEN, hf_tokenizer, processor_for

    src, dst = Path(src), Path(dst)
    if not (src / "config.json").exists():
        raise ConvertError(f"SRC_DIR {src} has no config.json")
    if dst.exists() and any(dst.iterdir()):
        if not force:
            raise ConvertError(f"DST_DIR {dst} exists and is not empty (use --force to overwrite)")
        shutil.rmtree(dst)
    cfg = json.loads((src / "config.json").read_text())
    tower = _check_source(cfg, src)
    if not (src / "tokenizer.model").exists():
        raise ConvertError(f"SRC_DIR {src} has no tokenizer.model")
    dst.mkdir(parents=True, exist_ok=True)
    tok = hf_tokenizer(dst, src / "tokenizer.model")
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != cfg["vocab_size"]:
        raise ConvertError(f"the tokenizer has {image_id} tokens but config.json says vocab_size {cfg['vocab_size']}")
    mistral = cfg["model_type"] == "llava_mistral"
    text_cls = transformers.MistralConfig if mistral else transformers.LlamaConfig
    extra = dict(sliding_window=cfg.get("sliding_window")) if mistral else {}
    text = text_cls(vocab_size=image_id + 1, hidden_size=cfg["hidden_size"],
                       intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                       num_attention_heads=cfg["num_attention_heads"],
                       num_key_value_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
                       max_position_embeddings=cfg["max_position_embeddings"], rms_norm_eps=cfg["rms_norm_eps"],
                       rope_theta=cfg.get("rope_theta", 10000.0), hidden_act=cfg.get("hidden_act", "silu"),
                       bos_token_id=cfg.get("bos_token_id", 1), eos_token_id=cfg.get("eos_token_id", 2),
                       pad_token_id=cfg.get("pad_token_id", 0), tie_word_embeddings=False, **extra)
    vision = CLIPVisionConfig.from_pretrained(str(tower))
    common = dict(vision_config=vision, text_config=text, image_token_index=image_id, projector_hidden_act="gelu",
                  vision_feature_layer=cfg.get("mm_vision_select_layer", -2), vision_feature_select_strategy="default",
                  multimodal_projector_bias=True, image_seq_length=(vision.image_size // vision.patch_size) ** 2,
                  tie_word_embeddings=False)
    pinpoints = _pinpoints(cfg) if is_anyres(cfg) else None
    config = LlavaNextConfig(image_grid_pinpoints=pinpoints, **common) if pinpoints else LlavaConfig(**common)
    state = {rename(k): v for k, v in _safetensors(src).items() if "vision_tower" not in k}
    for k, v in _safetensors(tower).items():
        state["model.vision_tower." + k.removeprefix("vision_model.")] = v
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        state[key] = torch.cat([state[key], state[key].mean(0, keepdim=True)])
    model = (transformers.LlavaNextForConditionalGeneration if pinpoints else transformers.LlavaForConditionalGeneration)(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConvertError(f"weights do not map: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
    model.generation_config.do_sample = False
    model.save_pretrained(dst)
    pre = json.loads((tower / "preprocessor_config.json").read_text()) if (tower / "preprocessor_config.json").exists() else {}
    processor_for(tok, mean=pre.get("image_mean"), std=pre.get("image_std"), pinpoints=pinpoints).save_pretrained(dst)
    return dst


def _pinpoints(cfg: dict) -> list:
    """llava's image_grid_pinpoints (a list, or its string form) as a list of [a, b] lists. Both
    libraries read the pairs in their own order (llava (width, height), transformers (height,
    width)); LLaVA-NeXT's list holds every pair both ways round, so the choice is the same."""
    import ast

    points = cfg.get("image_grid_pinpoints")
    if isinstance(points, str):
        points = ast.literal_eval(points)
    if not points:
        raise ConvertError("config.json: an anyres checkpoint without image_grid_pinpoints")
    return [list(p) for p in points]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava_star.convert_hf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="SRC_DIR", help="a llava-torch LLaVA-1.5 or LLaVA-NeXT checkpoint directory")
    parser.add_argument("dst", metavar="DST_DIR", help="where to write the llava-hf checkpoint")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty DST_DIR")
    args = parser.parse_args(argv)
    try:
        print(convert(args.src, args.dst, args.force))
    except ConvertError as err:
        print(f"llava_star.convert_hf: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"llava_star.convert_hf: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
