"""A client's last reply, kept so that a round replayed after a server restart costs no ε,
and never so that a coordinator can subtract one secure sum from another.

When a server is killed during round r and resumed from its checkpoint of round r-1, it
asks the clients for round r again, with the very same global adapter. A client that had
already trained round r may already have released its update, so its ledger must keep
that round; training again would release a second, different noisy update and spend ε
twice. Instead the client answers with the reply it computed the first time: the same
release again is no new information, so no new ε.

The reply is keyed by (run, round, SHA-256 of the received adapter): a different global
adapter is a different question and is trained afresh. The round's ledger entries carry
the same key (common/privacy/ledger.py). The cache is written *before* the ledger (both
inside the ledger's lock), and a cached reply whose key the ledger does not hold is
charged before it is sent again, so whichever write a kill interrupts, the reply is
charged exactly once. Only the latest reply is kept.

Under SecAgg+ the same update sent into two sums of different nodes would let the
coordinator subtract them and read the difference: an exact replay is therefore allowed
only into a session of the very same participants (the nodes whose masked vectors this
one's is summed with), recorded with the reply; and the nodes a session's unmasking
covers are recorded too, so a replayed session unmasks the same set or none
(client/secagg.py). A reply sent in the clear is never replayed into a secure sum, nor
the other way round.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common import protocol
from common.atomic import write_bytes_atomic
from common.errors import Refused
from common.privacy.ledger import Entry, PrivacyLedger

META = "meta"  # the npz member holding the JSON metadata


class ReplayRefused(Refused):
    """A question already answered, asked again in a way that would expose the answer."""


def reply_key(run: str, server_round: int, received: Sequence[np.ndarray]) -> str:
    """Identify a round's question: run, round and the exact bytes of the global adapter."""
    digest = hashlib.sha256(f"{run}\0{server_round}\0".encode())
    for array in received:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Question:
    """What a fit request asks: of which run, which round, and its reply key."""

    run: str
    server_round: int
    key: str


def question(
    fit_config: Mapping[str, Any], received: Sequence[np.ndarray], *, run_id: object
) -> Question:
    """The question a fit request asks. The client app and the SecAgg+ guard both call
    this, so they agree on which reply (and which records) a session is about.

    The server's run key outlives a server restart; Flower's run id does not.
    """
    run = str(fit_config.get(protocol.RUN_KEY) or run_id)
    server_round = int(fit_config.get(protocol.SERVER_ROUND, 0))  # type: ignore[arg-type]
    return Question(run, server_round, reply_key(run, server_round, received))


Participants = frozenset[int]


@dataclass(frozen=True)
class CachedReply:
    """A reply as it left the client, the ledger entries its round added, and, under
    SecAgg+, the nodes it was summed with (``participants``) and unmasked with."""

    key: str
    delta: list[np.ndarray]
    num_examples: int
    metrics: dict[str, Any]
    entries: list[Entry]
    participants: Participants | None = None  # None: sent in the clear
    unmasked: Participants | None = None  # None: no unmasking answered yet


def _ids(value: Any) -> Participants | None:
    return None if value is None else frozenset(int(v) for v in value)


class ReplyCache:
    """The last reply of one client, in one file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, key: str) -> CachedReply | None:
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                meta = json.loads(bytes(data[META]).decode())
                if meta.get("key") != key:
                    return None
                delta = [data[f"delta_{i}"] for i in range(int(meta["arrays"]))]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # unreadable: train afresh (the ledger still counts what ran)
        return CachedReply(
            key=key,
            delta=delta,
            num_examples=int(meta["num_examples"]),
            metrics=dict(meta["metrics"]),
            entries=[(float(s), float(q), int(n)) for s, q, n in meta["entries"]],
            participants=_ids(meta.get("participants")),
            unmasked=_ids(meta.get("unmasked")),
        )

    def put(self, reply: CachedReply) -> None:
        meta = {
            "key": reply.key,
            "arrays": len(reply.delta),
            "num_examples": int(reply.num_examples),
            "metrics": reply.metrics,
            "entries": [list(e) for e in reply.entries],
            "participants": None if reply.participants is None else sorted(reply.participants),
            "unmasked": None if reply.unmasked is None else sorted(reply.unmasked),
        }
        arrays = {f"delta_{i}": np.asarray(a) for i, a in enumerate(reply.delta)}
        arrays[META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomic(self.path, buffer.getvalue(), mode=0o600)

    def record_unmasking(self, key: str, active: Participants) -> None:
        """Before this node helps unmask a sum containing reply ``key``: the sum must
        cover the same nodes as any earlier unmasking of that reply (ReplayRefused).

        Call inside the ledger's lock. A reply no longer cached needs no record: the
        question it answered would be trained afresh, never replayed.
        """
        cached = self.get(key)
        if cached is None:
            return
        if cached.unmasked is not None and cached.unmasked != active:
            raise ReplayRefused(
                "secure aggregation: this update was already unmasked in a sum of nodes "
                f"{sorted(cached.unmasked)}; unmasking it again among {sorted(active)} would "
                "let the coordinator subtract the two sums"
            )
        if cached.unmasked is None:
            self.put(replace(cached, unmasked=active))


def _check_replay(cached: CachedReply, participants: Participants | None) -> None:
    if cached.participants == participants:
        return
    if cached.participants is None:
        why = "it was sent in the clear; inside a secure sum it would expose the other nodes"
    elif participants is None:
        why = "it was only ever sent inside a secure sum"
    else:
        why = (
            f"it was summed with nodes {sorted(cached.participants)}, and summing it with "
            f"{sorted(participants)} would let the coordinator subtract the two sums"
        )
    raise ReplayRefused(f"this round was already answered; answering it again refused: {why}")


def fit_or_replay(
    cache: ReplyCache | None,
    ledger: PrivacyLedger,
    *,
    asked: Question,
    train: Callable[[], Any],
    privacy_metrics: Callable[[PrivacyLedger], dict[str, Any]],
    participants: Participants | None = None,
) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """(delta, num_examples, metrics) of this round: trained, or the reply already sent.

    ``train`` runs the round (recording its entries in ``ledger`` tagged with run, round
    and ``asked.key``) and returns an object with ``delta``, ``num_examples`` and
    ``metrics``. ``participants``: the SecAgg+ session's nodes (None: a plain round).
    Call this inside the ledger's session: the cache is written before the ledger is
    saved. Raises ReplayRefused when an answer may not be given again.
    """
    if cache is None:
        reply = train()
        return reply.delta, reply.num_examples, reply.metrics
    cached = cache.get(asked.key)
    if cached is not None:
        _check_replay(cached, participants)
        if not ledger.key_entries(asked.key):
            # Cached, but the ledger never saved its charge (killed in between, or an
            # older ledger): charged now, once, before it leaves again.
            for entry in cached.entries:
                ledger.record(entry, run=asked.run, server_round=asked.server_round, key=asked.key)
        metrics = {**cached.metrics, **privacy_metrics(ledger), "replayed": True}
        return cached.delta, cached.num_examples, metrics
    reply = train()
    entries = ledger.key_entries(asked.key)
    cache.put(
        CachedReply(
            asked.key,
            list(reply.delta),
            reply.num_examples,
            dict(reply.metrics),
            entries,
            participants=participants,
        )
    )
    return reply.delta, reply.num_examples, reply.metrics
