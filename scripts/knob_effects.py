"""How much a method's official-rule knobs change what it keeps (the numbers in docs/methods.md).

    .venv/bin/python scripts/knob_effects.py CHECKPOINT   # e.g. python -m llava_star.tiny /tmp/llava-tiny

For each (method, knob change), over four scikit-image photos and one question: how many kept
grid cells differ at each decoder stage (half the symmetric difference, summed over photos),
out of how many the default keeps. Stage 1 never differs: a knob acts from the first drop on.
"""
import argparse

import torch
from PIL import Image
from skimage import data

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import process_images, tokenizer_image_token
from llava_star import MethodConfig, apply_star, load_pretrained_model
from llava_star.prompting import build_prompt

CHANGES = [("pdrop", 58, {}, {"positions": "original"}),
           ("sparsevlm", 64, {"recycle": False}, {"recycle": False, "positions": "original"}),
           ("sparsevlm", 64, {}, {"recycle": False})]
QUESTION = "What is in the image? Describe the main object and its colour."


def kept_sets(model, tok, proc, cfg):
    apply_star(model, cfg)
    ids = tokenizer_image_token(build_prompt(QUESTION, "vicuna_v1"), tok, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    out = []
    for photo in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket()):
        image = Image.fromarray(photo)
        with torch.inference_mode():
            model(input_ids=ids, images=process_images([image], proc, model.config), image_sizes=[image.size])
        out.append([set(k.tolist()) for k in model.star_record[0].decoder_kept])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    args = p.parse_args()
    tok, model, proc, _ = load_pretrained_model(args.checkpoint, star=MethodConfig.from_name("none"))
    for name, budget, base, change in CHANGES:
        a = kept_sets(model, tok, proc, MethodConfig.from_name(name, budget, **base))
        b = kept_sets(model, tok, proc, MethodConfig.from_name(name, budget, **change))
        stages = [f"{sum(len(x[s] ^ y[s]) // 2 for x, y in zip(a, b))}/{sum(len(x[s]) for x in a)}"
                  for s in range(len(a[0]))]
        print(f"| {name}@{budget} | {base or 'defaults'} -> {change} | {', '.join(stages)} |")


if __name__ == "__main__":
    main()
