"""The VQA answer normalizer and soft accuracy, shared by TextVQA, VQAv2 and VizWiz.

The normalizer is llava's own (`llava/eval/m4c_evaluator.py`, EvalAIAnswerProcessor, the
one LLaVA's eval_textvqa and convert_{vqav2,vizwiz}_for_submission call), so our numbers are
LLaVA's, quirks included:

- LLaVA quirk "32 periods": its `PERIOD_STRIP.sub("", text, re.UNICODE)` passes re.UNICODE
  (32) as sub's *count*, so at most 32 periods are stripped from an answer. The official VQA
  tool has the same line. `strip_all_periods=True` (the scorers' --strip-all-periods) strips
  every period not before a digit, as intended.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from typing import Dict, Iterable, List


@lru_cache(maxsize=None)
def _m4c_evaluator():
    """llava.eval.m4c_evaluator, the installed file, loaded on its own: importing it the usual
    way runs llava/__init__, which imports torch and the model classes (seconds) for a module
    that needs only `re` and `tqdm`."""
    name = "llava.eval.m4c_evaluator"
    if name in sys.modules:
        return sys.modules[name]
    llava = importlib.util.find_spec("llava")
    if llava is None or not llava.submodule_search_locations:
        raise ImportError("llava (llava-torch) is not installed; its m4c_evaluator is the VQA normalizer")
    path = os.path.join(list(llava.submodule_search_locations)[0], "eval", "m4c_evaluator.py")
    spec = importlib.util.spec_from_file_location("_llava_m4c_evaluator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=None)
def _processor(strip_all_periods: bool):
    processor_class = _m4c_evaluator().EvalAIAnswerProcessor
    if not strip_all_periods:
        return processor_class()

    class AllPeriods(processor_class):
        def process_punctuation(self, in_text):
            # llava's pass strips the first 32 periods; the same pattern over what is left
            # strips the rest exactly as one uncapped pass would.
            out = super().process_punctuation(in_text)
            return self.PERIOD_STRIP.sub("", out)

    return AllPeriods()


def normalize_vqa_answer(answer: str, strip_all_periods: bool = False) -> str:
    return _processor(strip_all_periods)(answer)


def vqa_answer_scores(gt_answers: Iterable[str], strip_all_periods: bool = False) -> Dict[str, float]:
    """Soft score of every distinct (normalized) human answer.

    VQA accuracy averages, over the n leave-one-out subsets of the n (=10) human answers,
    min(1, #humans in the subset who gave this answer / 3).
    """
    gts: List[str] = [normalize_vqa_answer(a, strip_all_periods) for a in gt_answers]
    n = len(gts)
    if n == 0:
        return {}
    scores = {}
    for cand in set(gts):
        matches = gts.count(cand)
        # Leaving out a human who gave `cand` leaves matches-1, anyone else leaves matches.
        total = matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)
        scores[cand] = total / n
    return scores


def vqa_accuracy(prediction: str, gt_answers: Iterable[str], strip_all_periods: bool = False) -> float:
    """VQA soft accuracy (0..1) of one raw prediction against the raw human answers."""
    scores = vqa_answer_scores(gt_answers, strip_all_periods)
    return scores.get(normalize_vqa_answer(prediction, strip_all_periods), 0.0)
