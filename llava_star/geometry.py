"""Model geometries (layer counts and widths) for FLOPs theory and random-weight models.

A `Geometry` holds what the FLOPs formulas and the benchmark need: the language model
(layers, hidden size d, FFN intermediate m, heads, vocabulary), the CLIP vision tower and
the projector, and how many crops of the 576-patch grid one image becomes (1 for
LLaVA-1.5, 5 for LLaVA-NeXT's 672x672 2x2 setting: the base image plus four tiles).

`build_model(geometry, device, dtype)` builds a `LlavaLlamaForCausalLM` of that geometry
with random weights (or no weights at all on device "meta"), with nothing downloaded:
the CLIP tower is a `CLIPVisionModel` built from a config, not `from_pretrained`.
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
