"""Choose the noise multiplier σ that reaches a target ε over a planned number of steps."""

from __future__ import annotations

import math


def poisson_sample_rate(num_examples: int, batch_size: int) -> float:
    """q as Opacus's DPDataLoader sets it: one over the number of batches in an epoch."""
    if num_examples < 1:
        raise ValueError("a client needs at least one training example")
    return 1.0 / math.ceil(num_examples / batch_size)


def noise_for_target(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> float:
    """The smallest σ (to 0.01 in ε) whose RDP composition over ``steps`` stays ≤ target.

    ``steps`` must be the most a client can ever run (rounds × local steps), so the
    target holds even if the client is sampled in every round.
    """
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
            epsilon_tolerance=0.01,
        )
    )
