"""ROUGE-L, BLEU and exact match against hand-computed and published reference values."""

from __future__ import annotations

import math

import pytest

from common.text_metrics import (
    BleuStats,
    GenerationScores,
    bleu_stats,
    exact_match,
    normalize_answer,
    rouge_l,
)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # LCS "the cat on mat" = 4 tokens: P = 4/4, R = 4/6, F = 2PR/(P+R) = 0.8
        ("the cat on mat", "the cat sat on the mat", 0.8),
        # LCS "a c e" = 3 of 5 tokens each way (a subsequence, not a substring): F = 0.6
        ("a x c y e", "a b c d e", 0.6),
        # order matters for a subsequence: LCS of "e d c b a" and "a b c d e" is 1: F = 0.2
        ("e d c b a", "a b c d e", 0.2),
        ("The Cat, sat!", "the cat sat", 1.0),  # case and punctuation are not tokens
        ("dog", "the cat sat", 0.0),
        # Unicode words count (rouge-score's default tokenizer would drop "café"):
        # P = 1/1, R = 1/3, F = 0.5
        ("café", "café au lait", 0.5),
    ],
)
def test_rouge_l_equals_the_lcs_f_measure(prediction: str, reference: str, expected: float) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-12)


def test_bleu_matches_sacrebleus_published_example() -> None:
    """The example in sacrebleu's README: BLEU = 48.53 (two reference streams)."""
    hypotheses = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    references = [
        ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
    ]
    stats = bleu_stats(hypotheses, references)
    assert stats.score() == pytest.approx(48.53, abs=0.005)
    assert (stats.sys_len, stats.ref_len) == (17, 18)


def test_bleu_by_hand_brevity_penalty_only() -> None:
    """Every n-gram of "a b c d e" is in "a b c d e f": precisions 1, BP = exp(1 - 6/5)."""
    stats = bleu_stats(["a b c d e"], [["a b c d e f"]])
    assert stats.counts == stats.totals == [5, 4, 3, 2]
    assert stats.score() == pytest.approx(100 * math.exp(-0.2), abs=1e-9)
    assert bleu_stats(["a b c d e"], [["a b c d e"]]).score() == pytest.approx(100.0)
    assert BleuStats().score() == 0.0


def test_pooled_statistics_give_the_corpus_score() -> None:
    """Two clients' statistics summed score exactly as the pooled corpus does."""
    a_hyp = ["the quick brown fox jumps over the dog", "order number 12345 is late"]
    a_ref = ["the quick brown fox jumped over the lazy dog", "my order number 12345 is late"]
    b_hyp, b_ref = ["a b c d e f", "billing"], ["a b c d e f g h", "billing"]
    left = GenerationScores.of(a_hyp, a_ref)
    right = GenerationScores.of(b_hyp, b_ref)
    pooled = GenerationScores.of(a_hyp + b_hyp, a_ref + b_ref)
    merged = left + right
    assert merged.metrics() == pytest.approx(pooled.metrics(), abs=1e-12)
    assert merged.metrics()["exact_match"] == 0.25  # only "billing" matches exactly
    mean_of_bleus = (left.metrics()["bleu"] + right.metrics()["bleu"]) / 2
    assert merged.metrics()["bleu"] != pytest.approx(mean_of_bleus)  # why we pool statistics
    # What a client sends (flat scalars) rebuilds the same statistics.
    assert GenerationScores.from_scalars(left.to_scalars()) == left
    assert GenerationScores.from_scalars({"gen_examples": 1.0}) is None


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("The Billing.", "billing", 1.0),
        ("  an   answer ", "Answer", 1.0),
        ("ORD-123", "ord123", 1.0),  # punctuation removed, as in SQuAD
        ("billing technical", "billing", 0.0),
        ("", "billing", 0.0),
    ],
)
def test_exact_match_normalises_like_squad(
    prediction: str, reference: str, expected: float
) -> None:
    assert exact_match(prediction, reference) == expected


def test_normalize_answer() -> None:
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
