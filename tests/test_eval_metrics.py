"""Generation metrics on Korean text (seed 000 reported ROUGE 0.000 for Korean answers)."""

import pytest

from workbench.core.metrics import (
    UnicodeWordTokenizer,
    bleu_tokenizer_for,
    corpus_scores,
    exact_match,
    normalize_answer,
    rouge_f1,
)


def test_rouge_score_default_tokenizer_drops_hangul_but_ours_keeps_it():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rouge1"]).score("부가가치세 신고", "부가가치세 신고")
    assert default["rouge1"].fmeasure == 0.0  # the failure mode this module exists to avoid
    assert UnicodeWordTokenizer().tokenize("부가가치세, 신고!") == ["부가가치세", "신고"]
    assert rouge_f1("부가가치세 신고 기한", "부가가치세 신고 기한") == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}


def test_rouge_on_korean_pair_matches_hand_computed_values():
    reference = "부가가치세 신고 기한은 25일 입니다"
    prediction = "부가가치세 신고 기한은 내일 입니다"
    # unigrams: 4 of 5 shared both ways -> P=R=F=0.8; bigrams: (부가가치세 신고), (신고 기한은) of 4 -> 0.5;
    # LCS: 부가가치세 신고 기한은 입니다 = 4 -> 0.8
    scores = rouge_f1(prediction, reference)
    assert scores["rouge1"] == pytest.approx(0.8)
    assert scores["rouge2"] == pytest.approx(0.5)
    assert scores["rougeL"] == pytest.approx(0.8)


def test_rouge_l_uses_longest_common_subsequence_with_unequal_lengths():
    # ref 4 tokens, pred 3 tokens, LCS = "민법 제398조" (2): P=2/3, R=2/4 -> F = 2PR/(P+R) = 4/7
    scores = rouge_f1("민법 제398조 적용", "위약금은 민법 제398조 따름")
    assert scores["rougeL"] == pytest.approx(4 / 7)
    assert scores["rouge2"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_exact_match_normalizes_case_punctuation_and_width():
    assert normalize_answer("  Seoul.  ") == "seoul"
    assert exact_match("ＳＥＯＵＬ!", "seoul") == 1.0
    assert exact_match("서울입니다.", "서울입니다") == 1.0
    assert exact_match("서울", "부산") == 0.0


def test_bleu_uses_char_tokens_for_korean_and_13a_for_english():
    assert bleu_tokenizer_for(["과세기간 종료 후 25일"]) == "char"
    assert bleu_tokenizer_for(["The capital of France is Paris."]) == "13a"
    korean = corpus_scores(["신고 기한은 25일입니다"], ["신고 기한은 25일입니다"])
    assert korean["bleu"] == pytest.approx(100.0)
    assert "tok:char" in korean["bleu_signature"]
    close = corpus_scores(["회사가 위약금을 냅니다"], ["회사는 위약금을 냅니다"])
    assert 0 < close["bleu"] < 100


def test_corpus_scores_average_per_example_and_handle_empty():
    scores = corpus_scores(["서울", "파리"], ["서울", "런던"])
    assert scores["rouge1"] == pytest.approx(0.5)
    assert scores["exact_match"] == pytest.approx(0.5)
    assert corpus_scores([], [])["rouge1"] is None
    with pytest.raises(ValueError):
        corpus_scores(["a"], [])
