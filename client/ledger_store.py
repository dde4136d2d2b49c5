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
:func:`client_store` is the one answer to "where is this client's ledger": the client
and the SecAgg+ guard (client/secagg.py) both ask it, and lock the same file.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Protocol

from flwr.app import ConfigRecord, Context

from client.node_config import NODE_CONFIG_FILE_KEY, PARTITION_ID_KEY
from client.replay import ReplyCache
from common.atomic import write_text_atomic
from common.config import OUTPUT_DIR_KEY
from common.errors import PrivatuneError
from common.privacy.ledger import PrivacyLedger

STATE_KEY = "privatune"
CLIENT_LEDGERS_DIR = "client_ledgers"  # in a simulation's output folder, one file per client


class LedgerStore(Protocol):
    """Opens the client's ledger for one round and saves it when the round ends."""

    def session(self, fresh: PrivacyLedger) -> AbstractContextManager[PrivacyLedger]: ...

    def locked(self) -> AbstractContextManager[None]: ...

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

    def locked(self) -> AbstractContextManager[None]:
        return nullcontext()

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
    def locked(self) -> Iterator[None]:
        """Hold the ledger's lock: one round, or one unmasking record, at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextmanager
    def session(self, fresh: PrivacyLedger) -> Iterator[PrivacyLedger]:
        with self.locked():
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
        # The node's own budget and δ apply, whatever an earlier run recorded (ε is
        # recomputed from the history at this δ).
        stored.budget = fresh.budget
        stored.delta = fresh.delta
        stored.stopped_for_budget = False
        return stored

    def _write(self, ledger: PrivacyLedger) -> None:
        write_text_atomic(self.path, json.dumps(ledger.to_dict(), indent=2), mode=0o600)


def simulated_store(context: Context, ledger_dir: Path | None) -> LedgerStore:
    """A virtual client's ledger: a file under the run's output folder when one is known.

    ``privatune simulate`` names the folder; under ``flwr run`` an absolute output-dir in
    the run config does. Otherwise the ledger lives in the node's Flower Context, which
    does not survive the process (such a run cannot be resumed with its ledgers).
    """
    partition = context.node_config.get(PARTITION_ID_KEY)
    if ledger_dir is None:
        named = Path(str(context.run_config.get(OUTPUT_DIR_KEY, "") or ""))
        if named.is_absolute():
            ledger_dir = named / CLIENT_LEDGERS_DIR
    if partition is None or ledger_dir is None:
        return ContextLedgerStore(context)
    return FileLedgerStore(ledger_dir / f"{int(partition)}.json")


def client_store(context: Context, ledger_dir: Path | None) -> LedgerStore:
    """This client's ledger: the node's own file (its policy names it), else simulated."""
    policy_file = context.node_config.get(NODE_CONFIG_FILE_KEY)
    if policy_file:
        from client.policy import load_policy

        return FileLedgerStore(load_policy(str(policy_file)).ledger_path)
    return simulated_store(context, ledger_dir)
