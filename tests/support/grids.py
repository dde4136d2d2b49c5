"""An in-process grid: Flower's server side talks to real ClientApps in this process.

Each message is serialised and parsed again, as on the wire, then handed to a ClientApp
with the node's own Context (kept across messages, as a SuperNode keeps it). Tests that
play a malicious coordinator subclass it and rewrite messages before they are delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid


@pytest.fixture(autouse=True)
def task_identity():  # type: ignore[no-untyped-def]
    """Flower builds Messages only inside a task; give this test process the server's."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)  # noqa: SLF001
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved  # noqa: SLF001


def _wire(message: Message) -> Message:
    """The message as the other side parses it: serialised and read back."""
    return message_from_proto(message_to_proto(message))


class InProcessGrid(Grid):
    """Nodes 1..n answer synchronously through a ClientApp; records what each sent."""

    def __init__(self, app: ClientApp, node_configs: dict[int, dict]) -> None:
        self.app = app
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config=cfg, state=RecordDict(), run_config={})
            for nid, cfg in node_configs.items()
        }
        self.pending: dict[str, Message] = {}
        self.sent: list[Message] = []  # every reply, as it left the node

    @property
    def run(self) -> Any:
        return SimpleNamespace(run_id=1)

    def set_run(self, run: Any) -> None:  # pragma: no cover - never called
        pass

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def get_nodes(self) -> Iterable[Any]:  # pragma: no cover
        return []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.pending[msg.metadata.message_id] = _wire(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for mid in list(message_ids):
            msg = self.pending.pop(mid, None)
            if msg is None:
                continue
            reply = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            self.sent.append(reply)
            replies.append(_wire(reply))
        return replies

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        return self.pull_messages(self.push_messages(messages))
