"""Generation metrics that work on Korean: ROUGE-1/2/L F1, BLEU, chrF, exact match.

rouge-score's default tokenizer lowercases and then deletes every character outside [a-z0-9], so a
Korean prediction and its identical reference both become empty and score 0 (seed 000's "ROUGE 0.000").
`UnicodeWordTokenizer` keeps every Unicode letter and digit (Hangul included) and splits on whitespace
and punctuation, which for Korean gives eojeol (word + particle) units.

BLEU tokenization: sacrebleu's default `13a` splits on whitespace like the ROUGE tokenizer; on Korean an
eojeol differs as soon as its particle does (회사는 / 회사가), so word 4-grams almost never match and BLEU
collapses to ~0 for answers a reader would call close. `flores200`/`spm` need a SentencePiece model
downloaded at first use and `ko-mecab` a native morphological analyser — neither is available offline on
a GPU box. `char` needs nothing and gives partial credit inside eojeols, so references containing Hangul
(or other scripts written without spaces between morphemes) use `char`; all-Latin references keep `13a`,
the standard for English. The chosen tokenizer is recorded in the sacrebleu signature.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from typing import Any, Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# Hangul syllables/jamo, CJK ideographs, kana: scripts where a whitespace unit is much longer than a word.
_DENSE_SCRIPT = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7af]")
_NON_WORD = re.compile(r"[^\w]+")


class UnicodeWordTokenizer:
    """rouge-score tokenizer (duck-typed `.tokenize`) that keeps Hangul and every other letter."""

    def tokenize(self, text: str) -> list[str]:
        normalized = unicodedata.normalize("NFKC", text or "").casefold()
        return [token for token in _NON_WORD.sub(" ", normalized.replace("_", " ")).split() if token]


def normalize_answer(text: str) -> str:
    """For exact match: NFKC, case-folded, punctuation removed, whitespace collapsed."""
    normalized = unicodedata.normalize("NFKC", text or "").casefold()
    without_punct = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in normalized)
    return " ".join(without_punct.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=UnicodeWordTokenizer())


def rouge_f1(prediction: str, reference: str, scorer=None) -> dict[str, float]:
    scores = (scorer or _scorer()).score(reference, prediction)
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}


def bleu_tokenizer_for(references: Sequence[str]) -> str:
    return "char" if any(_DENSE_SCRIPT.search(ref or "") for ref in references) else "13a"


def example_scores(prediction: str, reference: str, scorer=None) -> dict[str, float]:
    return {**rouge_f1(prediction, reference, scorer), "exact_match": exact_match(prediction, reference)}


def scores_per_example(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    scorer = _scorer()
    return [example_scores(p, r, scorer) for p, r in zip(predictions, references)]


def corpus_scores(predictions: Sequence[str], references: Sequence[str],
                  per_example: Sequence[dict[str, float]] | None = None) -> dict[str, Any]:
    """Mean per-example ROUGE F1 and exact match (from `per_example` when the caller has them), corpus BLEU
    and chrF (0-100, sacrebleu's scale)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return {name: None for name in (*ROUGE_TYPES, "exact_match", "bleu", "chrf")} | {"bleu_signature": None}
    from sacrebleu.metrics import BLEU, CHRF

    if per_example is None:
        per_example = scores_per_example(predictions, references)
    result: dict[str, Any] = {
        name: statistics.fmean(scores[name] for scores in per_example) for name in (*ROUGE_TYPES, "exact_match")
    }
    bleu = BLEU(tokenize=bleu_tokenizer_for(references), effective_order=True)
    result["bleu"] = bleu.corpus_score(list(predictions), [list(references)]).score
    result["bleu_signature"] = str(bleu.get_signature())
    result["chrf"] = CHRF().corpus_score(list(predictions), [list(references)]).score
    return result
