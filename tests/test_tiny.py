"""Foundation: tiny checkpoints load through llava's own builder and generate."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import load_stock, prompt_ids


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("variant", ["llava-v1.5", "llava-next", "llava-mistral"])
def test_variant_loads_with_llava_builder_and_generates(tiny_dir, images, variant):
    from llava.mm_utils import process_images

    path = tiny_dir(variant)
    tok, model, proc = load_stock(path)
    expected = {"llava-v1.5": "LlavaLlamaForCausalLM", "llava-next": "LlavaLlamaForCausalLM",
                "llava-mistral": "LlavaMistralForCausalLM"}[variant]
    assert type(model).__name__ == expected
    tower = model.get_vision_tower()
    assert tower.num_patches == 576 and tower.config.image_size == 336 and tower.config.patch_size == 14
    assert model.config.mm_vision_select_layer == -2
    image = images["chelsea"] if variant != "llava-v1.5" else images["astronaut"]
    pixels = process_images([image], proc, model.config).float()
    ids = prompt_ids(tok, "What animal is this?", "mistral_instruct" if "mistral" in variant else "vicuna_v1")[None]
    with torch.no_grad():
        out = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False,
                             max_new_tokens=5, use_cache=True)
    # with inputs_embeds, transformers 4.37 starts the returned ids with the BOS token
    assert out.shape[0] == 1 and out[0, 0] == tok.bos_token_id and 2 <= out.shape[1] <= 6


def test_next_anyres_non_square_image(tiny_dir, images):
    """A 451x300 photo becomes base + grid crops, and the merged sequence carries the unpadded
    grid plus newline tokens (more than 576 visual tokens)."""
    from llava.mm_utils import process_images

    tok, model, proc = load_stock(tiny_dir("llava-next"))
    assert model.config.image_aspect_ratio == "anyres"
    assert model.config.mm_patch_merge_type == "spatial_unpad"
    image = images["chelsea"]
    pixels = process_images([image], proc, model.config)
    assert pixels.ndim == 5 and pixels.shape[1] > 1  # [1, crops, 3, 336, 336]
    ids = prompt_ids(tok, "What is this?")[None]
    out = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels.float(), [image.size])
    n_visual = out[4].shape[1] - (ids.shape[1] - 1)
    assert n_visual > 576


def test_tokenizer_round_trips_conversation(tiny15):
    from llava.conversation import conv_templates
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny15, use_fast=False)
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "Is there a dog in the image? Ünïcode ✓ 42")
    conv.append_message(conv.roles[1], "Yes.")
    text = conv.get_prompt()
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert tok.decode(ids, skip_special_tokens=False).replace("<s> ", "").replace("<s>", "") == text
    assert tok.pad_token == "<unk>"


def test_same_seed_builds_are_byte_identical(tmp_path):
    from llava_star.tiny import build

    a = build(tmp_path / "a" / "llava-tiny", seed=3)
    first = _digest(a)
    build(a, seed=3, force=True)
    assert _digest(a) == first
    b = build(tmp_path / "b" / "llava-tiny", seed=3)
    other = _digest(b)
    # identical except config.json, which names its own vision tower's absolute path
    assert {k: v for k, v in other.items() if k != "config.json"} == \
           {k: v for k, v in first.items() if k != "config.json"}
    c = build(tmp_path / "c" / "llava-tiny", seed=4)
    assert _digest(c)["model.safetensors"] != first["model.safetensors"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "llava_star.tiny", *args], capture_output=True, text=True)


def test_cli_refuses_non_empty_dir_and_unknown_variant(tmp_path):
    target = tmp_path / "llava-x"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    r = _cli(str(target))
    assert r.returncode == 2 and "not empty" in r.stderr and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (target / "keep.txt").exists()
    r = _cli(str(tmp_path / "llava-y"), "--variant", "llava-v9")
    assert r.returncode == 2 and "unknown --variant 'llava-v9'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli(str(tmp_path / "tiny-no-name"))
    assert r.returncode == 2 and "must contain 'llava'" in r.stderr
    (tmp_path / "llava-file").write_text("")
    r = _cli(str(tmp_path / "llava-file"), "--force")
    assert r.returncode == 2 and "not a directory" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "llava-file").is_file()


def test_checkpoint_files_are_readable_by_others(tiny15):
    """safetensors writes 0600; the builder gives every file the umask's mode (issue 13)."""
    import os
    import stat
    from pathlib import Path

    umask = os.umask(0)
    os.umask(umask)
    for f in Path(tiny15).rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
