"""VQA answer normalisation and the 10-answer VQA accuracy, as the official scorers compute them.

Two normalisers, kept apart because they differ slightly and the numbers depend on it:
- `normalize_vqa_answer`: the official `vqaEval.py` (VQAv2, VizWiz servers).
- `evalai_process`: mmf's `EvalAIAnswerProcessor`, which LLaVA applies to predictions before a
  VQAv2/VizWiz submission and TextVQA applies to predictions and human answers alike.

Quirks kept on purpose: the period regex has a typo'd lookbehind (`(?!<=\\d)`, so every period not
followed by a digit goes), and it is called as `sub("", text, re.UNICODE)`, whose third positional
argument is the replacement *count* (32).
"""

from __future__ import annotations

import re

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
PERIOD_STRIP_COUNT = re.UNICODE  # the official call passes the flag where `count` goes
VQA_EVAL_COMMA = re.compile(r"(\d)(\,)(\d)")
EVALAI_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")
HUMAN_MATCHES_FOR_FULL_CREDIT = 3


def _process_punctuation(text: str, comma_between_digits: re.Pattern) -> str:
    out = text
    delete_all = comma_between_digits.search(text) is not None
    for mark in PUNCTUATION:
        if delete_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """Official `vqaEval.py` normalisation (whitespace, punctuation, digits, articles, contractions)."""
    return _process_digit_article(_process_punctuation(_clean_whitespace(text), VQA_EVAL_COMMA))


def evalai_process(text: str) -> str:
    """mmf's `EvalAIAnswerProcessor`: lowercase, drop `,` and `?`, split `'s`, then as `vqaEval`."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return _process_digit_article(_process_punctuation(_clean_whitespace(text), EVALAI_COMMA))


def vqa_soft_score(prediction: str, human_answers: list[str]) -> float:
    """Mean over the human answers of min(1, matches among the *other* answers / 3), compared verbatim.

    Needs at least one human answer: the official scorers fail without (mmf asserts 10, `vqaEval.py`
    divides by their number), so the scorers here raise naming the question instead of skipping it.
    """
    if not human_answers:
        raise ValueError("the VQA accuracy needs at least one human answer")
    matches = sum(answer == prediction for answer in human_answers)
    per_held_out = [
        min(1.0, (matches - (answer == prediction)) / HUMAN_MATCHES_FOR_FULL_CREDIT)
        for answer in human_answers
    ]
    return sum(per_held_out) / len(per_held_out)


def vqav2_accuracy(prediction: str, human_answers: list[str]) -> float:
    """Official VQAv2 rule: normalise only when the human answers are not all identical."""
    prediction = _clean_whitespace(prediction)
    human_answers = [_clean_whitespace(answer) for answer in human_answers]
    if len(set(human_answers)) > 1:
        prediction = normalize_vqa_answer(prediction)
        human_answers = [normalize_vqa_answer(answer) for answer in human_answers]
    return vqa_soft_score(prediction, human_answers)


def vizwiz_accuracy(prediction: str, human_answers: list[str]) -> float:
    """Official VizWiz rule: the prediction is always normalised, the human answers never."""
    return vqa_soft_score(normalize_vqa_answer(prediction), human_answers)


def textvqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """TextVQA (mmf `TextVQAAccuracyEvaluator`): `evalai_process` on prediction and human answers."""
    return vqa_soft_score(evalai_process(prediction), [evalai_process(answer) for answer in human_answers])
