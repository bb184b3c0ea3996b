"""llava's `model_vqa_loader` with pruning: short-answer benchmarks (MME, POPE, GQA, VQAv2,
TextVQA, VizWiz, ...).

    python -m llava_star.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-7b \\
        --question-file eval/MME/llava_mme.jsonl --image-folder eval/MME/MME_Benchmark_release_version \\
        --answers-file eval/MME/answers/llava-v1.5-7b_star-b58.jsonl --temperature 0 --conv-mode vicuna_v1 \\
        --allow-duplicate-ids --method star --budget 58

Question file: JSON lines with question_id, image, text (llava's format). Prompts, image
processing (RGB, llava's process_images) and the answers file are llava's; `metadata` holds
the pruning record of the question: method, budget, visual_tokens (before pruning),
stage1_kept, final_kept, t_eq (unpruned counts for --method none). Re-running resumes (only
with the settings that made the file: <answers>.settings.json); see
llava_star/eval/answers_file.py for the guarantees. A llava-hf checkpoint runs on the hf host
(--host auto or hf; transformers 5, .venv-hf): prompts and images then go through its own
processor and chat template, into the same answers file (llava_star/eval/hf_side.py).
"""
from __future__ import annotations

import sys

from .command_line import build_parser
from .questions import Item, image_field, read_jsonl_questions
from .run_loop import main_wrapper, run

PROG = "python -m llava_star.eval.model_vqa_loader"


def parser():
    return build_parser(PROG, __doc__, question_file="tables/question.jsonl", conv_mode="llava_v1",
                        max_new_tokens=128, sampling_flags=True)


def items_from(path):
    return [Item(qid=q["question_id"], prompt=q["text"], query=q["text"],
                 image=image_field(q, path, f"line {n}", optional=False), line=n)
            for n, q in read_jsonl_questions(path, ("question_id", "image", "text"))]


def plain_conv_mode(args, model_name):
    """llava's switch to the mmtag template for plain (pretrain-only) checkpoints."""
    if "plain" in model_name and "finetune" not in model_name.lower() and "mmtag" not in args.conv_mode:
        args.conv_mode = args.conv_mode + "_mmtag"
        print(f"It seems that this is a plain model, but it is not using a mmtag prompt, "
              f"auto switching to {args.conv_mode}.", file=sys.stderr)


def gen_kwargs(args):
    return dict(do_sample=args.temperature > 0, temperature=args.temperature, top_p=args.top_p,
                num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, use_cache=True)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return main_wrapper(PROG, lambda: run(args, items_from(args.question_file), args.question_file,
                                          gen_kwargs, PROG, adjust_conv_mode=plain_conv_mode))


if __name__ == "__main__":
    sys.exit(main())
