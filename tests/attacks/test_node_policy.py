"""A coordinator that chooses the run config against a node's privacy (SECURITY.md).

δ, the evaluation split, the evaluation requests and the metrics a node sends are all
the node's decision; each attack asks for more through the run config or a request,
against the real client code on a node folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from client.numpy_client import PrivatuneClient
from common.adapters import get_adapter_arrays
from common.privacy.ledger import PrivacyLedger, compute_epsilon
from tests.support.nodes import make_node, node_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What a node sends with a private update when its policy shares no training statistics.
PRIVATE_METRICS = {
    "client_id",
    "steps",
    "refused",
    "epsilon",
    "dp_delta",
    "privacy_history",
    "noise_multiplier",
    "sample_rate",
}


def _ledger(root: Path) -> PrivacyLedger:
    return PrivacyLedger.from_json((root / "privacy_ledger.json").read_text())


def test_a_larger_delta_is_refused_and_the_ledger_keeps_the_nodes_own(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """The same history is ε ≈ 54 at δ = 1e-5 and ≈ 16 at δ = 0.9: a coordinator that
    picks δ picks how much budget a node seems to have left."""
    inflated = PrivatuneClient(
        node_run_config(tiny_bert, "privacy.delta=0.9"), make_node(tmp_path / "a")
    )
    adapter = get_adapter_arrays(inflated.runtime.model)
    _, weight, metrics = inflated.fit(adapter, {"server_round": 1})
    assert metrics["refused"] and "max-delta" in str(metrics["refusal"]) and weight == 0

    # A ledger an earlier run wrote at δ = 0.9 is read at the node's δ (default 1e-5).
    root = tmp_path / "b"
    history = [(1.0, 0.25, 30)]
    node = make_node(root)
    (root / "privacy_ledger.json").write_text(
        json.dumps({"delta": 0.9, "history": [list(e) for e in history], "budget": 8.0})
    )
    client = PrivatuneClient(node_run_config(tiny_bert, "privacy.delta=1e-6"), node)
    _, _, metrics = client.fit(adapter, {"server_round": 1, "run_key": "new"})
    ledger = _ledger(root)
    assert ledger.delta == 1e-5 and metrics["dp_delta"] == 1e-5
    assert ledger.epsilon == pytest.approx(compute_epsilon(ledger.history, 1e-5))
    assert compute_epsilon(history, 1e-5) > 3 * compute_epsilon(history, 0.9)


def test_evaluation_is_refused_unless_the_node_allows_it(tiny_bert: Path, tmp_path: Path) -> None:
    config = node_run_config(tiny_bert)
    closed = PrivatuneClient(config, make_node(tmp_path / "closed"))
    adapter = get_adapter_arrays(closed.runtime.model)
    loss, count, metrics = closed.evaluate(adapter, {"server_round": 1})
    assert count == 0 and metrics["refused"] and "federated-evaluation" in str(metrics["refusal"])
    assert closed.data.eval is None  # every row trains; none is held out for queries

    open_node = PrivatuneClient(config, make_node(tmp_path / "open", federated_evaluation=True))
    _, count, metrics = open_node.evaluate(adapter, {"server_round": 1})
    assert count > 0 and "accuracy" in metrics and "refused" not in metrics

    # A node that refuses the run refuses its evaluation too, whatever its policy says.
    no_dp = node_run_config(tiny_bert, "privacy.enabled=false")
    refusing = PrivatuneClient(no_dp, make_node(tmp_path / "open2", federated_evaluation=True))
    _, count, metrics = refusing.evaluate(adapter, {"server_round": 1})
    assert count == 0 and "requires DP-SGD" in str(metrics["refusal"])


def test_the_coordinator_cannot_move_rows_into_the_held_out_split(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Across runs with other seeds and fractions, the node holds out the same rows."""
    root = tmp_path / "node"
    context = make_node(root, federated_evaluation=True, eval_fraction=0.25)
    held_out = []
    for extra in (("training.seed=0",), ("training.seed=99", "data.client-eval-fraction=0.9")):
        client = PrivatuneClient(node_run_config(tiny_bert, *extra), context)
        assert client.data.eval is not None
        held_out.append(client.data.eval.dataset.tensors[0])
    assert len(held_out[0]) == 6  # 25 % of 24: the node's fraction, not the run's 90 %
    assert all(np.array_equal(held_out[0], h) for h in held_out[1:])
    seed = (root / "split.seed").read_text()
    assert (root / "split.seed").stat().st_mode & 0o077 == 0 and seed.strip().isdigit()


def test_a_private_update_carries_no_statistics_of_the_private_rows(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Training loss, too-long and empty-batch counts are not DP outputs: the run config
    asking for them is not enough, the node's policy must agree."""
    asking = node_run_config(tiny_bert, "privacy.share-training-metrics=true")
    client = PrivatuneClient(asking, make_node(tmp_path / "a"))
    adapter = get_adapter_arrays(client.runtime.model)
    _, _, metrics = client.fit(adapter, {"server_round": 1})
    assert set(metrics) == PRIVATE_METRICS

    sharing = PrivatuneClient(asking, make_node(tmp_path / "b", share_training_metrics=True))
    _, _, metrics = sharing.fit(adapter, {"server_round": 1})
    assert {"train_loss", "num_too_long", "empty_batches"} <= set(metrics)


def test_the_server_learns_only_this_runs_part_of_the_ledger(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """A node's ledger spans every federation it joined; another run's coordinator gets
    neither those entries nor the lifetime ε, even when the budget is reached."""
    root = tmp_path / "node"
    node = make_node(root, max_epsilon=5.0)
    client = PrivatuneClient(node_run_config(tiny_bert), node)
    adapter = get_adapter_arrays(client.runtime.model)
    client.fit(adapter, {"server_round": 1, "run_key": "federation-a"})
    lifetime = _ledger(root).epsilon
    _, _, metrics = client.fit(adapter, {"server_round": 1, "run_key": "federation-b"})
    sent = json.loads(str(metrics["privacy_history"]))
    assert sent["runs"] == ["federation-b"] and len(sent["history"]) == 1
    assert "federation-a" not in str(metrics) and metrics["epsilon"] < _ledger(root).epsilon
    assert lifetime > 0

    while not metrics.get("refused"):  # spend until the lifetime budget refuses
        _, _, metrics = client.fit(
            [a + np.float32(1e-3) for a in adapter], {"server_round": 2, "run_key": "federation-b"}
        )
        adapter = [a + np.float32(1e-3) for a in adapter]
    assert "lifetime ε budget is reached" in str(metrics["refusal"])
    assert f"{_ledger(root).epsilon:.3f}" not in str(metrics["refusal"])
