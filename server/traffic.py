"""Count the bytes a run really moves: every message's content, protocol messages included.

(This grid is also where outgoing arrays are packed into one: common/transport.py.)

Wraps Flower's Grid; each request (downlink) and reply (uplink) is measured as the size
of its serialised RecordDict, so SecAgg+'s key exchange and masked vectors count as
much as plain adapter deltas do.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from common.transport import pack

REPLY_POLL_FIRST = 0.005  # the first wait after a push; doubled until the grid's cap
REPLY_POLL_INTERVAL = 0.1  # cap for a remote grid: every pull is a request to the SuperLink
# Cap for the simulation's in-process grid, where a pull is a dictionary look-up: with
# 0.1 s a round's end was noticed up to 0.1 s late, so round times fell into 0.1 s steps
# (scale benchmark: 0.27 or 0.37 s for the same work).
IN_PROCESS_POLL_INTERVAL = 0.01


def content_bytes(message: Message) -> int:
    if not message.has_content():
        return 0
    return int(recorddict_to_proto(message.content).ByteSize())


class CountingGrid(Grid):
    """A Grid that forwards everything and counts bytes both ways."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.uplink = 0
        self.downlink = 0
        self.poll_cap = (
            IN_PROCESS_POLL_INTERVAL if isinstance(inner, InMemoryGrid) else REPLY_POLL_INTERVAL
        )

    def take(self) -> tuple[int, int]:
        """Bytes (uplink, downlink) since the last call."""
        counts = (self.uplink, self.downlink)
        self.uplink = self.downlink = 0
        return counts

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        for message in messages:  # one array per record on the wire (common/transport.py)
            if message.has_content():
                message.content = pack(message.content)
        self.downlink += sum(content_bytes(m) for m in messages)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self.uplink += sum(content_bytes(m) for m in replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull replies until all are in, waiting 5, 10, 20, … ms up to
        ``poll_cap`` between pulls (0.1 s; 0.01 s for the simulation's in-process grid).

        The same loop as Flower's grids, with a shorter poll: the deployed ServerApp's
        HttpGrid waits a fixed 3 s between pulls (flwr 1.41), which added on average 1.5 s
        to each of a SecAgg+ round's four stages. A fixed 0.1 s still cost about 0.05 s
        an exchange, four times a SecAgg+ round; the first short waits catch the quick
        protocol stages (key setup, unmasking) when their replies are ready.
        """
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        wait = REPLY_POLL_FIRST
        while deadline is None or time.monotonic() < deadline:
            pulled = list(self.pull_messages(pending))
            replies.extend(pulled)
            pending -= {m.metadata.reply_to_message_id for m in pulled}
            if not pending:
                break
            time.sleep(wait)
            wait = min(2 * wait, self.poll_cap)
        return replies
