"""Flower's ``flower-supernode``, unchanged but for how long an idle node sleeps.

(It also retries objects it is still waiting for sooner: deploy/pull_backoff.py.)

flwr 1.41's SuperNode asks the SuperLink for a message, and when none is waiting it
sleeps a fixed 3 s (``time.sleep(3)`` in ``flwr/supernode/start_client_internal.py``;
no flag or variable sets it). A SecAgg+ round is four messages in a row, each waiting on
average half that sleep before the node even sees it, which alone costs ~6 s a round.
This launcher runs Flower's own entry point with ``sleep`` in that one module capped at
``--poll-interval`` seconds (default 0.25). The price is more pull requests to the
SuperLink from an idle node (4 a second instead of one every 3 s), which is negligible
for the tens of organisations a federation has.

If a Flower upgrade no longer has that fixed sleep, the launcher refuses to start and
says so, rather than silently patching something else.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Sequence
from types import SimpleNamespace

import flwr.supernode.start_client_internal as internal

from deploy.pull_backoff import shorten_pull_backoff

DEFAULT_POLL_INTERVAL = 0.25
_FIXED_SLEEP = "time.sleep(3)"


def cap_idle_sleep(interval: float) -> None:
    """Make ``time.sleep`` in Flower's SuperNode loop sleep at most ``interval`` seconds."""
    if _FIXED_SLEEP not in inspect.getsource(internal):
        raise SystemExit(
            f"deploy/supernode.py: this flwr ({internal.__name__}) no longer has the fixed "
            f"{_FIXED_SLEEP} idle poll it shortens; run plain flower-supernode instead"
        )

    def capped(seconds: float) -> None:
        time.sleep(min(seconds, interval))

    names = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    internal.time = SimpleNamespace(**{**names, "sleep": capped})  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.supernode [--poll-interval S] FLOWER_SUPERNODE_ARGS...``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.supernode", add_help=False)
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL)
    ours, flower_args = parser.parse_known_args(argv)
    if not 0.01 <= ours.poll_interval <= 3.0:
        raise SystemExit("--poll-interval: give seconds between 0.01 and 3")
    cap_idle_sleep(ours.poll_interval)
    shorten_pull_backoff()
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
