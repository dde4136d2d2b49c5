"""The attacker's figures: membership AUC, canary exposure, and what DP allows at most.

Plain numpy, no scikit-learn: the AUC is the Mann-Whitney statistic (the probability
that a random member scores above a random non-member, ties counting one half), and
exposure is Carlini et al.'s (2019) log2(#candidates) - log2(rank of the true secret).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks in ascending order; tied values share the mean of their ranks."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def auc(member_scores: Sequence[float], non_member_scores: Sequence[float]) -> float:
    """P(member score > non-member score) + P(tie)/2; higher score = "member".

    The loss-threshold attack scores an example by its negative loss, and this AUC is
    that attack's area under the ROC curve over every threshold.
    """
    m, n = len(member_scores), len(non_member_scores)
    if m == 0 or n == 0:
        raise ValueError("the AUC needs at least one member and one non-member")
    ranks = average_ranks([*member_scores, *non_member_scores])
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    return float(u / (m * n))


def auc_standard_error(value: float, num_members: int, num_non_members: int) -> float:
    """Hanley & McNeil (1982): the AUC's sampling error, to tell 0.55 from chance."""
    a = min(max(value, 1e-9), 1 - 1e-9)
    q1 = a / (2 - a)
    q2 = 2 * a * a / (1 + a)
    var = (
        a * (1 - a) + (num_members - 1) * (q1 - a * a) + (num_non_members - 1) * (q2 - a * a)
    ) / (num_members * num_non_members)
    return float(math.sqrt(max(var, 0.0)))


def secret_rank(true_loss: float, candidate_losses: Sequence[float]) -> float:
    """The true secret's rank when candidates are sorted by loss (1 = the likeliest).

    ``candidate_losses`` include the true secret's own loss once. Ties are broken at
    random in expectation: a secret tied with t other candidates gets the mean of the
    t + 1 ranks they share, so a model that cannot tell candidates apart gets no exposure.
    """
    losses = np.asarray(candidate_losses, dtype=np.float64)
    better = int(np.sum(losses < true_loss))
    tied_others = int(np.sum(losses == true_loss)) - 1
    return 1.0 + better + max(tied_others, 0) / 2.0


def exposure(rank: float, num_candidates: int) -> float:
    """log2(#candidates) - log2(rank): 0 for the worst rank, log2(#candidates) for rank 1."""
    if not 1 <= rank <= num_candidates:
        raise ValueError(f"rank {rank} is outside 1..{num_candidates}")
    return math.log2(num_candidates) - math.log2(rank)


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(ε, δ) for a group of k examples (a canary planted k times): (kε, k·e^((k-1)ε)·δ)."""
    return k * epsilon, min(1.0, k * math.exp((k - 1) * epsilon) * delta)


def dp_auc_bound(epsilon: float, delta: float) -> float:
    """The largest AUC any membership test can have against an (ε, δ)-DP mechanism.

    (ε, δ)-DP confines every test's ROC curve to TPR <= min(1, e^ε·FPR + δ,
    1 - e^-ε·(1 - δ - FPR)) (Kairouz et al., 2015); the bound is the area under it. That
    curve is the minimum of three lines, so the trapezoid rule over its kinks (where two
    of the lines cross) is exact. With δ = 0 it is e^ε / (1 + e^ε).
    """
    up = math.exp(epsilon)
    down = math.exp(-epsilon)

    def tpr(f: float) -> float:
        return min(1.0, up * f + delta, 1.0 - down * (1.0 - delta - f))

    kinks = [0.0, 1.0, (1.0 - delta) * down, 1.0 - delta]
    if epsilon > 0:
        kinks.append((1.0 - delta) / (up + 1.0))
    xs = sorted({min(max(x, 0.0), 1.0) for x in kinks})
    ys = [max(tpr(x), 0.0) for x in xs]
    return float(sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:])))
