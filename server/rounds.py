"""What happens after every round on the server: the round's record, outputs, decision.

One place turns the strategy's record of a round into the line of ``metrics.jsonl``
(adding ε, traffic, secure-aggregation bounds), writes the checkpoint and ledger, prints
progress and decides whether the run goes on, retries the round, or stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from common.config import RunConfig
from common.errors import PrivatuneError
from common.outcome import stop_outcome
from common.privacy.ledger import Entry
from server.central_dp import central_epsilon
from server.ledgers import LedgerBook
from server.outputs import RunOutputs
from server.secagg import SecAggSettings, quantization_error_bound

log = logging.getLogger("privatune")


class Next(Enum):
    CONTINUE = "continue"
    RETRY = "retry"
    END = "end"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _federated_eval(record: dict[str, Any]) -> str:
    """The nodes' evaluation, when there was one (the server's own set may be absent)."""
    if record.get("fed_eval_accuracy") is None and record.get("fed_eval_loss") is None:
        return ""
    return (
        f" | fed. eval loss {_fmt(record.get('fed_eval_loss'), '.4f')} | fed. eval acc "
        f"{_fmt(record.get('fed_eval_accuracy'), '.3f')}"
    )


def progress_line(record: dict[str, Any], num_rounds: int) -> str:
    """One human line per round: what a researcher watches while a run goes."""
    rnd = record["round"]
    if rnd == 0:
        line = (
            f"round 0/{num_rounds} (untrained adapter) | eval loss "
            f"{_fmt(record.get('eval_loss'), '.4f')} | eval acc "
            f"{_fmt(record.get('eval_accuracy'), '.3f')}"
        )
        return line + _federated_eval(record)
    parts = [
        f"round {rnd}/{num_rounds}",
        f"{record.get('num_clients', 0)}/{record.get('num_sampled', 0)} clients"
        f" ({record.get('num_failures', 0)} failed, {record.get('num_refused', 0)} refused)",
        f"train loss {_fmt(record.get('train_loss'), '.4f')}",
        f"eval loss {_fmt(record.get('eval_loss'), '.4f')}",
        f"eval acc {_fmt(record.get('eval_accuracy'), '.3f')}",
    ]
    parts[-1] += _federated_eval(record)
    for key, label in (("eval_rouge_l", "ROUGE-L"), ("fed_eval_rouge_l", "fed. ROUGE-L")):
        if record.get(key) is not None:
            parts.append(f"{label} {record[key]:.3f}")
    if record.get("epsilon_max") is not None:
        parts.append(f"run ε max {record['epsilon_max']:.3f}")
    if record.get("central_epsilon") is not None:
        parts.append(f"user-level ε {record['central_epsilon']:.3f}")
    if record.get("secagg"):
        parts.append("SecAgg+")
    parts.append(f"{record.get('round_seconds', 0.0):.1f} s")
    if record.get("failed"):
        parts.append(f"FAILED: {record.get('error', '')}")
    if record.get("stopped"):
        parts.append(f"STOPPED: {record['stopped']}")
    return " | ".join(parts)


@dataclass
class RoundBook:
    """Bookkeeping across rounds: outputs, ledgers, retries, the run's history."""

    config: RunConfig
    outputs: RunOutputs
    save_adapter: Callable[[list[np.ndarray], Path], None]
    secagg: SecAggSettings | None = None
    ledgers: LedgerBook = field(init=False)
    history: list[dict[str, Any]] = field(default_factory=list)
    latest: list[np.ndarray] = field(default_factory=list)
    central_entries: list[Entry] = field(default_factory=list)  # central DP's releases
    retries: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ledgers = LedgerBook(self.config.privacy.delta)

    def close_round(
        self,
        record: dict[str, Any],
        seconds: float,
        arrays: list[np.ndarray],
        traffic: tuple[int, int],
    ) -> Next:
        """Complete, write and judge one round's record."""
        rnd = record["round"]
        self.latest = arrays
        weights = record.pop("weights", [])
        record["secagg"] = self.secagg is not None
        record["uplink_bytes"], record["downlink_bytes"] = traffic
        self._privacy(record)
        if rnd > 0:
            record["round_seconds"] = round(seconds, 3)
            self._secure_aggregation(record, weights)
        decision = self._decide(record)
        if rnd > 0 and decision is Next.CONTINUE:
            self.outputs.save_adapter_dir(
                self.outputs.checkpoint_dir(rnd), lambda folder: self.save_adapter(arrays, folder)
            )
        self.outputs.append_metrics(record)
        self.history.append(record)
        log.info(progress_line(record, self.config.federation.rounds))
        return decision

    def _privacy(self, record: dict[str, Any]) -> None:
        histories = record.pop("privacy_histories", None)
        if histories:
            self.ledgers.update(histories)
            self.outputs.write_ledger(self.ledgers.to_dict())
        if record["round"] == 0:
            return
        if self.config.privacy.enabled and (eps := self.ledgers.epsilon_max()) is not None:
            record["epsilon_max"] = eps  # run ε: the largest over this run's ledgers
        if self.config.central_dp.enabled:
            q = record.get("central_dp_sample_rate")
            if q is not None and not record.get("failed"):  # this round released
                self.central_entries.append((self.config.central_dp.noise_multiplier, q, 1))
            record["central_epsilon"] = central_epsilon(
                self.central_entries, self.config.privacy.delta
            )

    def _secure_aggregation(self, record: dict[str, Any], weights: list[float]) -> None:
        if self.secagg is None:
            return
        record.pop("update_bytes", None)  # the strategy only ever sees the unmasked sum
        if "num_clients" not in record:
            # Flower's SecAgg+ workflow returns without aggregating ("halted").
            record["failed"] = True
            record["num_clients"] = 0
            record["error"] = (
                "secure aggregation halted: fewer clients than the reconstruction threshold "
                "survived the round (see secure-aggregation.reconstruction-threshold)"
            )
            if record.get("refusals"):
                record["error"] += "; refused: " + "; ".join(record["refusals"])
        if weights:
            record["quantization_error_bound"] = quantization_error_bound(self.secagg, weights)
        record["secagg_clipping_range"] = self.secagg.clipping_range
        if record.get("secagg_clipped_values", 0) > 0:
            log.error(
                "round %s: %s delta values exceeded SecAgg+'s clipping range ±%g and were "
                "clipped; raise secure-aggregation.clipping-range",
                record["round"],
                record["secagg_clipped_values"],
                self.secagg.clipping_range,
            )

    def _decide(self, record: dict[str, Any]) -> Next:
        rnd = record["round"]
        if rnd == 0:
            return Next.CONTINUE
        sampled, refused = record.get("num_sampled", 0), record.get("num_refused", -1)
        if sampled > 0 and sampled == refused:
            reasons = "; ".join(record.get("refusals", [])) or "no reason given"
            record["stopped"] = f"every sampled client refused to train ({reasons})"
            record["stop_outcome"] = stop_outcome(record.get("refusals", [])).value
            record["failed"] = False
            record.pop("error", None)
            log.warning("round %s: %s; ending the run early", rnd, record["stopped"])
            return Next.END
        if record.get("failed") and self.secagg is not None:
            return self._secagg_failure(record)
        return Next.CONTINUE

    def _secagg_failure(self, record: dict[str, Any]) -> Next:
        sa = self.config.secure_aggregation
        rnd = record["round"]
        used = self.retries.get(rnd, 0)
        record["attempt"] = used + 1
        if sa.on_failure == "retry" and used < sa.max_retries:
            self.retries[rnd] = used + 1
            log.error("round %s failed (%s); retrying", rnd, record.get("error"))
            return Next.RETRY
        self.outputs.append_metrics(record)
        self.history.append(record)
        log.error(progress_line(record, self.config.federation.rounds))
        raise RoundFailed(f"round {rnd}: {record.get('error')}")


class RoundFailed(PrivatuneError):
    """A round failed in a way the config says must stop the run (non-zero exit)."""
