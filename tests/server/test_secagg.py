"""SecAgg+ with narrowed masked vectors, in one process: the same mean as plain FedAvg.

Flower's SecAggPlusWorkflow runs on privatune's WideningGrid; the grid under it hands
each message, serialised and parsed again as on the wire, to a real ClientApp built with
privatune's mods (audit log, named failures, SecAgg+ with narrowing) around a client
that returns fixed arrays. No Ray, no model: a round takes well under a second.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import recorddict_to_proto
from flwr.server.strategy import FedAvg
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.serverapp import Grid

from client.app import client_mods
from client.audit import AUDIT_PATH_KEY
from server import secagg
from server.rounds import Next
from server.workflow import legacy_context, run_rounds
from tests.support.grids import InProcessGrid, task_identity  # noqa: F401 (fixture)

SHAPES = [(6, 4), (4,), (3, 5)]
WEIGHTS = [30, 12, 25, 7, 18]


def _client_arrays(node: int) -> list[np.ndarray]:
    rng = np.random.default_rng(node)
    return [rng.normal(0, 0.05, size=s).astype(np.float32) for s in SHAPES]


class _FixedClient(NumPyClient):
    def __init__(self, node: int, failing: bool) -> None:
        self.node, self.failing = node, failing

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        if self.failing:
            raise RuntimeError("this client drops out after the key exchange")
        return _client_arrays(self.node), WEIGHTS[self.node - 1], {}


class _SeenGrid(secagg.WideningGrid):
    """Keeps every reply as Flower's workflow receives it (after widening)."""

    seen: list[Message]

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(super().pull_messages(message_ids))
        self.__dict__.setdefault("seen", []).extend(replies)
        return replies


def _federate(
    grid: Grid, *, settings: secagg.SecAggSettings | None, clients: int
) -> list[np.ndarray]:
    """One round of FedAvg over ``clients`` nodes; the global arrays it ends with."""
    initial = [np.zeros(s, np.float32) for s in SHAPES]
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=clients,
        min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters(initial),
        accept_failures=True,
    )
    server_ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    out: list[np.ndarray] = []

    def on_round_end(server_round: int, _seconds: float, arrays: list[np.ndarray]):  # type: ignore[no-untyped-def]
        out[:] = arrays
        return Next.CONTINUE

    fit_step = default_fit_workflow if settings is None else secagg.workflow(settings, timeout=None)
    run_rounds(
        grid,
        legacy_context(server_ctx, strategy=strategy, num_rounds=1, round_timeout=None),
        on_round_end=on_round_end,
        fit_step=fit_step,
        evaluate_step=lambda *_: None,
    )
    return out


def _app(failing: frozenset[int] = frozenset()) -> ClientApp:
    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        node = int(context.node_id)
        return _FixedClient(node, node in failing).to_client()

    return ClientApp(client_fn=client_fn, mods=client_mods())


def _settings(**change: Any) -> secagg.SecAggSettings:
    base = {
        "num_shares": 1.0,
        "reconstruction_threshold": 0.66,
        "max_weight": float(max(WEIGHTS)),
        "clipping_range": 0.5,
        "quantization_range": 2**22,
    }
    return secagg.SecAggSettings(**{**base, **change})


def _masked_replies(messages: list[Message]) -> list[Message]:
    return [
        m
        for m in messages
        if m.has_content()
        and Key.MASKED_PARAMETERS in m.content.config_records.get(RECORD_KEY_CONFIGS, {})
    ]


@pytest.mark.parametrize("num_shares", [1.0, 3])
def test_narrowed_secure_mean_equals_plain_weighted_mean(tmp_path: Path, num_shares: float) -> None:
    """SecAgg+ (masked vectors sent as uint32) = plain FedAvg = numpy, within the bound."""
    nodes = range(1, len(WEIGHTS) + 1)
    plain = _federate(InProcessGrid(_app(), {n: {} for n in nodes}), settings=None, clients=5)
    expected = [
        np.average(np.stack([_client_arrays(n)[i] for n in nodes]), axis=0, weights=WEIGHTS)
        for i in range(len(SHAPES))
    ]
    for got, want in zip(plain, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)

    settings = _settings(num_shares=num_shares)
    logs = {n: tmp_path / f"audit-{n}.jsonl" for n in nodes}
    inner = InProcessGrid(_app(), {n: {AUDIT_PATH_KEY: str(logs[n])} for n in nodes})
    grid = _SeenGrid(inner)
    secure = _federate(grid, settings=settings, clients=5)

    bound = secagg.quantization_error_bound(settings, [float(w) for w in WEIGHTS])
    worst = max(float(np.max(np.abs(s - p))) for s, p in zip(secure, plain, strict=True))
    assert 0 < worst <= bound  # quantised (not the plain path in disguise), within the bound

    # What left each node: the masked vectors as uint32, the first (weight factor) too.
    masked = _masked_replies(inner.sent)
    assert len(masked) == 5
    for reply in masked:
        blobs = reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        arrays = [bytes_to_ndarray(b) for b in blobs]
        assert [a.dtype for a in arrays] == [np.dtype(np.uint32)] * (len(SHAPES) + 1)
        assert [a.shape for a in arrays[1:]] == SHAPES
    # Flower's workflow was handed them widened back to int64, as its own mod builds them.
    assert len(_masked_replies(grid.seen)) == 5
    for reply in _masked_replies(grid.seen):
        blobs = reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        assert {bytes_to_ndarray(b).dtype for b in blobs} == {np.dtype(np.int64)}
    # The audit log hashes exactly the narrowed bytes that left.
    sent_hashes = {
        hashlib.sha256(
            recorddict_to_proto(m.content).SerializeToString(deterministic=True)
        ).hexdigest()
        for m in masked
    }
    logged = [json.loads(x) for n in nodes for x in logs[n].read_text().splitlines()]
    collect = [x for x in logged if x["stage"] == Stage.COLLECT_MASKED_VECTORS]
    assert {x["sha256"] for x in collect} == sent_hashes
    assert len(logged) == 4 * 5  # one line per stage per node


def test_narrowing_halves_the_masked_vector_bytes() -> None:
    """The collect-masked-vectors replies, as counted by the server, with and without it."""
    from flwr.client.mod import secaggplus_mod

    from client import secagg as client_secagg

    def counted(app: ClientApp) -> int:
        inner = InProcessGrid(app, {n: {} for n in range(1, 6)})
        grid = secagg.WideningGrid(inner)
        _federate(grid, settings=_settings(), clients=5)
        return grid.take()[0]  # uplink: every reply of the round, as the server counts it

    def unnarrowed(msg, ctxt, call_next):  # type: ignore[no-untyped-def]
        if client_secagg.is_secagg_message(msg):
            return secaggplus_mod(msg, ctxt, call_next)
        return call_next(msg, ctxt)

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return _FixedClient(int(context.node_id), False).to_client()

    narrowed = counted(_app())
    flower = counted(ClientApp(client_fn=client_fn, mods=[unnarrowed]))
    values = 5 * (1 + sum(int(np.prod(s)) for s in SHAPES))
    assert flower - narrowed == 4 * values  # int64 → uint32: 4 bytes less per value


def test_dropout_after_key_exchange_with_narrowing_gives_survivors_mean() -> None:
    """Client 4 fails in the masked-vector stage: its pairwise masks are rebuilt by the
    server (int64 arithmetic on the widened arrays) and the survivors' mean comes out."""
    nodes = range(1, len(WEIGHTS) + 1)
    settings = _settings()
    inner = InProcessGrid(_app(failing=frozenset({4})), {n: {} for n in nodes})
    secure = _federate(secagg.WideningGrid(inner), settings=settings, clients=5)
    survivors = [n for n in nodes if n != 4]
    weights = [WEIGHTS[n - 1] for n in survivors]
    expected = [
        np.average(np.stack([_client_arrays(n)[i] for n in survivors]), axis=0, weights=weights)
        for i in range(len(SHAPES))
    ]
    bound = secagg.quantization_error_bound(settings, [float(w) for w in weights])
    worst = max(float(np.max(np.abs(s - e))) for s, e in zip(secure, expected, strict=True))
    assert worst <= bound
    assert len(_masked_replies(inner.sent)) == 4


class _RefusingClient(NumPyClient):
    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        from common.errors import Refused

        raise Refused("privacy budget: this node's lifetime ε budget is reached")


def test_refusals_under_secagg_are_counted_as_refusals_and_end_the_run(tmp_path: Path) -> None:
    """Refusing nodes withdraw with an error reply (a zero update would expose the others);
    the server must still see refusals, not failures: every node refused, the run ends."""
    from common.config import load_config
    from server.outputs import RunOutputs
    from server.rounds import RoundBook

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return _RefusingClient().to_client()

    inner = InProcessGrid(ClientApp(client_fn=client_fn, mods=client_mods()), {1: {}, 2: {}})
    grid = secagg.WideningGrid(inner)
    _federate(grid, settings=_settings(), clients=2)
    refused = grid.take_refusals()
    # Each refusal names its client, so the run's one line says who refused and why.
    assert len(refused) == 2
    for line in refused:
        assert re.fullmatch(
            r"client \S+: privacy budget: this node's lifetime ε budget is reached", line
        )
    assert grid.take_refusals() == []

    record = {"round": 1, "num_sampled": 2}
    secagg.count_refusals(record, refused)
    config = load_config(None, ["secure-aggregation.enabled=true", "federation.num-clients=2",
                                "federation.clients-per-round=2"])  # fmt: skip
    book = RoundBook(config, RunOutputs(tmp_path), lambda arrays, folder: None, secagg=_settings())
    decision = book.close_round(record, 1.0, [np.zeros(3, np.float32)], (0, 0))
    assert decision is Next.END and record["failed"] is False
    assert record["num_refused"] == 2 and "every sampled client refused" in record["stopped"]
    assert record["stop_outcome"] == "budget"  # exit 4, not 3: the budget is spent
