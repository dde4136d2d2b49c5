"""The fault-tolerant exchange, against a scripted Grid: every way a client can fail in a
round becomes one named Fault, and only well-formed results reach the strategy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.common.constant import ErrorCode
from flwr.compat.common import recorddict_compat as compat

from common.adapters import AdapterSpec
from common.protocol import failed_client, failure_reason
from server.exchange import Fault, exchange
from server.strategy.fedavg import DeltaFedAvg

SPEC = AdapterSpec(names=("a",), shapes=((2, 2),))


@dataclass
class _Proxy:
    node_id: int


@dataclass
class _Grid:
    """Answers each node as scripted: "ok", "crash", "garbage", "status" or silence."""

    script: dict[int, str]
    timeouts: list[float | None] = field(default_factory=list)

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        self.timeouts.append(timeout)
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            kind = self.script.get(msg.metadata.dst_node_id)
            if kind == "ok" or kind == "status":
                code = Code.OK if kind == "ok" else Code.FIT_NOT_IMPLEMENTED
                res = FitRes(
                    Status(code, "no fit here"),
                    ndarrays_to_parameters([np.zeros((2, 2), dtype=np.float32)]),
                    10,
                    {"client_id": f"c{msg.metadata.dst_node_id}"},
                )
                replies.append(Message(compat.fitres_to_recorddict(res, True), reply_to=msg))
            elif kind == "crash":
                reason = failure_reason("c2", ValueError("out of memory"))
                err = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason)
                replies.append(Message(err, reply_to=msg))
            elif kind == "garbage":
                replies.append(Message(RecordDict(), reply_to=msg))
        return replies


@dataclass
class _Sink:
    names: dict[int, str] = field(default_factory=lambda: {4: "c4"})

    def client_name(self, node_id: int) -> str | None:
        return self.names.get(node_id)

    def add_faults(self, server_round: int, faults: list[Fault]) -> None:
        raise AssertionError("exchange returns faults; the step adds them")


@pytest.fixture
def in_a_server_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages need the identity of the process that builds them (a ServerApp's)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.mark.usefixtures("in_a_server_app")
def test_each_failure_becomes_one_named_fault_and_the_rest_are_results() -> None:
    grid = _Grid({1: "ok", 2: "crash", 3: "garbage", 4: "silent", 5: "status"})
    fitins = FitIns(ndarrays_to_parameters([np.zeros((2, 2), dtype=np.float32)]), {})
    instructions = [(_Proxy(n), fitins) for n in range(1, 6)]
    results, failures, faults = exchange(
        grid, instructions, server_round=7, stage="fit", timeout=2.5, sink=_Sink()
    )
    assert grid.timeouts == [2.5]
    assert [proxy.node_id for proxy, _ in results] == [1]
    assert len(failures) == 4
    by_node = {f.node_id: f for f in faults}
    assert set(by_node) == {2, 3, 4, 5}
    assert all(f.round == 7 and f.stage == "fit" for f in faults)
    assert by_node[2].kind == "crash" and by_node[2].client_id == "c2"
    assert by_node[2].reason == "client c2: ValueError: out of memory"
    assert by_node[3].kind == "garbage" and by_node[3].client_id is None
    assert "unreadable fit reply: KeyError" in by_node[3].reason
    assert by_node[4].kind == "timeout" and by_node[4].client_id == "c4"  # known from before
    assert "federation.round-timeout = 2.5 s" in by_node[4].reason
    assert by_node[5].kind == "crash" and "FIT_NOT_IMPLEMENTED" in by_node[5].reason


def test_failure_reasons_name_the_client_and_only_ours_are_parsed() -> None:
    assert failed_client(failure_reason("org-1", RuntimeError("x: y"))) == "org-1"
    assert failed_client("<class 'ZeroDivisionError'>:<'division by zero'>") is None


def _fitres(arrays: list[np.ndarray], n: object, cid: str) -> tuple[_Proxy, FitRes]:
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {"client_id": cid})  # type: ignore[arg-type]
    return _Proxy(int(cid)), res


@pytest.mark.parametrize(
    "bad, reason",
    [
        (
            lambda r: (r[0], FitRes(r[1].status, r[1].parameters, -3, r[1].metrics)),
            "num_examples = -3",
        ),
        (lambda r: (r[0], _with_tensors(r[1], [b"not an array"])), "not a list of numpy arrays"),
        (lambda r: (r[0], _with_tensors(r[1], [])), "0 arrays, expected 1"),
    ],
)
def test_strategy_rejects_garbage_updates_as_named_faults(bad, reason) -> None:  # type: ignore[no-untyped-def]
    good = np.full((2, 2), 0.5, dtype=np.float32)
    strategy = DeltaFedAvg(
        spec=SPEC, initial=[np.zeros((2, 2), np.float32)], clients_per_round=3, min_clients=2
    )
    results = [_fitres([good], 10, "1"), _fitres([good], 10, "2"), bad(_fitres([good], 10, "3"))]
    params, _ = strategy.aggregate_fit(4, results, [])
    assert params is not None
    record = strategy.records[4]
    assert record["num_clients"] == 2 and record["num_rejected"] == 1
    (fault,) = record["faults"]
    assert fault["client_id"] == "3" and fault["kind"] == "garbage" and fault["round"] == 4
    assert reason in fault["reason"] and fault["node_id"] == 3
    assert strategy.client_name(1) == "1"  # learned from the results


def _with_tensors(res: FitRes, tensors: list[bytes]) -> FitRes:
    params = ndarrays_to_parameters([])
    params.tensors = tensors
    return FitRes(res.status, params, res.num_examples, res.metrics)


@pytest.mark.usefixtures("in_a_server_app")
def test_a_node_that_timed_out_in_fit_is_not_waited_for_again_in_evaluation() -> None:
    """One dead node costs the round one round-timeout, not one per stage."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord
    from flwr.common import EvaluateIns
    from flwr.compat.common.recorddict_compat import parameters_to_arrayrecord
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    from server.exchange import evaluate_step

    strategy = DeltaFedAvg(
        spec=SPEC, initial=[np.zeros((2, 2), np.float32)], clients_per_round=3, min_clients=2
    )
    grid = _Grid({1: "ok", 2: "ok", 4: "silent"})
    fitins = FitIns(ndarrays_to_parameters([np.zeros((2, 2), dtype=np.float32)]), {})
    _, _, faults = exchange(
        grid, [(_Proxy(n), fitins) for n in (1, 2, 4)], server_round=3, stage="fit",
        timeout=1.0, sink=strategy,
    )  # fmt: skip
    strategy.add_faults(3, faults)
    assert strategy.timed_out(3) == {4} and strategy.timed_out(2) == set()

    params = ndarrays_to_parameters([np.zeros((2, 2), dtype=np.float32)])
    evalins = EvaluateIns(params, {})
    sent: list[int] = []

    class _Asked:
        def configure_evaluate(self, **_: object) -> list:
            return [(_Proxy(n), evalins) for n in (1, 2, 4)]

        def aggregate_evaluate(self, *_: object) -> None:
            return None

    class _Recording(_Grid):
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            messages = list(messages)
            sent.extend(m.metadata.dst_node_id for m in messages)
            return []

    state = SimpleNamespace(
        config_records={MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: 3})},
        array_records={MAIN_PARAMS_RECORD: parameters_to_arrayrecord(params, keep_input=True)},
    )
    context = SimpleNamespace(state=state, strategy=_Asked(), client_manager=None)
    evaluate_step(timeout=1.0, sink=strategy)(_Recording({}), context)  # type: ignore[arg-type]
    assert sorted(sent) == [1, 2]
