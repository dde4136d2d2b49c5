"""Decide a round's DP-SGD settings, or refuse the round, from the client's own ledger.

The server cannot make a client overspend: the client computes the ε it would reach
after the round (from its own persisted ledger, with the steps it will actually run)
and refuses when that exceeds its budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from client.dp import DPSettings
from common.config import RunConfig
from common.privacy.calibrate import noise_for_target, poisson_sample_rate
from common.privacy.ledger import Entry, PrivacyLedger, compute_epsilon
from common.protocol import BUDGET_REFUSAL


@dataclass(frozen=True)
class RoundPlan:
    """A planned private round: its settings and its accounting entry."""

    settings: DPSettings
    entry: Entry


@dataclass(frozen=True)
class Refusal:
    """Why a round is refused: ``reason`` goes to the server, ``detail`` only to the log."""

    reason: str
    detail: str = ""


@lru_cache(maxsize=64)
def _calibrated(target: float, delta: float, q: float, steps: int) -> float:
    return noise_for_target(target_epsilon=target, delta=delta, sample_rate=q, steps=steps)


def noise_multiplier(config: RunConfig, sample_rate: float) -> float:
    """σ: fixed, or calibrated so that every round this client may join reaches ≤ target."""
    privacy = config.privacy
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    assert privacy.target_epsilon is not None
    max_steps = config.federation.rounds * config.training.local_steps
    return _calibrated(privacy.target_epsilon, privacy.delta, sample_rate, max_steps)


def new_ledger(
    config: RunConfig, *, lifetime_budget: float | None = None, delta: float | None = None
) -> PrivacyLedger:
    """An empty ledger; its budget is the node's lifetime ε (in simulation: the run's) and
    its δ the node's own (in simulation: the run's)."""
    budget = config.privacy.budget if lifetime_budget is None else lifetime_budget
    return PrivacyLedger(delta=config.privacy.delta if delta is None else delta, budget=budget)


def plan_round(
    config: RunConfig, ledger: PrivacyLedger, num_examples: int, *, run: str = ""
) -> RoundPlan | Refusal:
    """The DP settings of the next round, or a refusal if it would exceed a budget.

    Two budgets hold at once: the run's own (``privacy.budget-epsilon`` or its target, over
    the entries this run added) and the ledger's (on a node: its lifetime ε, over every
    run it ever joined).
    """
    q = poisson_sample_rate(num_examples, config.training.batch_size)
    sigma = noise_multiplier(config, q)
    if sigma < config.privacy.min_noise_multiplier:
        return Refusal(
            f"noise multiplier {sigma:.4f} is below this node's minimum "
            f"{config.privacy.min_noise_multiplier} (policy min-noise-multiplier)"
        )
    entry: Entry = (sigma, q, config.training.local_steps)
    run_budget = config.privacy.budget
    if run_budget is not None:
        this_run = compute_epsilon([*ledger.run_history(run), entry], ledger.delta)
        if this_run > run_budget:
            return Refusal(
                f"run {BUDGET_REFUSAL}: this run's ε would reach {this_run:.3f} > {run_budget:.3f}"
            )
    if not ledger.allows(entry):
        after = ledger.epsilon_if([entry])
        detail = (
            f"{BUDGET_REFUSAL}: ε would reach {after:.3f} > budget {ledger.budget:.3f} "
            f"(spent {ledger.epsilon:.3f} so far)"
        )
        if len(ledger.run_history(run)) < len(ledger.history):
            # A node's lifetime ε spans other federations: the server learns only that
            # the budget is reached, not how much the node spent elsewhere.
            return Refusal(f"{BUDGET_REFUSAL}: this node's lifetime ε budget is reached", detail)
        return Refusal(detail, detail)
    settings = DPSettings(
        noise_multiplier=sigma,
        max_grad_norm=config.privacy.max_grad_norm,
        grad_sample_mode=config.privacy.grad_sample_mode,
    )
    return RoundPlan(settings=settings, entry=entry)
