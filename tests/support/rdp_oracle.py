"""An accountant written from the definitions, to check the one privatune uses against.

privatune's ledger composes Opacus's closed-form RDP of the Poisson-subsampled Gaussian
(a series over binomial terms at integer orders, another at fractional ones). This
module computes the same quantities another way, so a test comparing the two can fail:

- the Rényi divergence of order α between the subsampled mechanism's output
  (1-q)·N(0, σ²) + q·N(1, σ²) and N(0, σ²) (Mironov, Talwar, Zhang 2019, the direction
  that dominates), by numerical integration of its definition with SciPy;
- the RDP → (ε, δ) conversion of Balle et al. 2020 (Theorem 21), written out here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.integrate import quad


def rdp_sampled_gaussian(q: float, sigma: float, alpha: float) -> float:
    """D_α(mixture ‖ N(0, σ²)) of one step, sensitivity 1, by quadrature."""
    if q == 1.0:
        return alpha / (2 * sigma**2)
    log_norm = -math.log(sigma * math.sqrt(2 * math.pi))

    def log_integrand(x: float) -> float:
        t = (2 * x - 1) / (2 * sigma**2)
        a, b = math.log(1 - q), math.log(q) + t  # log((1-q) + q·e^t), without overflow
        log_ratio = max(a, b) + math.log1p(math.exp(-abs(a - b)))
        return log_norm - x * x / (2 * sigma**2) + alpha * log_ratio

    # The integrand peaks between 0 and about α (where the shifted component dominates);
    # it is integrated scaled by its largest value on a grid, so large orders do not
    # overflow.
    lo, hi = -40 * sigma, alpha + 40 * sigma
    peak = max(log_integrand(lo + (hi - lo) * i / 1000) for i in range(1001))
    value, _ = quad(
        lambda x: math.exp(log_integrand(x) - peak),
        lo,
        hi,
        points=[0.0, 0.5, alpha / 2, alpha],
        limit=500,
        epsabs=0.0,
        epsrel=1e-10,
    )
    return (peak + math.log(value)) / (alpha - 1)


def epsilon(
    history: Sequence[tuple[float, float, int]], delta: float, orders: Sequence[float]
) -> float:
    """ε at ``delta`` of composing ``history`` [(σ, q, steps)], minimised over ``orders``."""
    best = math.inf
    for alpha in orders:
        rdp = sum(steps * rdp_sampled_gaussian(q, s, alpha) for s, q, steps in history)
        eps = rdp - (math.log(delta) + math.log(alpha)) / (alpha - 1)
        eps += math.log((alpha - 1) / alpha)
        best = min(best, eps)
    return best
