"""CLI: ``python -m llava_star.eval.score {mme,pope,gqa,textvqa,sqa,vqav2,vizwiz,mmvet} ...``."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import gqa, mme, mmvet, pope, sqa, textvqa, vizwiz, vqav2
from .common import InputError

BENCHMARKS = {
    "mme": (mme, "MME perception/cognition scores from the official ground-truth directory"),
    "pope": (pope, "POPE accuracy/precision/recall/F1 per split and mean F1"),
    "gqa": (gqa, "GQA predictions file and exact-match accuracy"),
    "textvqa": (textvqa, "TextVQA VQA accuracy"),
    "sqa": (sqa, "ScienceQA accuracy and IMG-accuracy"),
    "vqav2": (vqav2, "VQAv2 EvalAI submission file, or local VQA accuracy on val"),
    "vizwiz": (vizwiz, "VizWiz EvalAI submission file"),
    "mmvet": (mmvet, "MM-Vet results file for the GPT-4 grader"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llava_star.eval.score",
        description="Score LLaVA answer files (.jsonl) offline. Each command prints a table and, "
                    "as its last line, a JSON object with the headline numbers. Bad or mismatched "
                    "input exits with status 2 and a message naming the file or flag.")
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except InputError as e:
        sys.stdout.flush()
        print(f"score {args.bench}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
