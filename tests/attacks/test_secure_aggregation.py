"""A malicious coordinator against SecAgg+ (SECURITY.md, "Secure aggregation").

Real nodes (client/app.py on node folders, real DP-SGD, privatune's client mods) answer
Flower's own SecAgg+ workflow through an in-process grid; the coordinator's moves are
rewrites of its messages, or a second session of its choosing. Each attack asserts what
the coordinator is left with: no masked vector, or no share that would unmask one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server.strategy import FedAvg

from client.app import make_client_app
from client.runtime import get_runtime
from common import protocol
from common.adapters import get_adapter_arrays
from common.config import RunConfig
from common.privacy.ledger import PrivacyLedger
from server import secagg
from server.rounds import Next
from server.workflow import legacy_context, run_rounds
from tests.support.grids import InProcessGrid, task_identity  # noqa: F401 (fixture)
from tests.support.nodes import make_node, node_rows, node_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

Tamper = Callable[[Message], Message]


class CoordinatorGrid(InProcessGrid):
    """The in-process grid, with the coordinator free to rewrite what it sends; keeps
    each node's reply with the SecAgg+ stage that asked for it."""

    def __init__(self, app, node_configs, tamper: Tamper | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, node_configs)
        self.tamper = tamper or (lambda m: m)
        self.replies: list[tuple[str | None, Message]] = []

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        return super().push_messages([self.tamper(m) for m in messages])

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        stages = {}
        for mid in message_ids:
            msg = self.pending.get(mid)
            cfg = None if msg is None else msg.content.config_records.get(RECORD_KEY_CONFIGS)
            stages[mid] = None if cfg is None else cfg.get(Key.STAGE)
        replies = list(super().pull_messages(message_ids))
        for reply in replies:
            self.replies.append((stages.get(reply.metadata.reply_to_message_id), reply))
        return replies


def _config(tiny_bert: Path) -> RunConfig:
    return node_run_config(
        tiny_bert, "secure-aggregation.enabled=true", "secure-aggregation.fixed-weight=true"
    )


def _nodes(root: Path, ids: list[int], **policy: object) -> dict[int, dict]:
    """Node folders with different rows; ``policy`` per node id as {id: {...}} or for all."""
    configs = {}
    for i in ids:
        extra = policy.get(str(i), policy.get("all", {}))
        rows = node_rows(24)[i:] + node_rows(24)[:i]  # same count, another order and mix
        ctx = make_node(root / f"org{i}", rows=rows, node_id=i, **extra)  # type: ignore[arg-type]
        configs[i] = dict(ctx.node_config)
    return configs


def _round(grid: CoordinatorGrid, config: RunConfig, adapter: list[np.ndarray]) -> list | None:
    """One SecAgg+ round of Flower's workflow; the new global arrays, or None if halted."""
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=len(grid.contexts),
        min_available_clients=len(grid.contexts),
        initial_parameters=ndarrays_to_parameters(adapter),
        on_fit_config_fn=lambda rnd: {protocol.SERVER_ROUND: rnd, protocol.RUN_KEY: "run"},
        accept_failures=True,
    )
    out: list = []

    def on_round_end(server_round: int, _seconds: float, arrays: list[np.ndarray]) -> Next:
        out[:] = [server_round, arrays]
        return Next.CONTINUE

    settings = secagg.SecAggSettings(
        num_shares=1.0,
        reconstruction_threshold=0.66,
        max_weight=1.0,
        clipping_range=8.0,
        quantization_range=2**22,
    )
    server = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    run_rounds(
        grid,
        legacy_context(server, strategy=strategy, num_rounds=1, round_timeout=None),
        on_round_end=on_round_end,
        fit_step=secagg.workflow(settings, timeout=None),
        evaluate_step=lambda *_: None,
    )
    arrays = out[1]
    moved = any(not np.array_equal(a, b) for a, b in zip(arrays, adapter, strict=True))
    return arrays if moved else None


def _stage_replies(grid: CoordinatorGrid, stage: str) -> dict[int, Message]:
    """Each node's (last) reply to ``stage``."""
    return {r.metadata.src_node_id: r for s, r in grid.replies if s == stage}


def _ledger(root: Path, node: int) -> PrivacyLedger:
    return PrivacyLedger.from_json((root / f"org{node}" / "privacy_ledger.json").read_text())


def _masked(reply: Message) -> bool:
    if not reply.has_content():
        return False
    return Key.MASKED_PARAMETERS in reply.content.config_records.get(RECORD_KEY_CONFIGS, {})


@pytest.fixture
def setup(tiny_bert: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = _config(tiny_bert)
    adapter = get_adapter_arrays(get_runtime(config).model)
    return config, adapter, tmp_path


def _grid(
    config: RunConfig, nodes: dict[int, dict], tamper: Tamper | None = None
) -> CoordinatorGrid:
    return CoordinatorGrid(make_client_app(config), nodes, tamper)


# ---------------------------------------------------------------- the attacks


def test_a_plain_train_message_is_refused_by_a_node_that_requires_secagg(setup) -> None:  # type: ignore[no-untyped-def]
    """The run config says SecAgg+ is on; the message itself bypasses the protocol."""
    config, adapter, root = setup
    nodes = _nodes(root, [1], all={"require_secure_aggregation": True})
    grid = InProcessGrid(make_client_app(config), nodes)
    fit_config = {
        protocol.SERVER_ROUND: 1,
        protocol.SECAGG_CLIPPING_RANGE: 8.0,  # what a SecAgg+ run's fit config carries
        protocol.SECAGG_MAX_WEIGHT: 1.0,
    }
    ins = FitIns(ndarrays_to_parameters(adapter), fit_config)
    message = Message(
        content=compat.fitins_to_recorddict(ins, True),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    (reply,) = grid.send_and_receive([message])
    res = compat.recorddict_to_fitres(reply.content, False)
    assert res.metrics["refused"] is True and "SecAgg+ protocol" in str(res.metrics["refusal"])
    assert res.num_examples == 0
    assert not (root / "org1" / "privacy_ledger.json").exists()  # nothing trained or spent


def test_a_refusing_node_sends_nothing_and_the_sum_of_one_is_never_unmasked(setup) -> None:  # type: ignore[no-untyped-def]
    """Two nodes, node 2 over its budget. Before: node 2 took part with a zero update, so
    the unmasked "sum" was node 1's update alone. Now node 2 sends no masked vector, and
    node 1 will not unmask a sum without another node in it."""
    config, adapter, root = setup
    nodes = _nodes(root, [1, 2], **{"2": {"max_epsilon": 0.01}})
    grid = _grid(config, nodes)
    assert _round(grid, config, adapter) is None  # the round halted: nothing released
    collect = _stage_replies(grid, Stage.COLLECT_MASKED_VECTORS)
    assert collect[2].has_error() and "refused" in collect[2].error.reason
    assert _masked(collect[1]) and not _masked(collect[2])

    # The coordinator ignores the halt and asks node 1 to unmask anyway, alone.
    forged = Message(
        content=RecordDict(
            {
                RECORD_KEY_CONFIGS: ConfigRecord(
                    {
                        Key.STAGE: Stage.UNMASK,
                        Key.ACTIVE_NODE_ID_LIST: [1],
                        Key.DEAD_NODE_ID_LIST: [2],
                    }
                )
            }
        ),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )
    (reply,) = grid.send_and_receive([forged])
    assert reply.has_error() and "min-secagg-peers" in reply.error.reason


def test_a_threshold_of_one_is_refused_at_setup(setup) -> None:  # type: ignore[no-untyped-def]
    """Flower's own mod accepts any threshold the coordinator sends; with 1, one node's
    shares unmask another, and a session of one passes every check."""
    config, adapter, root = setup

    def threshold_one(msg: Message) -> Message:
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if cfg is not None and cfg.get(Key.STAGE) == Stage.SETUP:
            cfg[Key.THRESHOLD] = 1
        return msg

    grid = _grid(config, _nodes(root, [1, 2]), threshold_one)
    assert _round(grid, config, adapter) is None
    setup_replies = _stage_replies(grid, Stage.SETUP)
    assert all(r.has_error() and "majority" in r.error.reason for r in setup_replies.values())


def test_an_unmask_request_naming_a_node_active_and_dead_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    """Both shares of node 3 (its mask seed and its key) would unmask node 3 alone."""
    config, adapter, root = setup

    def both(msg: Message) -> Message:
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if cfg is not None and cfg.get(Key.STAGE) == Stage.UNMASK:
            cfg[Key.DEAD_NODE_ID_LIST] = [3]
        return msg

    grid = _grid(config, _nodes(root, [1, 2, 3]), both)
    assert _round(grid, config, adapter) is None
    unmask = _stage_replies(grid, Stage.UNMASK)
    assert unmask and all(r.has_error() for r in unmask.values())
    assert all("listed active and dead" in r.error.reason for r in unmask.values())


def test_a_replay_into_another_set_of_nodes_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    """The coordinator asks round 1 of 3 nodes, then asks it again of nodes 1 and 2
    only (a new Flower run, the same run key and adapter). Replaying their cached updates
    would let it subtract the two sums and read node 3's update."""
    config, adapter, root = setup
    nodes = _nodes(root, [1, 2, 3])
    first = _round(_grid(config, nodes), config, adapter)
    assert first is not None  # an honest session completes
    spent = [
        PrivacyLedger.from_json((root / f"org{i}/privacy_ledger.json").read_text()) for i in (1, 2)
    ]

    second = _grid(config, {i: nodes[i] for i in (1, 2)})
    assert _round(second, config, adapter) is None
    collect = _stage_replies(second, Stage.COLLECT_MASKED_VECTORS)
    assert set(collect) == {1, 2} and not any(_masked(r) for r in collect.values())
    assert all("already answered" in r.error.reason for r in collect.values())

    # The same set again is no new information: the same reply, the same sum, no new ε.
    again = _round(_grid(config, nodes), config, adapter)
    assert again is not None
    for got, want in zip(again, first, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)  # re-quantised, same values
    for i, before in zip((1, 2), spent, strict=True):
        assert _ledger(root, i).history == before.history


def test_a_replayed_session_must_unmask_the_set_the_first_one_did(setup) -> None:  # type: ignore[no-untyped-def]
    """Session 1: the coordinator claims node 3 dropped out after it sent its masked
    vector, so nodes 1 and 2 unmask the sum of {1, 2}. Session 2 replays the same round
    with all three and asks to unmask {1, 2, 3}: the difference would be node 3's update."""
    config, adapter, root = setup
    nodes = _nodes(root, [1, 2, 3])

    def drop_three(msg: Message) -> Message:
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        if cfg is not None and cfg.get(Key.STAGE) == Stage.UNMASK:
            cfg[Key.ACTIVE_NODE_ID_LIST] = [1, 2]
            cfg[Key.DEAD_NODE_ID_LIST] = [3]
        return msg

    first = _grid(config, nodes, drop_three)
    with contextlib.suppress(Exception):  # the coordinator's own lie breaks its unmasking
        _round(first, config, adapter)
    unmask = _stage_replies(first, Stage.UNMASK)
    assert not unmask[1].has_error() and not unmask[2].has_error()  # they answered {1, 2}

    second = _grid(config, nodes)
    assert _round(second, config, adapter) is None
    unmask = _stage_replies(second, Stage.UNMASK)
    assert unmask[1].has_error() and "already unmasked" in unmask[1].error.reason
    assert unmask[2].has_error() and "already unmasked" in unmask[2].error.reason
