"""The ledger composes every step across rounds and matches Opacus's RDP accountant."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from common.privacy.calibrate import noise_for_target, poisson_sample_rate
from common.privacy.ledger import PrivacyLedger, compute_epsilon

# ε of the history in test_epsilon_pinned_for_fixed_history, Opacus 1.6 RDP accountant.
PINNED_EPS = 4.7217766000670265


def _opacus_epsilon(history, delta):  # type: ignore[no-untyped-def]
    accountant = RDPAccountant()
    for sigma, q, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=sigma, sample_rate=q)
    return accountant.get_epsilon(delta=delta)


def test_epsilon_pinned_for_fixed_history() -> None:
    history = [(1.1, 0.05, 30), (1.1, 0.05, 30), (0.9, 0.1, 10)]
    eps = compute_epsilon(history, 1e-5)
    assert eps == pytest.approx(_opacus_epsilon(history, 1e-5), rel=1e-9)
    assert eps == pytest.approx(PINNED_EPS, abs=1e-6)


def test_composition_over_rounds_is_not_reset() -> None:
    one = PrivacyLedger(delta=1e-5)
    one.record((1.0, 0.05, 20))
    two = PrivacyLedger(delta=1e-5)
    two.record((1.0, 0.05, 20))
    two.record((1.0, 0.05, 20))
    assert two.epsilon > one.epsilon * 1.1
    assert two.epsilon == pytest.approx(compute_epsilon([(1.0, 0.05, 40)], 1e-5), rel=1e-12)


def test_budget_refuses_before_spending() -> None:
    ledger = PrivacyLedger(delta=1e-5, budget=2.0)
    entry = (1.0, 0.05, 20)
    while ledger.allows(entry):
        ledger.record(entry)
    assert ledger.epsilon <= 2.0
    assert ledger.epsilon_if([entry]) > 2.0


def test_zero_noise_is_infinite_epsilon_and_json_safe() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    ledger.record((0.0, 0.1, 1))
    assert math.isinf(ledger.epsilon)
    assert ledger.to_dict()["epsilon"] is None
    assert PrivacyLedger.from_json(ledger.to_json()).history == ledger.history


def test_calibration_reaches_target_over_planned_steps() -> None:
    q = poisson_sample_rate(320, 16)
    assert q == pytest.approx(1 / 20)
    sigma = noise_for_target(target_epsilon=8.0, delta=1e-5, sample_rate=q, steps=50)
    eps = compute_epsilon([(sigma, q, 50)], 1e-5)
    assert 7.9 <= eps <= 8.0


HISTORIES = [
    [(1.1, 0.01, 30)],
    [(0.8, 0.5, 2), (0.8, 0.5, 2), (2.0, 0.05, 7)],
    [(3.0, 0.9, 1), (0.7, 0.001, 50), (1.1, 0.01, 30)],
    [(1.0, 1.0, 3)],  # no subsampling: RDP α/(2σ²) per step
]


@pytest.mark.parametrize("history", HISTORIES)
def test_epsilon_matches_an_accountant_written_from_the_definitions(history) -> None:  # type: ignore[no-untyped-def]
    """The oracle integrates the Rényi divergence numerically (tests/support/rdp_oracle.py),
    a computation that shares nothing with Opacus's closed-form series."""
    from common.privacy.ledger import _one_step_rdp, _orders
    from tests.support import rdp_oracle

    orders = _orders()
    for sigma, q, _ in history:
        ours = _one_step_rdp(sigma, q)
        for alpha, value in list(zip(orders, ours, strict=True))[::7]:
            assert value == pytest.approx(
                rdp_oracle.rdp_sampled_gaussian(q, sigma, alpha), rel=1e-6
            )
    expected = rdp_oracle.epsilon(history, 1e-5, orders)
    assert compute_epsilon(history, 1e-5) == pytest.approx(expected, rel=1e-6)


def test_a_node_reports_only_this_runs_part_of_its_ledger() -> None:
    """Other federations' entries and the lifetime ε stay on the node (for_run)."""
    ledger = PrivacyLedger(delta=1e-6, budget=10.0)
    ledger.record((1.0, 0.05, 20), run="other", server_round=1, key="k1")
    ledger.record((1.2, 0.05, 10), run="this", server_round=1, key="k2")
    mine = ledger.for_run("this")
    assert mine.history == [(1.2, 0.05, 10)] and mine.runs == ["this"]
    assert mine.budget is None and "other" not in mine.to_json() and "k1" not in mine.to_json()
    assert mine.epsilon == pytest.approx(compute_epsilon([(1.2, 0.05, 10)], 1e-6))
    assert mine.epsilon < ledger.epsilon


def test_entries_are_found_by_the_reply_they_paid_for() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    ledger.record((1.0, 0.1, 3), run="r", server_round=2, key="a")
    ledger.record((1.0, 0.1, 3), run="r", server_round=2, key="b")  # round 2, asked again
    assert ledger.key_entries("a") == [(1.0, 0.1, 3)]
    assert ledger.key_entries("") == [] and ledger.key_entries("c") == []
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again.keys == ["a", "b"] and again.key_entries("b") == [(1.0, 0.1, 3)]
