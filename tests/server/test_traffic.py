"""CountingGrid: Flower's push-then-pull loop with a short poll, counting bytes both ways."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from server.traffic import (
    IN_PROCESS_POLL_INTERVAL,
    REPLY_POLL_FIRST,
    REPLY_POLL_INTERVAL,
    CountingGrid,
)


class _SlowGrid:
    """Replies to message i become available on the (i+1)-th pull (nodes answer in turn)."""

    def __init__(self) -> None:
        self.pulls = 0

    def push_messages(self, messages: Any) -> list[str]:
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids: Any) -> list[Any]:
        self.pulls += 1
        ready = {f"m{i}" for i in range(self.pulls)} & set(ids)
        return [_reply(mid) for mid in sorted(ready)]


def _reply(mid: str) -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(reply_to_message_id=mid), has_content=lambda: False
    )


def _message() -> Any:
    return SimpleNamespace(has_content=lambda: False)


def test_every_reply_is_collected_once_with_a_short_poll() -> None:
    inner = _SlowGrid()
    grid = CountingGrid(inner)  # type: ignore[arg-type]
    start = time.monotonic()
    replies = list(grid.send_and_receive([_message() for _ in range(3)], timeout=30))
    elapsed = time.monotonic() - start
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert inner.pulls == 3
    # Two waits between three pulls, 5 ms then 10 ms, where Flower's HttpGrid waits 2 × 3 s.
    assert 3 * REPLY_POLL_FIRST <= elapsed < 2 * REPLY_POLL_INTERVAL


def test_waits_double_up_to_the_poll_interval(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A slow node is polled every 0.1 s after the first quick pulls, not every 5 ms."""
    import server.traffic as traffic

    waits: list[float] = []
    monkeypatch.setattr(traffic.time, "sleep", waits.append)

    class _Late(_SlowGrid):
        def pull_messages(self, ids: Any) -> list[Any]:
            self.pulls += 1
            return [_reply("m0")] if self.pulls == 10 else []

    replies = list(CountingGrid(_Late()).send_and_receive([_message()], timeout=None))
    assert len(replies) == 1
    assert waits == [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1, 0.1, 0.1]


def test_the_simulation_grid_is_polled_every_10_ms(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """In-process pulls are cheap: a late reply is noticed within 10 ms, not 100 ms."""
    import server.traffic as traffic

    waits: list[float] = []
    monkeypatch.setattr(traffic.time, "sleep", waits.append)

    class _LateInMemory(InMemoryGrid):  # Flower's simulation grid, without its state
        def __init__(self) -> None:
            self.pulls = 0

        def push_messages(self, messages: Any) -> list[str]:
            return ["m0"]

        def pull_messages(self, ids: Any) -> list[Any]:
            self.pulls += 1
            return [_reply("m0")] if self.pulls == 6 else []

    assert CountingGrid(_SlowGrid()).poll_cap == REPLY_POLL_INTERVAL  # type: ignore[arg-type]
    replies = list(CountingGrid(_LateInMemory()).send_and_receive([_message()], timeout=None))
    assert len(replies) == 1
    assert waits == [0.005, 0.01, 0.01, 0.01, 0.01] and IN_PROCESS_POLL_INTERVAL == 0.01


def test_timeout_returns_the_replies_so_far() -> None:
    class _Silent(_SlowGrid):
        def pull_messages(self, ids: Any) -> list[Any]:
            self.pulls += 1
            return [_reply("m0")] if self.pulls == 1 else []

    grid = CountingGrid(_Silent())  # type: ignore[arg-type]
    start = time.monotonic()
    replies = list(grid.send_and_receive([_message(), _message()], timeout=0.5))
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.5 <= time.monotonic() - start < 2.0
