"""llava's `model_vqa` with pruning: open-ended benchmarks (MM-Vet, LLaVA-Bench).

    python -m llava_star.eval.model_vqa --model-path liuhaotian/llava-v1.5-7b \\
        --question-file eval/mm-vet/llava-mm-vet.jsonl --image-folder eval/mm-vet/images \\
        --answers-file eval/mm-vet/answers/llava-v1.5-7b_star-b58.jsonl --temperature 0 \\
        --conv-mode vicuna_v1 --method star --budget 58

Question file: JSON lines with question_id, image, text. llava's model_vqa generates up to 1024
tokens; that is --max_new_tokens' default here. Answers file and metadata as
model_vqa_loader's.
"""
from __future__ import annotations

import sys

from .command_line import build_parser
from .model_vqa_loader import gen_kwargs, items_from  # same question format and generate call
from .run_loop import main_wrapper, run

PROG = "python -m llava_star.eval.model_vqa"


def parser():
    return build_parser(PROG, __doc__, question_file="tables/question.jsonl", conv_mode="llava_v1",
                        max_new_tokens=1024, sampling_flags=True)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return main_wrapper(PROG, lambda: run(args, items_from(args.question_file), args.question_file,
                                          gen_kwargs, PROG))


if __name__ == "__main__":
    sys.exit(main())
