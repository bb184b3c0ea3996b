"""Offline benchmark scorers for LLaVA answer files: ``python -m llava_star.eval.score BENCH ...``.

Each benchmark module has a pure scoring function (used by the tests) and a CLI subcommand that
prints a table and, as its last stdout line, one JSON object with the headline numbers.
"""
from .common import InputError
from .gqa import convert_gqa_predictions, score_gqa
from .mme import load_mme_gt, score_mme
from .mmvet import make_mmvet_results
from .pope import score_pope
from .sqa import score_sqa
from .textvqa import score_textvqa
from .vizwiz import make_vizwiz_submission
from .vqa_normalize import normalize_vqa_answer, vqa_accuracy
from .vqav2 import make_vqav2_submission, score_vqav2

__all__ = [
    "InputError", "convert_gqa_predictions", "score_gqa", "load_mme_gt", "score_mme",
    "make_mmvet_results", "score_pope", "score_sqa", "score_textvqa", "make_vizwiz_submission",
    "normalize_vqa_answer", "vqa_accuracy", "make_vqav2_submission", "score_vqav2",
]
