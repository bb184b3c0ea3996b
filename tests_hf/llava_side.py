"""The llava host's half of the cross-host test; runs in the main venv (llava-torch,
transformers 4.37): builds a tiny llava-torch checkpoint, runs every method through llava's
builder on real photos and writes what each kept and generated.

    .venv/bin/python tests_hf/llava_side.py OUT_DIR RUNS_JSON [VARIANT]

VARIANT is llava-v1.5 (default) or llava-next (anyres). OUT_DIR gets <VARIANT>-tiny/ (the
checkpoint), pixels.pt (the exact image tensors; NeXT: each image's crops), sizes.json (each
image's PIL (width, height)) and
results.json (RUNS_JSON: {label: [method, knobs]}; input ids with llava's IMAGE_TOKEN_INDEX, per method and image: every stage's kept
cells, tokens per layer, merged counts, the greedy tokens; stock last-token logits).
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import greedy, load_star, load_stock, new_tokens, photos, prompt_ids  # noqa: E402

QUESTION = "Is there a cat in the image? Answer the question using a single word or phrase."
IMAGES = ("coffee", "chelsea")
N_NEW = 6


def main(out: Path, methods: dict, variant: str = "llava-v1.5") -> None:
    from llava.mm_utils import process_images

    from llava_star import MethodConfig, apply_star
    from llava_star.tiny import build

    torch.set_num_threads(2)
    path = str(build(out / f"{variant}-tiny", variant=variant, seed=0, force=True))
    tok, stock, proc = load_stock(path)
    ids = prompt_ids(tok, QUESTION)[None]
    pics = {n: process_images([photos()[n]], proc, stock.config).float() for n in IMAGES}
    sizes = {n: list(photos()[n].size) for n in IMAGES}
    torch.save(pics, out / "pixels.pt")
    (out / "sizes.json").write_text(json.dumps(sizes))
    with torch.no_grad():
        logits = {n: stock(ids, images=px, image_sizes=[sizes[n]]).logits[0, -1].tolist() for n, px in pics.items()}
    results = {"input_ids": ids[0].tolist(), "stock_last_logits": logits, "runs": {}}
    _, model, _ = load_star(path, star=MethodConfig.from_name("none"))
    for label, (name, kw) in methods.items():
        apply_star(model, MethodConfig.from_name(name, **kw))  # replaces the plan
        for image, px in pics.items():
            toks = new_tokens(greedy(model, ids, px, n=N_NEW, image_sizes=[sizes[image]])[0], tok.bos_token_id)
            r = model.star_record[0]
            results["runs"][f"{label}/{image}"] = {
                "tokens": toks, "stage1_kept": r.stage1_kept.tolist(), "final_kept": r.final_kept.tolist(),
                "decoder_kept": [k.tolist() for k in r.decoder_kept], "tokens_per_layer": r.tokens_per_layer,
                "merged": list(r.merged), "image_span": list(r.image_span)}
    (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]), *sys.argv[3:4])
