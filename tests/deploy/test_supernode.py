"""deploy/supernode.py: Flower's SuperNode with its fixed 3 s idle poll shortened."""

from __future__ import annotations

import inspect
import time

import flwr.supernode.start_client_internal as internal
import pytest

from deploy.supernode import cap_idle_sleep, main


def test_flower_still_has_the_fixed_idle_sleep_we_shorten() -> None:
    """If a Flower upgrade changes the poll, this fails before any node is slowed or broken."""
    loop = inspect.getsource(internal.start_client_internal)
    assert "time.sleep(3)" in loop


def test_idle_sleep_is_capped_and_the_rest_of_time_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(internal, "time", internal.time)  # restored after the test
    cap_idle_sleep(0.05)
    start = time.monotonic()
    internal.time.sleep(3)
    assert time.monotonic() - start < 1.0
    assert internal.time.time is time.time and internal.time.monotonic is time.monotonic
    assert time.sleep is not internal.time.sleep  # only Flower's module sees the cap


def test_poll_interval_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internal, "time", internal.time)
    with pytest.raises(SystemExit, match="--poll-interval"):
        main(["--poll-interval", "10", "--superlink", "127.0.0.1:1"])
