"""One round's exchange with the sampled clients that survives whatever a client does.

Flower's default legacy fit and evaluate workflows wait for every reply without a time
limit (``round_timeout`` reaches only SecAgg+) and convert replies without a guard, so
one hung client stalls the run and one malformed reply ends it. These steps send the
same messages and hand the strategy the same results, but

- wait at most ``federation.round-timeout`` seconds: a client that has not answered by
  then is dropped from the round (kind ``timeout``), and is not asked to evaluate in the
  same round (a dead node would otherwise cost a second timeout);
- turn an error reply (the ClientApp raised) into a dropped client (kind ``crash``);
- turn a reply that is not a fit/evaluate result (missing records, wrong types) into a
  dropped client (kind ``garbage``); the strategy further rejects results whose arrays
  are not this adapter (wrong count or shapes, NaN/Inf; also ``garbage``);

and report every dropped client as a :class:`Fault` (round, stage, kind, client, node,
reason), which ends up in the round's line of ``metrics.jsonl`` under ``faults``. The
round then completes with the rest if at least ``federation.min-clients`` remain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

import flwr.compat.common.recorddict_compat as compat
from flwr.app import Message
from flwr.app.message_type import MessageType
from flwr.common import Code
from flwr.server import LegacyContext
from flwr.server.client_proxy import ClientProxy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from common.protocol import failed_client

log = logging.getLogger("privatune.server")

MAX_REASON_CHARS = 500  # a traceback in metrics.jsonl would bury the line


@dataclass(frozen=True)
class Fault:
    """One client dropped from one round, and why."""

    round: int
    stage: str  # "fit" or "evaluate"
    kind: str  # "crash", "timeout" or "garbage"
    client_id: str | None  # None: the node never told us who it is
    node_id: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reason"] = self.reason[:MAX_REASON_CHARS]
        return data


class FaultSink(Protocol):
    """Where faults go and who nodes are: implemented by the strategy (server/strategy)."""

    def client_name(self, node_id: int) -> str | None: ...

    def add_faults(self, server_round: int, faults: list[Fault]) -> None: ...

    def timed_out(self, server_round: int) -> set[int]: ...


Stage = Callable[[Grid, LegacyContext], None]


def _current(context: LegacyContext) -> tuple[int, Any]:
    cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
    record = context.state.array_records[MAIN_PARAMS_RECORD]
    return int(cast(int, cfg[Key.CURRENT_ROUND])), compat.arrayrecord_to_parameters(
        record, keep_input=True
    )


def exchange(
    grid: Grid,
    instructions: list[tuple[ClientProxy, Any]],
    *,
    server_round: int,
    stage: str,
    timeout: float | None,
    sink: FaultSink,
) -> tuple[list[tuple[ClientProxy, Any]], list[BaseException], list[Fault]]:
    """Send one instruction per client; return (results, failures, faults)."""
    is_fit = stage == "fit"
    encode = compat.fitins_to_recorddict if is_fit else compat.evaluateins_to_recorddict
    proxies = {proxy.node_id: proxy for proxy, _ in instructions}
    messages = [
        Message(
            content=encode(ins, True),
            dst_node_id=proxy.node_id,
            message_type=MessageType.TRAIN if is_fit else MessageType.EVALUATE,
            group_id=str(server_round),
        )
        for proxy, ins in instructions
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    results: list[tuple[ClientProxy, Any]] = []
    faults: list[Fault] = []

    def drop(node_id: int, kind: str, reason: str, client: str | None = None) -> None:
        who = client or sink.client_name(node_id)
        faults.append(Fault(server_round, stage, kind, who, node_id, reason))

    answered = set()
    for reply in replies:
        node_id = reply.metadata.src_node_id
        answered.add(node_id)
        if node_id not in proxies:
            continue
        if reply.has_error():
            reason = str(reply.error.reason)
            drop(node_id, "crash", reason, failed_client(reason))
            continue
        try:
            if is_fit:
                res = compat.recorddict_to_fitres(reply.content, False)
            else:
                res = compat.recorddict_to_evaluateres(reply.content)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            drop(node_id, "garbage", f"unreadable {stage} reply: {type(exc).__name__}: {exc}")
            continue
        if res.status.code != Code.OK:
            drop(node_id, "crash", f"status {res.status.code.name}: {res.status.message}")
            continue
        results.append((proxies[node_id], res))
    for node_id in proxies.keys() - answered:
        drop(node_id, "timeout", f"no {stage} reply within federation.round-timeout = {timeout} s")
    for fault in faults:
        log.error(
            "round %s: %s client %s (node %s) dropped: %s: %s",
            server_round,
            stage,
            fault.client_id or "?",
            fault.node_id,
            fault.kind,
            fault.reason[:MAX_REASON_CHARS],
        )
    failures: list[BaseException] = [RuntimeError(f.reason) for f in faults]
    return results, failures, faults


def fit_step(*, timeout: float | None, sink: FaultSink) -> Stage:
    """The fit step of a plain (not secure-aggregation) round."""

    def step(grid: Grid, context: LegacyContext) -> None:
        server_round, parameters = _current(context)
        instructions = context.strategy.configure_fit(
            server_round=server_round, parameters=parameters, client_manager=context.client_manager
        )
        results: list[tuple[ClientProxy, Any]] = []
        failures: list[BaseException] = []
        if instructions:  # none: only central DP's Poisson sampling, whose round still releases
            results, failures, faults = exchange(
                grid, instructions, server_round=server_round, stage="fit", timeout=timeout,
                sink=sink,
            )  # fmt: skip
            sink.add_faults(server_round, faults)
        aggregated, _ = context.strategy.aggregate_fit(server_round, results, failures)
        if aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                aggregated, True
            )

    return step


def evaluate_step(*, timeout: float | None, sink: FaultSink) -> Stage:
    """Federated evaluation, with the same time limit and guards as the fit step."""

    def step(grid: Grid, context: LegacyContext) -> None:
        server_round, parameters = _current(context)
        instructions = context.strategy.configure_evaluate(
            server_round=server_round, parameters=parameters, client_manager=context.client_manager
        )
        # A node that let this round's fit time out is not waited for a second time: the
        # round then takes one round-timeout, not two.
        silent = sink.timed_out(server_round)
        instructions = [(proxy, ins) for proxy, ins in instructions if proxy.node_id not in silent]
        if not instructions:
            return
        results, failures, faults = exchange(
            grid,
            instructions,
            server_round=server_round,
            stage="evaluate",
            timeout=timeout,
            sink=sink,
        )
        sink.add_faults(server_round, faults)
        context.strategy.aggregate_evaluate(server_round, results, failures)

    return step
