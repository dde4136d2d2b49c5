"""A round replayed after a server restart is answered with the reply already sent and
recorded in the client's ledger exactly once, whichever write a kill interrupted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from client.ledger_store import FileLedgerStore
from client.replay import ReplyCache, fit_or_replay
from common.privacy.ledger import PrivacyLedger

ENTRY = (1.0, 0.05, 4)


@dataclass
class _Trainer:
    """Stands in for client.node.fit: records its entry, returns a fresh noisy delta."""

    ledger: PrivacyLedger | None = None
    calls: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def __call__(self):  # type: ignore[no-untyped-def]
        self.calls += 1
        assert self.ledger is not None
        self.ledger.record(ENTRY, run="run", server_round=3)
        delta = [self.rng.normal(size=(2, 3)).astype(np.float32)]
        return _Reply(delta, 40, {"train_loss": 1.5, "client_id": "0"})


@dataclass
class _Reply:
    delta: list[np.ndarray]
    num_examples: int
    metrics: dict


def _privacy(ledger: PrivacyLedger) -> dict:
    return {"steps_so_far": ledger.total_steps}


def _round(store: FileLedgerStore, trainer: _Trainer, received: list[np.ndarray]):  # type: ignore[no-untyped-def]
    with store.session(PrivacyLedger(delta=1e-5, budget=8.0)) as ledger:
        trainer.ledger = ledger
        return fit_or_replay(
            store.replies,
            ledger,
            run="run",
            server_round=3,
            received=received,
            train=trainer,
            privacy_metrics=_privacy,
        )


def _ledger(store: FileLedgerStore) -> PrivacyLedger:
    return PrivacyLedger.from_json(store.path.read_text())


def test_a_replayed_round_returns_the_same_reply_and_spends_nothing(tmp_path: Path) -> None:
    store = FileLedgerStore(tmp_path / "0.json")
    received = [np.ones((2, 3), dtype=np.float32)]
    trainer = _Trainer()
    delta, n, metrics = _round(store, trainer, received)
    assert trainer.calls == 1 and "replayed" not in metrics
    assert _ledger(store).history == [ENTRY] and _ledger(store).rounds == [3]

    again, n2, metrics2 = _round(store, trainer, received)
    assert trainer.calls == 1  # not trained a second time
    assert np.array_equal(again[0], delta[0]) and n2 == n == 40
    assert metrics2["replayed"] is True and metrics2["train_loss"] == 1.5
    assert metrics2["steps_so_far"] == 4
    assert _ledger(store).history == [ENTRY]


def test_a_kill_between_cache_and_ledger_still_counts_the_round_once(tmp_path: Path) -> None:
    store = FileLedgerStore(tmp_path / "0.json")
    received = [np.ones((2, 3), dtype=np.float32)]
    _round(store, _Trainer(), received)
    store.path.unlink()  # as if killed after the cache was written, before the ledger
    trainer = _Trainer()
    _round(store, trainer, received)
    assert trainer.calls == 0
    assert _ledger(store).history == [ENTRY] and _ledger(store).rounds == [3]


def test_another_global_adapter_is_trained_afresh(tmp_path: Path) -> None:
    store = FileLedgerStore(tmp_path / "0.json")
    trainer = _Trainer()
    first, _, _ = _round(store, trainer, [np.ones((2, 3), dtype=np.float32)])
    changed = [np.ones((2, 3), dtype=np.float32)]
    changed[0][0, 0] = np.nextafter(np.float32(1), np.float32(2))  # one ulp differs
    second, _, _ = _round(store, trainer, changed)
    assert trainer.calls == 2 and not np.array_equal(first[0], second[0])
    assert len(_ledger(store).history) == 2


def test_an_unreadable_cache_means_training_again(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "0.reply.npz")
    cache.path.write_bytes(b"not a zip file")
    assert cache.get("anything") is None


def test_a_virtual_client_keeps_its_ledger_in_the_run_folder(tmp_path: Path) -> None:
    """simulate names the folder; flwr run's absolute output-dir too; else the Context."""
    from flwr.app import Context, RecordDict

    from client.app import _simulated_ledgers
    from client.ledger_store import ContextLedgerStore

    def context(run_config: dict, **node) -> Context:  # type: ignore[type-arg]
        return Context(1, 2, node, RecordDict(), run_config)

    store = _simulated_ledgers(context({}, **{"partition-id": 3}), tmp_path / "ledgers")
    assert isinstance(store, FileLedgerStore) and store.path == tmp_path / "ledgers" / "3.json"
    assert store.replies.path == tmp_path / "ledgers" / "3.reply.npz"
    flwr_run = context({"output-dir": str(tmp_path / "out")}, **{"partition-id": 0})
    store = _simulated_ledgers(flwr_run, None)
    assert isinstance(store, FileLedgerStore)
    assert store.path == tmp_path / "out" / "client_ledgers" / "0.json"
    relative = context({"output-dir": "runs/x"}, **{"partition-id": 0})
    assert isinstance(_simulated_ledgers(relative, None), ContextLedgerStore)
