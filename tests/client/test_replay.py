"""A round replayed after a server restart is answered with the reply already sent and
charged in the node's ledger exactly once, whichever write a kill interrupted.

Every test drives the real client (client/app.py on a node folder, real DP-SGD with
secret noise): a reply that was trained again, not replayed, would differ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from client.ledger_store import FileLedgerStore
from client.numpy_client import PrivatuneClient
from client.replay import ReplyCache
from common.adapters import get_adapter_arrays
from common.config import RunConfig
from common.privacy.ledger import PrivacyLedger
from tests.support.nodes import make_node, node_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def config(tiny_bert: Path) -> RunConfig:
    return node_run_config(tiny_bert)


def _ledger(root: Path) -> PrivacyLedger:
    return PrivacyLedger.from_json((root / "privacy_ledger.json").read_text())


def _ask(server_round: int) -> dict:
    return {"server_round": server_round, "run_key": "run"}


def test_a_replayed_round_returns_the_same_reply_and_spends_nothing(
    config: RunConfig, tmp_path: Path
) -> None:
    client = PrivatuneClient(config, make_node(tmp_path / "n"))
    adapter = get_adapter_arrays(client.runtime.model)
    delta, n, metrics = client.fit(adapter, _ask(3))
    charged = _ledger(tmp_path / "n")
    assert "replayed" not in metrics and len(charged.history) == 1 and charged.rounds == [3]

    again, n2, metrics2 = client.fit(adapter, _ask(3))
    for a, b in zip(again, delta, strict=True):
        np.testing.assert_array_equal(a, b)
    assert n2 == n and metrics2["replayed"] is True
    assert _ledger(tmp_path / "n").history == charged.history  # nothing spent again

    # The same adapter in another round is another question: trained, with fresh noise.
    other, _, _ = client.fit(adapter, _ask(4))
    assert not np.array_equal(other[0], delta[0])
    assert len(_ledger(tmp_path / "n").history) == 2


def test_a_kill_between_cache_and_ledger_charges_the_reply_once(
    config: RunConfig, tmp_path: Path
) -> None:
    """Round 3 asked twice with different adapters (a restarted server whose checkpoint
    moved): the second reply is cached, then the node dies before its ledger is saved.
    Asked that second question again, the node replays it and must charge it now: the
    ledger then holds both rounds. (Keyed by run and round, the second reply found the
    first's entries and went out a second time uncharged.)"""
    root = tmp_path / "n"
    client = PrivatuneClient(config, make_node(root))
    first = get_adapter_arrays(client.runtime.model)
    client.fit(first, _ask(3))
    shutil.copy(root / "privacy_ledger.json", tmp_path / "after-first.json")
    second = [a + np.float32(0.01) for a in first]
    sent, _, _ = client.fit(second, _ask(3))
    assert len(_ledger(root).history) == 2
    shutil.copy(tmp_path / "after-first.json", root / "privacy_ledger.json")  # the kill

    replayed, _, metrics = client.fit(second, _ask(3))
    assert metrics["replayed"] is True
    np.testing.assert_array_equal(replayed[0], sent[0])
    ledger = _ledger(root)
    assert len(ledger.history) == 2 and ledger.rounds == [3, 3]
    assert len(set(ledger.keys)) == 2  # one entry per reply sent

    (root / "privacy_ledger.json").unlink()  # killed before the ledger's first write
    client.fit(second, _ask(3))
    assert len(_ledger(root).history) == 1  # charged once, from the cached reply


def test_another_global_adapter_is_trained_afresh(config: RunConfig, tmp_path: Path) -> None:
    client = PrivatuneClient(config, make_node(tmp_path / "n"))
    adapter = get_adapter_arrays(client.runtime.model)
    first, _, _ = client.fit(adapter, _ask(3))
    changed = [a.copy() for a in adapter]
    flat = changed[0].reshape(-1)
    flat[0] = np.nextafter(flat[0], np.float32(2))  # one ulp differs
    second, _, metrics = client.fit(changed, _ask(3))
    assert "replayed" not in metrics and not np.array_equal(first[0], second[0])
    assert len(_ledger(tmp_path / "n").history) == 2


def test_an_unreadable_cache_means_training_again(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "0.reply.npz")
    cache.path.write_bytes(b"not a zip file")
    assert cache.get("anything") is None


def test_a_virtual_client_keeps_its_ledger_in_the_run_folder(tmp_path: Path) -> None:
    """simulate names the folder; flwr run's absolute output-dir too; else the Context."""
    from flwr.app import Context, RecordDict

    from client.ledger_store import ContextLedgerStore, simulated_store

    def context(run_config: dict, **node) -> Context:  # type: ignore[type-arg]
        return Context(1, 2, node, RecordDict(), run_config)

    store = simulated_store(context({}, **{"partition-id": 3}), tmp_path / "ledgers")
    assert isinstance(store, FileLedgerStore) and store.path == tmp_path / "ledgers" / "3.json"
    assert store.replies.path == tmp_path / "ledgers" / "3.reply.npz"
    flwr_run = context({"output-dir": str(tmp_path / "out")}, **{"partition-id": 0})
    store = simulated_store(flwr_run, None)
    assert isinstance(store, FileLedgerStore)
    assert store.path == tmp_path / "out" / "client_ledgers" / "0.json"
    relative = context({"output-dir": "runs/x"}, **{"partition-id": 0})
    assert isinstance(simulated_store(relative, None), ContextLedgerStore)


def test_the_ledger_file_names_what_each_entry_paid_for(config: RunConfig, tmp_path: Path) -> None:
    client = PrivatuneClient(config, make_node(tmp_path / "n"))
    client.fit(get_adapter_arrays(client.runtime.model), _ask(1))
    stored = json.loads((tmp_path / "n" / "privacy_ledger.json").read_text())
    cached = ReplyCache(tmp_path / "n" / "privacy_ledger.reply.npz")
    (key,) = stored["keys"]
    assert cached.get(key) is not None and cached.get(key).entries == [tuple(stored["history"][0])]  # type: ignore[union-attr]
