"""Flower's object pulls retry 50 ms after a miss instead of 1 s, and at least twice a second.

In flwr 1.41 a message travels as a tree of objects (an adapter is ~60 of them), and the
receiver is told about a message as soon as its head is stored, usually while the sender
is still pushing the rest. Every receiver (a SuperNode pulling from the SuperLink, a
ClientApp pulling from its SuperNode, the ServerApp pulling replies) then calls
``pull_objects``, whose retry for a not-yet-pushed object starts at a 1 s back-off
(``PULL_INITIAL_BACKOFF``; no flag or variable sets it) and doubles. Measured on loopback
with two nodes, that wait cost ~1 s at each hop of a SecAgg+ round's training message and
of several replies: a third of a deployed round.

:func:`shorten_pull_backoff` changes those defaults in the process it runs in (our
SuperNode launcher and every task process our SuperExec launcher starts): the first
retry after 50 ms, doubling up to 0.5 s (Flower: 1 s doubling up to 10 s). So that a slow
sender still gets as long as before, the per-object try limit is lifted and Flower's 2 h
limit (``PULL_MAX_TIME``) alone bounds the wait. The price: a receiver that is waiting
asks twice a second per pull thread instead of every 10 s, for the seconds a push takes.
"""

from __future__ import annotations

from flwr.supercore.inflatable import inflatable_utils

INITIAL_BACKOFF = 0.05  # seconds before the first retry of a missing object
BACKOFF_CAP = 0.5  # longest wait between retries
PULLERS = ("pull_objects", "pull_and_inflate_object_from_tree")
TUNED = ("initial_backoff", "backoff_cap", "max_tries_per_object")


def shorten_pull_backoff(initial: float = INITIAL_BACKOFF, cap: float = BACKOFF_CAP) -> None:
    """Make Flower's object pulls retry after ``initial`` s, doubling up to ``cap`` s."""
    for name in PULLERS:
        puller = getattr(inflatable_utils, name, None)
        defaults = getattr(puller, "__kwdefaults__", None) or {}
        if not set(TUNED) <= set(defaults):
            raise SystemExit(
                f"deploy/pull_backoff.py: this flwr's {inflatable_utils.__name__}.{name} no "
                f"longer takes {', '.join(TUNED)}; run Flower's own commands instead"
            )
        tuned = {"initial_backoff": initial, "backoff_cap": cap, "max_tries_per_object": None}
        puller.__kwdefaults__ = {**defaults, **tuned}  # type: ignore[union-attr]
