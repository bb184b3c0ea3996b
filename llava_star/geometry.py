"""Model geometries (layer counts and widths) for FLOPs theory and random-weight models.

A `Geometry` holds what the FLOPs formulas and the benchmark need: the language model
(layers, hidden size d, FFN intermediate m, heads, vocabulary), the CLIP vision tower and
the projector, and how many crops of the 576-patch grid one image becomes (1 for
LLaVA-1.5, 5 for LLaVA-NeXT's 672x672 2x2 setting: the base image plus four tiles).

`build_model(geometry, device, dtype)` builds a `LlavaLlamaForCausalLM` of that geometry
with random weights (or no weights at all on device "meta"), with nothing downloaded:
the CLIP tower is a `CLIPVisionModel` built from a config, not `from_pretrained`.
`build_hf_model` builds transformers' own `LlavaForConditionalGeneration` (the hf host) the
same way; `geometry_of_config(path)` reads a checkpoint's geometry from its config.json
(either layout, no torch).
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from typing import Dict, Optional



@dataclass(frozen=True)
class VisionGeometry:
    """A CLIP ViT tower as LLaVA uses it (features read from `select_layer`)."""
    image_size: int = 336
    patch_size: int = 14
    hidden: int = 1024
    intermediate: int = 4096
    layers: int = 24
    heads: int = 16
    select_layer: int = -2

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        """Patches plus CLS (577 for ViT-L/14-336)."""
        return self.num_patches + 1

    @property
    def layers_run(self) -> int:
        """Layers our tower runs: up to the select layer (23 of 24 for select_layer -2).
        Stock llava runs all `layers` and discards the last output."""
        s = self.select_layer
        return s if s >= 0 else self.layers + 1 + s


CLIP_L_336 = VisionGeometry()


@dataclass(frozen=True)
class Geometry:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: Optional[int] = None
    vocab: int = 32000
    vision: VisionGeometry = CLIP_L_336
    projector: str = "mlp2x_gelu"
    crops: int = 1  # 576-patch grids per image that reach the LLM (NeXT 2x2: 5)
    max_positions: int = 4096
    note: str = ""

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def num_patches(self) -> int:
        """Visual tokens per crop before any pruning (counts and ratios refer to this)."""
        return self.vision.num_patches

    @property
    def visual_tokens(self) -> int:
        """Visual tokens the LLM receives per image without pruning."""
        return self.crops * self.num_patches

    def replace(self, **kw) -> "Geometry":
        return dataclasses.replace(self, **kw)

    def summary(self) -> Dict[str, object]:
        return {"name": self.name, "layers": self.layers, "hidden": self.hidden,
                "intermediate": self.intermediate, "heads": self.heads, "kv_heads": self.num_kv_heads,
                "vocab": self.vocab, "visual_tokens": self.visual_tokens, "crops": self.crops,
                "clip": dataclasses.asdict(self.vision), "projector": self.projector}


GEOMETRIES: Dict[str, Geometry] = {
    "llava-v1.5-7b": Geometry("llava-v1.5-7b", layers=32, hidden=4096, intermediate=11008, heads=32,
                              note="vicuna-7b-v1.5 + CLIP ViT-L/14-336, 576 visual tokens"),
    "llava-v1.5-13b": Geometry("llava-v1.5-13b", layers=40, hidden=5120, intermediate=13824, heads=40,
                               note="vicuna-13b-v1.5 + CLIP ViT-L/14-336, 576 visual tokens"),
    "llava-next-7b": Geometry("llava-next-7b", layers=32, hidden=4096, intermediate=11008, heads=32, crops=5,
                              note="llava-v1.6-vicuna-7b at 672x672 (2x2 grid): 5 crops x 576 = 2880 visual "
                                   "tokens; unpadding and the per-row newline tokens are ignored (theory "
                                   "only: build_model makes LLaVA-1.5's flat layout; bench a real NeXT "
                                   "checkpoint with --model-path)"),
    # For this project's 2-core CPU: LLaMA-like decoder of 8 layers; CLIP keeps the real
    # 336/14 grid (576 patches + CLS, 24 layers, select -2) but a width of 256, because at
    # width 1024 the tower costs 2.5x the whole decoder and would hide what pruning saves.
    "cpu-mid": Geometry("cpu-mid", layers=8, hidden=1024, intermediate=2816, heads=16,
                        vision=VisionGeometry(hidden=256, intermediate=1024, heads=4),
                        note="CPU benchmark geometry: 8 x d1024 m2816 decoder; CLIP 24 layers at "
                             "width 256 (real 336/14 grid, 576 patches)"),
    # llava_star.tiny's checkpoint geometry (tests).
    "tiny": Geometry("tiny", layers=8, hidden=128, intermediate=256, heads=4, vocab=800,
                     vision=VisionGeometry(hidden=64, intermediate=128, layers=4, heads=4),
                     note="llava_star.tiny geometry"),
}


def get_geometry(name: str) -> Geometry:
    try:
        return GEOMETRIES[name]
    except KeyError:
        raise ValueError(f"unknown geometry {name!r}; known: {', '.join(GEOMETRIES)}") from None


def geometry_of(model, name: Optional[str] = None) -> Geometry:
    """The Geometry of a loaded llava model (LLaMA/Mistral decoder, CLIP tower)."""
    cfg = model.config
    tower = model.get_vision_tower()
    vc = tower.config
    vision = VisionGeometry(image_size=vc.image_size, patch_size=vc.patch_size, hidden=vc.hidden_size,
                            intermediate=vc.intermediate_size, layers=vc.num_hidden_layers,
                            heads=vc.num_attention_heads, select_layer=tower.select_layer)
    return Geometry(name or getattr(cfg, "_name_or_path", "") or "model", layers=cfg.num_hidden_layers,
                    hidden=cfg.hidden_size, intermediate=cfg.intermediate_size,
                    heads=cfg.num_attention_heads,
                    kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
                    vocab=cfg.vocab_size, vision=vision,
                    projector=getattr(cfg, "mm_projector_type", "linear"))


# --------------------------------------------------------- from a checkpoint's config.json
# What transformers fills in for fields a config.json leaves out (llava-hf configs saved by
# older transformers list only the fields that differ from these).
TEXT_DEFAULTS = {
    "llama": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  vocab_size=32000, max_position_embeddings=2048),
    "mistral": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768),
}
CLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=32)
LLAVA_HF_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=336, patch_size=14)  # LlavaConfig's tower when vision_config is absent
CLIP_TOWERS = {"clip-vit-large-patch14-336": CLIP_L_336,
               "clip-vit-large-patch14": VisionGeometry(image_size=224)}
NEXT_NOTE = "LLaVA-NeXT at 672x672 (2x2 grid): 5 crops x 576; unpad and newline rows ignored (theory)"


def geometry_of_config(path: str, name: Optional[str] = None) -> Geometry:
    """The Geometry of a checkpoint directory from its config.json alone (no torch): a llava-hf
    one (model_type llava / llava_next, text_config + vision_config) or a haotian-liu/LLaVA one
    (LLaMA fields at the top, the CLIP tower named by mm_vision_tower). ValueError, naming
    --model-path, when the file or a field is missing."""
    import json
    import os

    config = os.path.join(os.path.expanduser(path), "config.json")
    try:
        with open(config) as f:
            cfg = json.load(f)
    except OSError:
        raise ValueError(f"--model-path {path}: no readable config.json") from None
    except ValueError as err:
        raise ValueError(f"--model-path {path}: config.json is not JSON ({err})") from None
    name = name or os.path.basename(os.path.normpath(path))
    try:
        if cfg.get("model_type") in ("llava", "llava_next"):
            return _hf_geometry(cfg, name)
        return _llava_geometry(cfg, name, os.path.dirname(config))
    except KeyError as err:
        raise ValueError(f"--model-path {path}: config.json has no {err.args[0]} field") from None
    except ValueError as err:
        raise ValueError(f"--model-path {path}: {err}") from None


def _text(cfg: dict, name: str, **kw) -> Geometry:
    heads = cfg["num_attention_heads"]
    return Geometry(name, layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"],
                    intermediate=cfg["intermediate_size"], heads=heads,
                    kv_heads=cfg.get("num_key_value_heads") or heads, vocab=cfg["vocab_size"],
                    max_positions=cfg.get("max_position_embeddings") or 4096, **kw)


def _vision(cfg: dict, select_layer: int) -> VisionGeometry:
    return VisionGeometry(image_size=cfg["image_size"], patch_size=cfg["patch_size"], hidden=cfg["hidden_size"],
                          intermediate=cfg["intermediate_size"], layers=cfg["num_hidden_layers"],
                          heads=cfg["num_attention_heads"], select_layer=select_layer)


def _hf_geometry(cfg: dict, name: str) -> Geometry:
    text = cfg.get("text_config") or {}
    text = {**TEXT_DEFAULTS.get(text.get("model_type", "llama"), {}), **text}
    vision = cfg.get("vision_config")
    vision = {**CLIP_VISION_DEFAULTS, **vision} if vision else LLAVA_HF_VISION
    layer = cfg.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"vision_feature_layer {layer!r}: one int CLIP layer is needed (LLaVA-1.5 uses -2)")
    next_ = cfg["model_type"] == "llava_next"
    return _text(text, name, vision=_vision(vision, layer), projector="mlp2x_gelu", crops=5 if next_ else 1,
                 note=NEXT_NOTE if next_ else "")


def _llava_geometry(cfg: dict, name: str, root: str) -> Geometry:
    import json
    import os

    tower, layer = cfg["mm_vision_tower"], cfg.get("mm_vision_select_layer", -2)
    own = os.path.join(root, tower, "config.json") if not os.path.isabs(tower) else os.path.join(tower, "config.json")
    if os.path.isfile(own):  # a local tower (llava_star.tiny's): its own CLIP config
        with open(own) as f:
            vc = json.load(f)
        vision = _vision({**CLIP_VISION_DEFAULTS, **vc.get("vision_config", vc)}, layer)
    else:
        known = next((g for key, g in CLIP_TOWERS.items() if str(tower).rstrip("/").endswith(key)), None)
        if known is None:
            raise ValueError(f"mm_vision_tower {tower!r}: not a local directory and not one of the CLIP towers "
                             f"known here ({', '.join(CLIP_TOWERS)})")
        vision = dataclasses.replace(known, select_layer=layer)
    next_ = str(cfg.get("image_aspect_ratio") or "").startswith("anyres")
    return _text({**TEXT_DEFAULTS["llama"], **cfg}, name, vision=vision,
                 projector=cfg.get("mm_projector_type") or "linear", crops=5 if next_ else 1,
                 note=NEXT_NOTE if next_ else "")


# ------------------------------------------------------------------ model building
def clip_config(v: VisionGeometry):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(image_size=v.image_size, patch_size=v.patch_size, hidden_size=v.hidden,
                            intermediate_size=v.intermediate, num_hidden_layers=v.layers,
                            num_attention_heads=v.heads, projection_dim=768, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5)


def llava_config(g: Geometry, vision_dir: str, attn_implementation: str = "sdpa"):
    """A LlavaConfig with the fields the released LLaVA-1.5 checkpoints set."""
    from llava.model.language_model.llava_llama import LlavaConfig

    if g.crops != 1:
        raise ValueError(f"geometry {g.name} ({g.crops} crops per image) is theory-only: the engine "
                         "supports LLaVA-1.5's flat, single-crop layout")
    cfg = LlavaConfig(
        vocab_size=g.vocab, hidden_size=g.hidden, intermediate_size=g.intermediate,
        num_hidden_layers=g.layers, num_attention_heads=g.heads, num_key_value_heads=g.num_kv_heads,
        max_position_embeddings=g.max_positions, rms_norm_eps=1e-5, rope_theta=10000.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False, use_cache=True,
        pretraining_tp=1,
        mm_vision_tower=vision_dir, mm_hidden_size=g.vision.hidden, mm_projector_type=g.projector,
        mm_vision_select_layer=g.vision.select_layer, mm_vision_select_feature="patch",
        mm_use_im_start_end=False, mm_use_im_patch_token=False, image_aspect_ratio="pad",
        mm_patch_merge_type="flat", tokenizer_model_max_length=2048, tokenizer_padding_side="right",
    )
    cfg._attn_implementation = attn_implementation
    return cfg


def build_model(g: Geometry, device="cpu", dtype=None, attn_implementation: str = "sdpa", seed: int = 0):
    """A stock `LlavaLlamaForCausalLM` of geometry `g` with HF's random init (std 0.02),
    on `device` in `dtype` (default float32); on device "meta" it has shapes but no storage (for FLOP counts).
    The vision tower is loaded (a `CLIPVisionModel` built from its config). Nothing is
    downloaded. Returns the model in eval mode with gradients off."""
    import torch
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from transformers import CLIPVisionModel

    dtype = torch.float32 if dtype is None else dtype
    vcfg = clip_config(g.vision)
    old_dtype = torch.get_default_dtype()
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="llava_star_clip_") as tmp:
        vcfg.save_pretrained(tmp)  # llava's tower reads its config from a path (delay_load)
        cfg = llava_config(g, tmp, attn_implementation)
        try:
            torch.set_default_dtype(dtype)
            with torch.device(device):
                model = LlavaLlamaForCausalLM(cfg)
                tower = model.get_vision_tower()
                tower.vision_tower = CLIPVisionModel(vcfg)
        finally:
            torch.set_default_dtype(old_dtype)
    cfg.mm_vision_tower = f"<random {g.name} CLIP>"
    tower.vision_tower.requires_grad_(False)
    tower.is_loaded = True
    model.requires_grad_(False)
    model.generation_config.do_sample = False
    return model.eval()


def build_hf_model(g: Geometry, device="cpu", dtype=None, attn_implementation: str = "sdpa", seed: int = 0):
    """transformers' own `LlavaForConditionalGeneration` of geometry `g` with random weights
    (the hf host's counterpart of `build_model`; transformers 5, nothing downloaded). Its image
    placeholder is the last id of the vocabulary (`config.image_token_id`)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if g.crops != 1:
        raise ValueError(f"geometry {g.name} ({g.crops} crops per image) is theory-only: random-weight models "
                         "are LLaVA-1.5's single-crop layout")
    if g.projector != "mlp2x_gelu":
        raise ValueError(f"geometry {g.name}: transformers' LLaVA projector is mlp2x_gelu, not {g.projector}")
    v = g.vision
    vision = CLIPVisionConfig(image_size=v.image_size, patch_size=v.patch_size, hidden_size=v.hidden,
                              intermediate_size=v.intermediate, num_hidden_layers=v.layers,
                              num_attention_heads=v.heads, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    text = LlamaConfig(vocab_size=g.vocab, hidden_size=g.hidden, intermediate_size=g.intermediate,
                       num_hidden_layers=g.layers, num_attention_heads=g.heads, num_key_value_heads=g.num_kv_heads,
                       max_position_embeddings=g.max_positions, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0, tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=g.vocab - 1,
                      projector_hidden_act="gelu", vision_feature_layer=v.select_layer,
                      vision_feature_select_strategy="default", image_seq_length=v.num_patches,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(cfg, attn_implementation=attn_implementation,
                                                           dtype=dtype or torch.float32)
    model.requires_grad_(False)
    model.generation_config.do_sample = False
    return model.eval()

