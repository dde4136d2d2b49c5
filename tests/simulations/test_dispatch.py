"""The simulation dispatcher: the same messages, in the same order, as Flower's own loop.

Runs on Flower's real in-memory LinkState and grid (as ``run_simulation`` builds them),
with Flower's original dispatcher as the oracle.
"""

from __future__ import annotations

import threading
from queue import Queue
from typing import Any

import pytest
from flwr.app import RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from simulations import dispatch

RUN_ID = 7


class _OneSweep(threading.Event):
    """Stops a dispatcher loop after its first sweep (the loop waits once per sweep)."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return True


def _federation(nodes: int, destinations: list[int]) -> tuple[Any, dict[int, int], list[int]]:
    """A LinkState with ``nodes`` registered nodes and one message per destination index."""
    factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    mapping = vce_api._register_nodes(nodes, factory)
    state = factory.state()
    run = Run.create_empty(run_id=RUN_ID)
    run.primary_task_id = 1
    run.federation_id = NOOP_FEDERATION_ID
    state.run_ids[RUN_ID] = RunRecord(run=run)
    state.task_store[1] = Task(task_id=1, run_id=RUN_ID)
    TaskIdentity.task_id, TaskIdentity.run_id = 1, RUN_ID
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    node_ids = list(mapping)
    messages = [
        grid.create_message(RecordDict(), "train", node_ids[i], "round-1") for i in destinations
    ]
    list(grid.push_messages(messages))
    return state, mapping, node_ids


def _sweep(dispatcher: Any, state: Any, mapping: dict[int, int]) -> list[int]:
    queue: Queue = Queue()
    dispatcher(state, queue, mapping, _OneSweep())
    out = []
    while not queue.empty():
        message = queue.get()
        assert message.metadata.delivered_at != ""  # marked delivered, as Flower marks it
        out.append(message.metadata.dst_node_id)
    return out


@pytest.mark.parametrize("destinations", [[3, 4, 5, 6, 7], [9, 0, 9, 2], []])
def test_each_sweep_queues_what_flowers_dispatcher_queues(destinations: list[int]) -> None:
    ours, mapping, nodes = _federation(12, destinations)
    theirs, their_mapping, their_nodes = _federation(12, destinations)
    index = {n: i for i, n in enumerate(nodes)}
    their_index = {n: i for i, n in enumerate(their_nodes)}
    for _ in range(3):  # a node with two messages gets its second one in the next sweep
        got = [index[n] for n in _sweep(dispatch.add_messages_by_destination, ours, mapping)]
        want = [their_index[n] for n in _sweep(dispatch._FLOWER_DISPATCHER, theirs, their_mapping)]
        assert got == want
    assert dispatch.pending_destinations(ours) == set()


def test_only_nodes_with_a_message_are_asked() -> None:
    state, mapping, nodes = _federation(200, [5, 150])
    asked: list[int] = []
    original = state.get_message_ins

    def counting(*, node_id: int, limit: int | None, **kw: Any) -> Any:
        asked.append(node_id)
        return original(node_id=node_id, limit=limit, **kw)

    state.get_message_ins = counting
    assert _sweep(dispatch.add_messages_by_destination, state, mapping) == [nodes[5], nodes[150]]
    assert asked == [nodes[5], nodes[150]]  # Flower's loop asks all 200 nodes every sweep


def test_installed_as_the_simulation_engines_dispatcher(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(vce_api, "add_messages_to_queue", dispatch._FLOWER_DISPATCHER)
    dispatch.dispatch_by_destination()
    assert vce_api.add_messages_to_queue is dispatch.add_messages_by_destination
