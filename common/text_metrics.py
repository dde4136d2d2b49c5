"""Scores of generated answers against references: ROUGE-L, BLEU and exact match.

The scores come from the packages the field reports with (``rouge-score`` for ROUGE-L,
``sacrebleu`` for BLEU), so numbers are comparable with published ones. Two choices are
ours, both so that federated evaluation is *exact* rather than an average of averages:

* every score is kept as sufficient statistics (sums for ROUGE-L and exact match,
  sacrebleu's n-gram match counts and lengths for BLEU); merging two clients' statistics
  and then scoring gives the score of the pooled corpus, bit for bit;
* ROUGE-L tokenises Unicode-aware (lowercase ``\\w+`` runs) instead of rouge-score's
  default ASCII-only tokenizer, which scores every non-English answer as empty.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NGRAM_ORDER = 4  # BLEU-4, sacrebleu's default
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_WORD = re.compile(r"\w+", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


class _UnicodeWords:
    """A rouge-score tokenizer: lowercase runs of word characters in any script."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


_SCORER = None


def _rouge_scorer():  # type: ignore[no-untyped-def]
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeWords())
    return _SCORER


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens), in [0, 1]."""
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


@dataclass
class BleuStats:
    """sacrebleu's sufficient statistics of a corpus: n-gram matches, totals, lengths."""

    counts: list[int] = field(default_factory=lambda: [0] * NGRAM_ORDER)
    totals: list[int] = field(default_factory=lambda: [0] * NGRAM_ORDER)
    sys_len: int = 0
    ref_len: int = 0

    def __add__(self, other: BleuStats) -> BleuStats:
        return BleuStats(
            [a + b for a, b in zip(self.counts, other.counts, strict=True)],
            [a + b for a, b in zip(self.totals, other.totals, strict=True)],
            self.sys_len + other.sys_len,
            self.ref_len + other.ref_len,
        )

    def score(self) -> float:
        """Corpus BLEU (0-100) from the statistics, with sacrebleu's default smoothing."""
        from sacrebleu.metrics import BLEU

        if self.sys_len == 0:
            return 0.0
        return float(BLEU.compute_bleu(self.counts, self.totals, self.sys_len, self.ref_len).score)


def bleu_stats(hypotheses: Sequence[str], reference_streams: Sequence[Sequence[str]]) -> BleuStats:
    """Statistics of ``hypotheses`` against one or more reference streams (sacrebleu layout:
    ``reference_streams[k][i]`` is the k-th reference of hypothesis i)."""
    if not hypotheses:
        return BleuStats()
    from sacrebleu.metrics import BLEU

    result = BLEU().corpus_score(list(hypotheses), [list(s) for s in reference_streams])
    return BleuStats(list(result.counts), list(result.totals), result.sys_len, result.ref_len)


@dataclass
class GenerationScores:
    """Sums over generated answers; merge with ``+``, read means with :meth:`metrics`."""

    examples: int = 0
    rouge_l_sum: float = 0.0
    exact_match_sum: float = 0.0
    bleu: BleuStats = field(default_factory=BleuStats)

    @classmethod
    def of(cls, predictions: Sequence[str], references: Sequence[str]) -> GenerationScores:
        if len(predictions) != len(references):
            raise ValueError("one reference per prediction")
        return cls(
            examples=len(predictions),
            rouge_l_sum=sum(rouge_l(p, r) for p, r in zip(predictions, references, strict=True)),
            exact_match_sum=sum(
                exact_match(p, r) for p, r in zip(predictions, references, strict=True)
            ),
            bleu=bleu_stats(predictions, [references]),
        )

    def __add__(self, other: GenerationScores) -> GenerationScores:
        return GenerationScores(
            self.examples + other.examples,
            self.rouge_l_sum + other.rouge_l_sum,
            self.exact_match_sum + other.exact_match_sum,
            self.bleu + other.bleu,
        )

    def metrics(self) -> dict[str, float]:
        """ROUGE-L F and exact match in [0, 1] (means), BLEU in [0, 100] (corpus)."""
        if self.examples == 0:
            return {}
        return {
            "rouge_l": self.rouge_l_sum / self.examples,
            "bleu": self.bleu.score(),
            "exact_match": self.exact_match_sum / self.examples,
            "generated": float(self.examples),
        }

    # Flower metrics are flat scalars: the statistics travel under these names.
    def to_scalars(self) -> dict[str, float]:
        out = {
            "gen_examples": float(self.examples),
            "gen_rouge_l_sum": self.rouge_l_sum,
            "gen_exact_match_sum": self.exact_match_sum,
            "gen_bleu_sys_len": float(self.bleu.sys_len),
            "gen_bleu_ref_len": float(self.bleu.ref_len),
        }
        for n in range(NGRAM_ORDER):
            out[f"gen_bleu_count_{n + 1}"] = float(self.bleu.counts[n])
            out[f"gen_bleu_total_{n + 1}"] = float(self.bleu.totals[n])
        return out

    @classmethod
    def from_scalars(cls, metrics: Mapping[str, object]) -> GenerationScores | None:
        """The statistics a client sent, or None when it sent none (or malformed ones)."""
        try:
            return cls(
                examples=int(metrics["gen_examples"]),  # type: ignore[call-overload]
                rouge_l_sum=float(metrics["gen_rouge_l_sum"]),  # type: ignore[arg-type]
                exact_match_sum=float(metrics["gen_exact_match_sum"]),  # type: ignore[arg-type]
                bleu=BleuStats(
                    [int(metrics[f"gen_bleu_count_{n + 1}"]) for n in range(NGRAM_ORDER)],  # type: ignore[call-overload]
                    [int(metrics[f"gen_bleu_total_{n + 1}"]) for n in range(NGRAM_ORDER)],  # type: ignore[call-overload]
                    int(metrics["gen_bleu_sys_len"]),  # type: ignore[call-overload]
                    int(metrics["gen_bleu_ref_len"]),  # type: ignore[call-overload]
                ),
            )
        except (KeyError, TypeError, ValueError):
            return None
