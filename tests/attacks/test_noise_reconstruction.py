"""The coordinator tries to remove a node's DP noise (SECURITY.md, "DP-SGD noise").

It chooses training.seed, knows each node's name, the round and the adapter it sent, so
before the noise was secret it could run the node's round itself on dummy rows of the
same count, with the same seed: the Poisson masks and the Gaussian noise came out the
same, and the difference of the two deltas was the node's gradient signal, noise-free.
Each attack below runs the real client (client/app.py on a node folder) and measures
what is left of the noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.numpy_client import PrivatuneClient
from common.adapters import get_adapter_arrays
from server.app import summarise
from tests.support.nodes import make_node, node_rows, node_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# node_run_config: SGD lr 0.5, 3 steps, σ = 1, C = 1; 24 rows, batch 4 → q = 1/6, B = 4.
LR, STEPS, SIGMA, CLIP, BATCH = 0.5, 3, 1.0, 1.0, 4
NOISE_STD = LR * SIGMA * CLIP / BATCH * STEPS**0.5  # per coordinate of one delta


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def _dummy_rows() -> list[dict[str, str]]:
    return [{"text": "zzz qqq", "label": "a"} for _ in range(len(node_rows()))]


def test_rerunning_a_nodes_round_on_dummy_rows_leaves_the_noise_in(
    tiny_bert: Path, tmp_path: Path
) -> None:
    config = node_run_config(tiny_bert)
    victim = PrivatuneClient(config, make_node(tmp_path / "victim"))
    # The coordinator's replica: same name, same config and seed, dummy rows, same count.
    replica = PrivatuneClient(config, make_node(tmp_path / "replica", rows=_dummy_rows()))
    adapter = get_adapter_arrays(victim.runtime.model)
    ask = {"server_round": 2, "run_key": "run"}
    released = _flat(victim.fit(adapter, ask)[0])
    guess = _flat(replica.fit(adapter, ask)[0])
    residual = float(np.std(released - guess))
    # Two independent noise draws differ by √2 · NOISE_STD per coordinate; the gradient
    # signal left in the residual only adds to that. With the coordinator's seed deciding
    # the noise, the residual was the signal alone (~0.02 here).
    assert residual >= 0.9 * 2**0.5 * NOISE_STD


def test_the_same_node_asked_twice_draws_fresh_noise_and_pays_twice(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Two runs on one node with the same seed: the ledger composes them as independent
    releases, so their noise must be independent too."""
    config = node_run_config(tiny_bert)
    node = PrivatuneClient(config, make_node(tmp_path / "node"))
    adapter = get_adapter_arrays(node.runtime.model)
    first = _flat(node.fit(adapter, {"server_round": 1, "run_key": "run-1"})[0])
    second = _flat(node.fit(adapter, {"server_round": 1, "run_key": "run-2"})[0])
    assert float(np.std(first - second)) >= 0.9 * 2**0.5 * NOISE_STD
    from common.privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger.from_json((tmp_path / "node" / "privacy_ledger.json").read_text())
    assert ledger.runs == ["run-1", "run-2"]


def test_reproducible_noise_is_refused_unless_the_node_allows_it(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """The research switch makes the noise the coordinator's: a node refuses it by
    default; where its policy allows it, the replica attack works, as the report says."""
    config = node_run_config(tiny_bert, "privacy.reproducible-noise=true")
    refusing = PrivatuneClient(config, make_node(tmp_path / "refusing"))
    adapter = get_adapter_arrays(refusing.runtime.model)
    delta, weight, metrics = refusing.fit(adapter, {"server_round": 1})
    assert metrics["refused"] and "reproducible-noise" in str(metrics["refusal"]) and weight == 0
    assert all(not np.any(d) for d in delta)

    allowing = PrivatuneClient(
        config, make_node(tmp_path / "allowing", allow_reproducible_noise=True)
    )
    replica = PrivatuneClient(
        config,
        make_node(tmp_path / "replica", rows=_dummy_rows(), allow_reproducible_noise=True),
    )
    for folder in ("allowing", "replica"):  # the split seed is the node's; give both one
        (tmp_path / folder / "split.seed").write_text("1\n")
    released = _flat(allowing.fit(adapter, {"server_round": 1})[0])
    guess = _flat(replica.fit(adapter, {"server_round": 1})[0])
    assert float(np.std(released - guess)) < 0.25 * NOISE_STD  # the noise cancels
    summary = summarise([], config, 0.0)
    assert summary["private"] is False and summary["reproducible_noise"] is True
