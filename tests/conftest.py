"""Test kit: tiny checkpoints built once per session, real photos, stock-llava helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from photos import photos  # noqa: F401  (re-exported: tests import it from conftest)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLAVA_STAR_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Build-on-first-use cache: tiny_dir('llava-v1.5') -> path of that checkpoint."""
    from llava_star.tiny import build

    root = tmp_path_factory.mktemp("tiny")
    built = {}

    def get(variant: str = "llava-v1.5") -> str:
        if variant not in built:
            name = {"llava-v1.5": "llava-v1.5-tiny", "llava-next": "llava-v1.6-next-tiny",
                    "llava-mistral": "llava-v1.6-mistral-tiny"}[variant]
            built[variant] = str(build(root / name, variant=variant, seed=0))
        return built[variant]

    return get


@pytest.fixture(scope="session")
def tiny15(tiny_dir):
    return tiny_dir("llava-v1.5")


@pytest.fixture(scope="session")
def images():
    return photos()


def prompt_ids(tokenizer, question: str, conv_mode: str = "vicuna_v1"):
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + question)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")


def batch_inputs(tokenizer, processor, model, pil_images, questions, side="left"):
    """Padded input ids, attention mask and image tensor for a batch (one image each)."""
    from llava.mm_utils import process_images

    ids = [prompt_ids(tokenizer, q) for q in questions]
    n = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), n), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, x in enumerate(ids):
        sl = slice(n - len(x), n) if side == "left" else slice(0, len(x))
        input_ids[i, sl] = x
        mask[i, sl] = 1
    pixels = process_images(pil_images, processor, model.config).to(model.dtype)
    return input_ids, mask, pixels


def load_stock(path: str, attn: str | None = None):
    """Stock llava through its own builder, cast to fp32 on CPU (the builder forces fp16)."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    kw = {"attn_implementation": attn} if attn else {}
    from llava_star.patches import builder_loads_in
    with builder_loads_in(torch.float32):
        tok, model, proc, _ = load_pretrained_model(path, None, get_model_name_from_path(path), device="cpu", **kw)
    return tok, model.float().eval(), proc


def load_star(path: str, star=None, attn: str | None = None):
    from llava_star import load_pretrained_model

    tok, model, proc, _ = load_pretrained_model(path, None, None, star=star, device="cpu",
                                                attn_implementation=attn)
    return tok, model, proc


def greedy(model, input_ids, pixels, attention_mask=None, n=6, **kw):
    with torch.no_grad():
        return model.generate(input_ids, images=pixels, attention_mask=attention_mask, do_sample=False,
                              num_beams=1, max_new_tokens=n, use_cache=True, **kw)


def new_tokens(out_row, bos: int = 1):
    """generate() with inputs_embeds returns [BOS] + new tokens in transformers 4.37."""
    toks = out_row.tolist()
    return toks[1:] if toks and toks[0] == bos else toks


def uncached_greedy(model, ids, pixels, n, **kw):
    """Greedy decoding without a KV cache: the whole prefix is recomputed every step, pruning
    included, with every selection pinned to what a prefill of `ids` chooses (the engine's
    selector seam), so it must produce the same tokens as cached generation."""
    from llava_star.engine.seams import Recorded, hooks

    seq, out = ids, []
    recorded = Recorded()
    with torch.no_grad(), hooks(model, selector=recorded):
        model(ids, images=pixels, use_cache=False, **kw)
    with torch.no_grad(), hooks(model, selector=recorded.replay()):
        for _ in range(n):
            nxt = int(model(seq, images=pixels, use_cache=False, **kw).logits[0, -1].argmax())
            out.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], 1)
    return out
