"""llava's `model_vqa_science` with pruning: ScienceQA.

    python -m llava_star.eval.model_vqa_science --model-path liuhaotian/llava-v1.5-7b \\
        --question-file eval/scienceqa/llava_test_CQM-A.json --image-folder eval/scienceqa/images/test \\
        --answers-file eval/scienceqa/answers/llava-v1.5-7b_star-b58.jsonl --single-pred-prompt \\
        --temperature 0 --conv-mode vicuna_v1 --method star --budget 58

Question file: a JSON list of {id, conversations: [{value}, ...], image (optional)}, llava's
format. As in llava: the question is the first turn without "<image>"; questions with an image
get the image token and the prompt "<image>\\n..."; --single-pred-prompt appends "Answer with
the option's letter from the given choices directly."; images are not converted to RGB before
process_images; up to 1024 new tokens (--max_new_tokens). Text-only questions run without an
image (metadata counts 0).
"""
from __future__ import annotations

import sys

from .command_line import SCIENCE_SINGLE_PRED, build_parser
from .inputs import InputError
from .questions import Item, image_field, read_json_questions
from .run_loop import main_wrapper, run

PROG = "python -m llava_star.eval.model_vqa_science"


def parser():
    return build_parser(PROG, __doc__, question_file="tables/question.json", conv_mode="llava_v0",
                        max_new_tokens=1024, sampling_flags=False, science=True)


def items_from(path, single_pred_prompt: bool):
    items = []
    for i, line in enumerate(read_json_questions(path)):
        try:
            qid = line["id"]
            value = line["conversations"][0]["value"]
            image = image_field(line, path, f"entry {i}", optional=True)
        except (KeyError, IndexError, TypeError):
            raise InputError(f"--question-file {path}, entry {i}: expected id and "
                             f"conversations[0].value (llava's ScienceQA format)") from None
        qs = value.replace("<image>", "").strip()
        prompt = qs
        if image is not None:
            prompt = "<image>\n" + prompt
        if single_pred_prompt:
            qs = qs + "\n" + SCIENCE_SINGLE_PRED
            prompt = prompt + "\n" + SCIENCE_SINGLE_PRED
        items.append(Item(qid=qid, prompt=prompt, query=qs, image=image, line=i, convert_rgb=False))
    return items


def gen_kwargs(args):
    return dict(do_sample=args.temperature > 0, temperature=args.temperature,
                max_new_tokens=args.max_new_tokens, use_cache=True)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.answer_prompter:
        print(f"{PROG}: note: --answer-prompter has no effect (as in llava 1.2.2's model_vqa_science)",
              file=sys.stderr)
    return main_wrapper(PROG, lambda: run(args, items_from(args.question_file, args.single_pred_prompt),
                                          args.question_file, gen_kwargs, PROG))


if __name__ == "__main__":
    sys.exit(main())
