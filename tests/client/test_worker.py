"""The node's warm worker trains exactly as an in-process client, and admits only its node."""

from __future__ import annotations

import json
import stat
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context

from client.numpy_client import PrivatuneClient
from client.worker import WorkerAddress, WorkerClient, serve, wait_ready
from common.adapters import get_adapter_arrays
from common.config import RunConfig, load_config
from tests.support.nodes import make_node

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _node(root: Path, config: RunConfig) -> Context:
    """A node that accepts reproducible noise, and the same split seed in every node folder,
    so that two processes' training can be compared bit for bit."""
    context = make_node(root, allow_reproducible_noise=True)
    (root / "split.seed").write_text("12345\n")
    return context


@pytest.fixture
def config(tiny_bert: Path) -> RunConfig:
    return load_config(
        None,
        [
            f"model.path='{tiny_bert}'",
            "model.max-length=16",
            "data.labels=['a','b']",
            "data.server-eval=''",
            "training.local-steps=3",
            "training.batch-size=4",
            "privacy.noise-multiplier=1.0",
            "privacy.budget-epsilon=50",
            "privacy.reproducible-noise=true",
        ],
    )


def _serve_in_thread(address: WorkerAddress, requests: int) -> threading.Thread:
    thread = threading.Thread(
        target=serve, args=(address,), kwargs={"max_requests": requests}, daemon=True
    )
    thread.start()
    wait_ready(address, timeout=60)
    return thread


def test_fit_through_the_worker_equals_fit_in_process(config: RunConfig, tmp_path: Path) -> None:
    """Same delta, example count, metrics and ledger: the worker changes only the process."""
    local_ctx = _node(tmp_path / "local", config)
    worker_ctx = _node(tmp_path / "worker", config)
    local = PrivatuneClient(config, local_ctx)
    parameters = get_adapter_arrays(local.runtime.model)
    fit_config = {"server_round": 1}
    expected = local.fit(parameters, fit_config)

    address = WorkerAddress.in_state_dir(tmp_path / "worker")
    thread = _serve_in_thread(address, requests=1)  # the readiness probe is not one
    got = WorkerClient(config, worker_ctx, address).fit(parameters, fit_config)
    thread.join(timeout=60)

    assert got[1] == expected[1] and got[2] == expected[2]
    assert len(got[0]) == len(expected[0])
    for a, b in zip(got[0], expected[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(np.concatenate([d.ravel() for d in got[0]])).sum() > 0
    ledgers = [
        json.loads((tmp_path / d / "privacy_ledger.json").read_text()) for d in ("local", "worker")
    ]
    assert ledgers[0] == ledgers[1] and "history" in json.dumps(ledgers[0])


def test_worker_files_are_owner_only_and_strangers_are_refused(
    config: RunConfig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    address = WorkerAddress.in_state_dir(state)
    thread = _serve_in_thread(address, requests=1)
    assert stat.S_IMODE(address.socket.stat().st_mode) & 0o077 == 0  # owner-only
    assert stat.S_IMODE(address.key_file.stat().st_mode) == 0o600
    with pytest.raises(AuthenticationError):
        Client(str(address.socket), family="AF_UNIX", authkey=b"not the key")
    thread.join(timeout=1)
    assert thread.is_alive()  # the refused caller did not count as a request
    with Client(str(address.socket), family="AF_UNIX", authkey=address.key()) as conn:
        conn.send(("evaluate", {"bad": "request"}))
        status, message, _ = conn.recv()
    thread.join(timeout=30)
    assert status == "error" and "KeyError" in message


def test_worker_errors_reach_the_client_app(config: RunConfig, tmp_path: Path) -> None:
    """A failing round fails the message with the worker's reason, as in-process would."""
    ctx = _node(tmp_path / "node", config)
    address = WorkerAddress.in_state_dir(tmp_path / "node")
    thread = _serve_in_thread(address, requests=1)
    wrong = [np.zeros((1, 1), dtype=np.float32)]  # not this model's adapter
    with pytest.raises(RuntimeError, match="node worker: .*"):
        WorkerClient(config, ctx, address).fit(wrong, {"server_round": 1})
    thread.join(timeout=60)
