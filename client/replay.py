"""A client's last reply, kept so that a round replayed after a server restart costs no ε.

When a server is killed during round r and resumed from its checkpoint of round r-1, it
asks the clients for round r again, with the very same global adapter. A client that had
already trained round r may already have released its update, so its ledger must keep
that round; training again would release a second, different noisy update and spend ε
twice. Instead the client answers with the reply it computed the first time: the same
release again is no new information, so no new ε.

The reply is keyed by (run, round, SHA-256 of the received adapter): a different global
adapter is a different question and is trained afresh. The cache is written *before*
the ledger (both inside the ledger's lock) together with the round's ledger entries, so
whichever write a kill interrupts, a replay records the round in the ledger exactly once.
Only the latest reply is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_bytes_atomic
from common.privacy.ledger import Entry, PrivacyLedger

META = "meta"  # the npz member holding the JSON metadata


def reply_key(run: str, server_round: int, received: Sequence[np.ndarray]) -> str:
    """Identify a round's question: run, round and the exact bytes of the global adapter."""
    digest = hashlib.sha256(f"{run}\0{server_round}\0".encode())
    for array in received:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class CachedReply:
    """A reply as it left the client, and the ledger entries its round added."""

    key: str
    delta: list[np.ndarray]
    num_examples: int
    metrics: dict[str, Any]
    entries: list[Entry]


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
        )

    def put(self, reply: CachedReply) -> None:
        meta = {
            "key": reply.key,
            "arrays": len(reply.delta),
            "num_examples": int(reply.num_examples),
            "metrics": reply.metrics,
            "entries": [list(e) for e in reply.entries],
        }
        arrays = {f"delta_{i}": np.asarray(a) for i, a in enumerate(reply.delta)}
        arrays[META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomic(self.path, buffer.getvalue(), mode=0o600)


def fit_or_replay(
    cache: ReplyCache | None,
    ledger: PrivacyLedger,
    *,
    run: str,
    server_round: int,
    received: Sequence[np.ndarray],
    train: Callable[[], Any],
    privacy_metrics: Callable[[PrivacyLedger], dict[str, Any]],
) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """(delta, num_examples, metrics) of this round: trained, or the reply already sent.

    ``train`` runs the round (recording its entries in ``ledger`` tagged with run and
    round) and returns an object with ``delta``, ``num_examples`` and ``metrics``. Call
    this inside the ledger's session: the cache is written before the ledger is saved.
    """
    if cache is None:
        reply = train()
        return reply.delta, reply.num_examples, reply.metrics
    key = reply_key(run, server_round, received)
    cached = cache.get(key)
    if cached is not None:
        if not ledger.round_entries(run, server_round):
            # Killed after caching, before the ledger was saved: the reply never left
            # unrecorded, so its round is recorded now, once.
            for entry in cached.entries:
                ledger.record(entry, run=run, server_round=server_round)
        metrics = {**cached.metrics, **privacy_metrics(ledger), "replayed": True}
        return cached.delta, cached.num_examples, metrics
    reply = train()
    entries = ledger.round_entries(run, server_round)
    cache.put(CachedReply(key, list(reply.delta), reply.num_examples, dict(reply.metrics), entries))
    return reply.delta, reply.num_examples, reply.metrics
