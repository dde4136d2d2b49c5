"""Where a client's privacy ledger lives between rounds (and, on a node, between runs).

On a real node the ledger is a JSON file in the node's state folder, so ε composes over
every round of every run the node ever joins; in ``privatune simulate`` each virtual
client's ledger is a file under the run's output folder (``client_ledgers/``), so a
resumed run continues every client's composition. The file is locked while
read-modify-written and replaced atomically, so a crash never leaves a torn ledger.
Only when no folder is known (``flwr run`` with a relative output-dir) does the ledger
live in the virtual node's Flower Context, which does not survive the process.

A file store also keeps the client's last reply next to the ledger (client/replay.py),
so a round replayed after a server restart is answered again, not trained again.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from flwr.app import ConfigRecord, Context

from client.replay import ReplyCache
from common.atomic import write_text_atomic
from common.errors import PrivatuneError
from common.privacy.ledger import PrivacyLedger

STATE_KEY = "privatune"


class LedgerStore(Protocol):
    """Opens the client's ledger for one round and saves it when the round ends."""

    def session(self, fresh: PrivacyLedger) -> AbstractContextManager[PrivacyLedger]: ...

    @property
    def replies(self) -> ReplyCache | None:
        """Where the last reply is kept (None: nowhere that outlives the process)."""
        ...


class ContextLedgerStore:
    """The ledger in the node's persistent Flower Context (simulation)."""

    def __init__(self, context: Context) -> None:
        self.context = context

    @property
    def replies(self) -> ReplyCache | None:
        return None

    @contextmanager
    def session(self, fresh: PrivacyLedger) -> Iterator[PrivacyLedger]:
        record = self.context.state.config_records.get(STATE_KEY)
        ledger = (
            PrivacyLedger.from_json(str(record["ledger"]))
            if record is not None and "ledger" in record
            else fresh
        )
        yield ledger
        self.context.state.config_records[STATE_KEY] = ConfigRecord({"ledger": ledger.to_json()})


class FileLedgerStore:
    """The ledger in a file on the node, shared by every run on that node."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def replies(self) -> ReplyCache:
        return ReplyCache(self.path.with_suffix(".reply.npz"))

    @contextmanager
    def session(self, fresh: PrivacyLedger) -> Iterator[PrivacyLedger]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ledger = self._read(fresh)
            yield ledger
            self._write(ledger)

    def _read(self, fresh: PrivacyLedger) -> PrivacyLedger:
        if not self.path.exists():
            return fresh
        try:
            stored = PrivacyLedger.from_json(self.path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivatuneError(
                f"{self.path}: the privacy ledger is unreadable ({exc}); restore it from a "
                "backup — training without it would under-count the privacy spent"
            ) from exc
        # The node's own budget applies, whatever budget an earlier run recorded.
        stored.budget = fresh.budget
        stored.stopped_for_budget = False
        return stored

    def _write(self, ledger: PrivacyLedger) -> None:
        write_text_atomic(self.path, json.dumps(ledger.to_dict(), indent=2), mode=0o600)
