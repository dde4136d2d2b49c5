"""A node's ledger file spans runs: each run has its own budget, the node a lifetime one."""

from __future__ import annotations

from pathlib import Path

from client.ledger_store import FileLedgerStore
from client.privacy import RoundPlan, new_ledger, plan_round
from common.config import load_config
from common.privacy.ledger import compute_epsilon


def _config(target: float):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            "privacy.noise-multiplier=1.0",
            f"privacy.budget-epsilon={target}",
            "training.local-steps=10",
            "training.batch-size=16",
        ],
    )


def _spend(store: FileLedgerStore, run: str, target: float, lifetime: float) -> int:
    """Rounds a run gets before a budget stops it (records each allowed round)."""
    config = _config(target)
    rounds = 0
    for _ in range(50):
        with store.session(new_ledger(config, lifetime_budget=lifetime)) as ledger:
            decided = plan_round(config, ledger, 320, run=run)
            if not isinstance(decided, RoundPlan):
                return rounds
            ledger.record(decided.entry, run=run)
            rounds += 1
    return rounds


def test_second_run_has_its_own_budget_within_the_lifetime_one(tmp_path: Path) -> None:
    """Run a spends up to ε=3; run b may spend its own ε=3 while the lifetime allows it."""
    store = FileLedgerStore(tmp_path / "ledger.json")
    first = _spend(store, "a", target=3.0, lifetime=20.0)
    second = _spend(store, "b", target=3.0, lifetime=20.0)
    assert first >= 2 and second == first
    with store.session(new_ledger(_config(3.0), lifetime_budget=20.0)) as ledger:
        assert compute_epsilon(ledger.run_history("a"), ledger.delta) <= 3.0
        assert compute_epsilon(ledger.run_history("b"), ledger.delta) <= 3.0
        assert ledger.epsilon > 3.0  # the lifetime ε composes both runs
        assert ledger.epsilon <= 20.0


def test_lifetime_budget_stops_a_later_run(tmp_path: Path) -> None:
    """A node at its lifetime ε refuses even a fresh run with room in its own budget."""
    store = FileLedgerStore(tmp_path / "ledger.json")
    _spend(store, "a", target=3.0, lifetime=3.0)
    assert _spend(store, "b", target=3.0, lifetime=3.0) == 0
    with store.session(new_ledger(_config(3.0), lifetime_budget=3.0)) as ledger:
        assert ledger.epsilon <= 3.0
        assert set(ledger.runs) == {"a"}
