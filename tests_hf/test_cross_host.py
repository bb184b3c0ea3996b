"""Both hosts on the same weights: a tiny llava-torch checkpoint (built and run on the llava host
in the main venv, transformers 4.37) converted into the llava-hf layout (llava_star.convert_hf)
and run on the hf host (transformers 5). Every method must keep the same visual tokens at every
stage and generate the same tokens, in fp32: LLaVA-1.5 (LlavaForConditionalGeneration) and
LLaVA-NeXT (anyres: llava's merge vs transformers' pack_image_features, LlavaNextForConditionalGeneration),
on LLaMA for every method and on Mistral for STAR."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, load
from test_hf_host import METHODS
from llava_star import MethodConfig
from llava_star.hf import apply as llava_star_hf_apply

MAIN_PY = REPO / ".venv" / "bin" / "python"
N_NEW = 6  # as tests_hf/llava_side.py
# label -> (method, knobs): every method of the registry, SparseVLM also without recycling
RUNS = {name: (name, kw) for name, kw in METHODS.items()}
RUNS["sparsevlm-norecycle"] = ("sparsevlm", dict(budget=64, recycle=False))
VARIANTS = ("llava-v1.5", "llava-next")
# VisionZip's CLS and merged tokens need one crop per image: both hosts refuse it on NeXT
NOT_ON_NEXT = {"visionzip"}


def runs_for(variant: str) -> dict:
    return {k: v for k, v in RUNS.items() if variant != "llava-next" or v[0] not in NOT_ON_NEXT}
# SparseVLM's recycled tokens are DPC-kNN cluster means; near-duplicate tokens (chelsea has a
# pair 1e-6 apart) once had their order decided by the two hosts' different fp32 kernels:
# cluster_merge ranks densities at 1e-4 with ties by index, so every (method, image) agrees.


def run_llava_side(variant: str, runs: dict, tmp_path_factory):
    """(variant, out dir, results) of tests_hf/llava_side.py run in the llava host's venv."""
    if not MAIN_PY.exists():
        pytest.skip(f"the llava host's venv is missing ({MAIN_PY}); bash scripts/setup.sh makes it")
    out = tmp_path_factory.mktemp("cross")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(MAIN_PY), str(REPO / "tests_hf" / "llava_side.py"), str(out), json.dumps(runs),
                           variant], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return variant, out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module", params=VARIANTS)
def llava_side(request, tmp_path_factory):
    return run_llava_side(request.param, runs_for(request.param), tmp_path_factory)


@pytest.fixture(scope="module")
def converted(llava_side, tmp_path_factory):
    from llava_star.convert_hf import convert

    variant, out, _ = llava_side
    return str(convert(out / f"{variant}-tiny", tmp_path_factory.mktemp("hf") / "converted"))


def hf_inputs(model, results, out, image):
    """The llava prompt's ids with IMAGE_TOKEN_INDEX expanded into as many placeholders as
    llava's merge gave the image (576 for LLaVA-1.5), as transformers' processor lays them out,
    and the very same pixel tensor (NeXT: its crops, and the image size as (height, width))."""
    pixels = torch.load(out / "pixels.pt")[image]
    n = results["runs"][f"none/{image}"]["image_span"][1]
    ids = []
    for t in results["input_ids"]:
        ids.extend([model.config.image_token_id] * n if t == -200 else [t])
    ids = torch.tensor([ids])
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels)
    if pixels.dim() == 5:
        width, height = json.loads((out / "sizes.json").read_text())[image]
        batch["image_sizes"] = torch.tensor([[height, width]])
    return batch


def assert_stock_logits_agree(model, results, out):
    for image, want in results["stock_last_logits"].items():
        with torch.no_grad():
            got = model(**hf_inputs(model, results, out, image)).logits[0, -1, :len(want)]
        torch.testing.assert_close(got, torch.tensor(want), atol=1e-4, rtol=1e-4)


def assert_hosts_agree(model, results, out, label):
    """Per image: the hf run's record (every stage's kept cells, tokens per layer, merged
    counts, image span) and greedy tokens equal the llava host's run `label`."""
    for image in json.loads((out / "sizes.json").read_text()):
        want = results["runs"][f"{label}/{image}"]
        batch = hf_inputs(model, results, out, image)
        with torch.no_grad():
            gen = model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=N_NEW)
        r = model.star_record[0]
        got = {"stage1_kept": r.stage1_kept.tolist(), "final_kept": r.final_kept.tolist(),
               "decoder_kept": [k.tolist() for k in r.decoder_kept], "tokens_per_layer": r.tokens_per_layer,
               "merged": list(r.merged), "image_span": list(r.image_span),
               "tokens": gen[0, batch["input_ids"].shape[1]:].tolist()}
        assert got == want, (label, image)


def test_stock_models_agree(llava_side, converted):
    variant, out, results = llava_side
    _, model = load(converted)
    assert type(model).__name__ == ("LlavaNextForConditionalGeneration" if variant == "llava-next"
                                    else "LlavaForConditionalGeneration")
    assert_stock_logits_agree(model, results, out)


@pytest.mark.parametrize("label", sorted(RUNS))
def test_both_hosts_keep_and_generate_the_same(llava_side, converted, label):
    variant, out, results = llava_side
    if label not in runs_for(variant):
        with pytest.raises(ValueError, match="needs one crop per image"):
            load(converted, star=MethodConfig.from_name(RUNS[label][0], **RUNS[label][1]))
        return
    name, knobs = RUNS[label]
    _, model = load(converted, star=MethodConfig.from_name(name, **knobs))
    assert_hosts_agree(model, results, out, label)


def test_mistral_next_converts_and_both_hosts_agree(tmp_path_factory):
    """LLaVA-NeXT on Mistral (llava_mistral -> LlavaNext with a MistralConfig text model):
    the converted weights give llava's logits, and STAR keeps and generates the same."""
    from llava_star.convert_hf import convert

    runs = {"none": RUNS["none"], "star": RUNS["star"]}
    variant, out, results = run_llava_side("llava-mistral", runs, tmp_path_factory)
    path = str(convert(out / f"{variant}-tiny", tmp_path_factory.mktemp("hf") / "converted"))
    _, model = load(path)
    assert model.config.text_config.model_type == "mistral"
    assert_stock_logits_agree(model, results, out)
    llava_star_hf_apply(model, MethodConfig.from_name(RUNS["star"][0], **RUNS["star"][1]))
    assert_hosts_agree(model, results, out, "star")
