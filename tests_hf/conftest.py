"""Test kit of the hf host (transformers 5, no llava-torch): a tiny llava-hf checkpoint built
once per session from configs, real photos, prompts through the checkpoint's own processor."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "tests"))  # tests/reference_rules.py, tests/photos.py: shared with the llava host
from photos import photos  # noqa: E402  (tests/ is on the path now)


@pytest.fixture(scope="session")
def images():
    return photos()


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    from llava_star.tiny_hf import build

    return str(build(tmp_path_factory.mktemp("tiny") / "llava-hf-tiny", seed=0))


@pytest.fixture(scope="session")
def tiny_hf_next(tmp_path_factory):
    from llava_star.tiny_hf import build

    return str(build(tmp_path_factory.mktemp("tiny") / "llava-next-hf-tiny", seed=0, variant="llava-next"))


def load(path: str, attn: str = "sdpa", star=None):
    """(processor, model) via llava_star.hf.load_pretrained (from_pretrained of the class the
    checkpoint's config names), fp32 on CPU; `star`: a MethodConfig to apply."""
    import llava_star.hf

    return llava_star.hf.load_pretrained(path, star=star, device="cpu", attn_implementation=attn)


def prompt(question: str) -> str:
    return f"USER: <image>\n{question} ASSISTANT:"


def inputs(proc, pics, questions):
    """Processor output for a batch (left padding, the processor's side for generation)."""
    proc.tokenizer.padding_side = "left"
    return proc(images=list(pics), text=[prompt(q) for q in questions], return_tensors="pt", padding=True)


def greedy(model, batch, n=6, **kw):
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=n, **kw)
    return out[:, batch["input_ids"].shape[1]:]


def uncached_greedy(model, batch, n):
    """Greedy decoding without a KV cache, every selection pinned to what a prefill of the prompt
    chose (the engine's selector seam): must give the same tokens as cached generation."""
    from llava_star.engine.seams import Recorded, hooks

    recorded = Recorded()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad(), hooks(model, selector=recorded):
        model(**batch, use_cache=False)
    out = []
    with torch.no_grad(), hooks(model, selector=recorded.replay()):
        for _ in range(n):
            extra = {k: batch[k] for k in ("image_sizes",) if k in batch}  # NeXT
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"],
                           use_cache=False, **extra).logits
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    return torch.cat(out, 1)
