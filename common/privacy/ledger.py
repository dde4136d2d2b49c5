"""A client's privacy ledger: every DP-SGD step it ever ran, composed into one (ε, δ).

Each round appends what actually ran — (noise multiplier σ, sampling rate q, steps) —
taken from Opacus's own accountant, and ε is always recomputed from the whole history
with Opacus's RDP accountant. Nothing is reset between rounds: composing over every
round is the point (resetting per round is the classic bug this ledger exists to avoid).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

Entry = tuple[float, float, int]


def compute_epsilon(history: Sequence[Entry], delta: float) -> float:
    """ε of the composition of all entries at ``delta`` (RDP accountant, Opacus).

    The same arithmetic as Opacus's ``RDPAccountant.get_epsilon`` (RDP of each entry =
    steps × the one-step RDP, summed, then converted at ``delta``), with the one-step RDP
    of each (σ, q) computed once per process: Opacus's fractional orders cost about a
    second per (σ, q), and a client asks for ε several times a round.
    """
    from opacus.accountants.analysis.rdp import get_privacy_spent

    if not history:
        return 0.0
    if any(sigma <= 0 for sigma, _, steps in history if steps > 0):
        return math.inf
    ran = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    if not ran:
        return 0.0
    rdp = sum([np.asarray(_one_step_rdp(s, q)) * n for s, q, n in ran])
    eps, _ = get_privacy_spent(orders=_orders(), rdp=rdp, delta=delta)
    return float(eps)


def _orders() -> list[float]:
    from opacus.accountants import RDPAccountant

    return list(RDPAccountant.DEFAULT_ALPHAS)


@lru_cache(maxsize=4096)
def _one_step_rdp(sigma: float, q: float) -> tuple[float, ...]:
    from opacus.accountants.analysis.rdp import compute_rdp

    return tuple(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=_orders()))


@dataclass
class PrivacyLedger:
    """The (ε, δ) one client has spent, and the budget it refuses to exceed."""

    delta: float
    budget: float | None = None
    history: list[Entry] = field(default_factory=list)
    stopped_for_budget: bool = False
    runs: list[str] = field(default_factory=list)  # the run each history entry belongs to
    # The server round of each entry (0: unknown).
    rounds: list[int] = field(default_factory=list)
    # The reply each entry paid for (client/replay.py's key of the question it answered;
    # "": unknown). A question asked again is answered from the reply cache only if its
    # key is here, and a cached reply whose key is missing is charged before it is sent.
    keys: list[str] = field(default_factory=list)

    @property
    def epsilon(self) -> float:
        return compute_epsilon(self.history, self.delta)

    @property
    def total_steps(self) -> int:
        return sum(int(n) for _, _, n in self.history)

    def epsilon_if(self, entries: Iterable[Entry]) -> float:
        """ε after also running ``entries`` (used to refuse before spending)."""
        return compute_epsilon([*self.history, *entries], self.delta)

    def allows(self, entry: Entry) -> bool:
        """Whether running ``entry`` keeps ε within the budget."""
        return self.budget is None or self.epsilon_if([entry]) <= self.budget

    def record(self, entry: Entry, *, run: str = "", server_round: int = 0, key: str = "") -> None:
        sigma, q, steps = entry
        self.runs = self._run_ids()
        self.rounds = self._round_ids()
        self.keys = self._keys()
        self.history.append((float(sigma), float(q), int(steps)))
        self.runs.append(run)
        self.rounds.append(int(server_round))
        self.keys.append(key)

    def key_entries(self, key: str) -> list[Entry]:
        """The entries charged for the reply ``key`` (empty: that reply was never charged)."""
        if not key:
            return []
        return [e for e, k in zip(self.history, self._keys(), strict=True) if k == key]

    def run_history(self, run: str) -> list[Entry]:
        """The entries one run added (a node's ledger holds every run it joined)."""
        return [e for e, r in zip(self.history, self._run_ids(), strict=True) if r == run]

    def for_run(self, run: str) -> PrivacyLedger:
        """The part of this ledger one run added: what a node tells that run's server.

        A node's ledger spans every federation it ever joined; the server of one run
        learns only that run's entries (never other runs' keys or the lifetime ε).
        """
        ids = self._run_ids()
        rows = [i for i, r in enumerate(ids) if r == run]
        return PrivacyLedger(
            delta=self.delta,
            budget=None,
            history=[self.history[i] for i in rows],
            stopped_for_budget=self.stopped_for_budget,
            runs=[run] * len(rows),
            rounds=[self._round_ids()[i] for i in rows],
        )

    def _run_ids(self) -> list[str]:
        return self.runs + [""] * (len(self.history) - len(self.runs))

    def _round_ids(self) -> list[int]:
        return self.rounds + [0] * (len(self.history) - len(self.rounds))

    def _keys(self) -> list[str]:
        return self.keys + [""] * (len(self.history) - len(self.keys))

    # ---------------------------------------------------------------- storage

    def to_dict(self) -> dict[str, Any]:
        eps = self.epsilon
        return {
            "history": [list(e) for e in self.history],
            "epsilon": eps if math.isfinite(eps) else None,
            "delta": self.delta,
            "budget": self.budget,
            "steps": self.total_steps,
            "stopped_for_budget": self.stopped_for_budget,
            "runs": self._run_ids(),
            "rounds": self._round_ids(),
            "keys": self._keys(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        return cls(
            delta=float(data["delta"]),
            budget=None if data.get("budget") is None else float(data["budget"]),
            history=[(float(s), float(q), int(n)) for s, q, n in data.get("history", [])],
            stopped_for_budget=bool(data.get("stopped_for_budget", False)),
            runs=[str(r) for r in data.get("runs", [])],
            rounds=[int(n) for n in data.get("rounds", [])],
            keys=[str(k) for k in data.get("keys", [])],
        )

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        return cls.from_dict(json.loads(text))
