"""The server's view of every client's privacy ledger, written to privacy_ledger.json.

Clients stay authoritative: each reports its whole history each round, and the server
keeps the latest it received and recomputes ε from it with the same accountant, so the
file can be checked independently of anything the server claims.
"""

from __future__ import annotations

from typing import Any

from common.privacy.ledger import PrivacyLedger


class LedgerBook:
    """Latest ledger per client id."""

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.ledgers: dict[str, PrivacyLedger] = {}

    def update(self, histories: dict[str, Any]) -> None:
        for client_id, data in histories.items():
            self.ledgers[str(client_id)] = PrivacyLedger.from_dict(data)

    def epsilon_max(self) -> float | None:
        values = [ledger.epsilon for ledger in self.ledgers.values()]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "accountant": "rdp",
            "delta": self.delta,
            "clients": {
                cid: self.ledgers[cid].to_dict()
                for cid in sorted(self.ledgers, key=lambda c: (len(c), c))
            },
        }
