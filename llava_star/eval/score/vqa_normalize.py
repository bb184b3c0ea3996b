"""The VQA answer normalizer and soft accuracy, shared by TextVQA, VQAv2 and VizWiz.

Behaviour follows the EvalAI/VQA normalization that LLaVA uses (llava/eval/m4c_evaluator.py,
EvalAIAnswerProcessor), because the published numbers were computed with it: lowercase, drop
commas and question marks, split "'s", punctuation to space or nothing, drop periods that do not
precede a digit, number words to digits, drop articles, restore apostrophes in contractions.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List

# Contraction table of the official VQA evaluation ("dont" -> "don't" ...), as "without:with"
# pairs. The official table's capitalised keys ("Im", "Ive", "Id've") can never match a
# lowercased word there, so they are left out here rather than changing its behaviour.
_CONTRACTION_PAIRS = """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've
hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's
howd:how'd howll:how'll hows:how's isnt:isn't itd:it'd
itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't
mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've
neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at
'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've
shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd
somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's
someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll
someones:someone's somethingd:something'd somethingd've:something'd've
something'dve:something'd've somethingll:something'll thats:that's thered:there'd
thered've:there'd've there'dve:there'd've therere:there're theres:there's theyd:they'd
theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas
wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll whatre:what're
whats:what's whatve:what've whens:when's whered:where'd wheres:where's whereve:where've whod:who'd
whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll whyre:why're
whys:why's wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've
wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've
y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've you'dve:you'd've
youll:you'll youre:you're youve:you've
"""
CONTRACTIONS: Dict[str, str] = dict(p.split(":", 1) for p in _CONTRACTION_PAIRS.split())

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
# Note: no "." here (handled by _PERIOD) and no "'" (contractions need it).
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!"]
_PERIOD = re.compile(r"\.(?!\d)")              # keep decimal points such as "3.5"
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")


def _punctuation(text: str) -> str:
    out = text
    # As in the official tool: a mark next to a space (or any "1,000"-style number in the
    # answer) is deleted, otherwise it becomes a space ("black-white" -> "black white").
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _digits_articles_contractions(text: str) -> str:
    words = []
    for w in text.lower().split():
        w = NUMBER_WORDS.get(w, w)
        if w not in ARTICLES:
            words.append(CONTRACTIONS.get(w, w))
    return " ".join(words)


def normalize_vqa_answer(answer: str) -> str:
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles_contractions(_punctuation(text))


def vqa_answer_scores(gt_answers: Iterable[str]) -> Dict[str, float]:
    """Soft score of every distinct (normalized) human answer.

    VQA accuracy averages, over the n leave-one-out subsets of the n (=10) human answers,
    min(1, #humans in the subset who gave this answer / 3).
    """
    gts: List[str] = [normalize_vqa_answer(a) for a in gt_answers]
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


def vqa_accuracy(prediction: str, gt_answers: Iterable[str]) -> float:
    """VQA soft accuracy (0..1) of one raw prediction against the raw human answers."""
    return vqa_answer_scores(gt_answers).get(normalize_vqa_answer(prediction), 0.0)
